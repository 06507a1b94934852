//! GroupAdminService and RegistrationTokenAdminService through the real
//! server's client port, as an administrator (granted with
//! `conclave-homeserver admin grant`) calls them: groups listed and
//! inspected after real commits and messages, tokens made, listed and
//! revoked, and each refusal's status.

use crate::admin_cli::{admin_command, succeeded};
use crate::groups_harness::Client;
use crate::harness::{assert_status, authorized, channel};
use conclave_proto::admin::v1 as admin;
use conclave_proto::admin::v1::admin_session_service_client::AdminSessionServiceClient;
use conclave_proto::admin::v1::group_admin_service_client::GroupAdminServiceClient;
use conclave_proto::admin::v1::registration_token_admin_service_client::RegistrationTokenAdminServiceClient;
use conclave_test_support::{DatabaseChoice, PASSWORD, TestHomeserver, TestOptions};
use tonic::Code;
use tonic::transport::Channel;

on_both_databases!(groups_and_tokens_through_the_admin_api);

/// The server, a channel to its client port, and an admin session of
/// alice's.
async fn start_as_admin(database: DatabaseChoice) -> (TestHomeserver, Channel, Client, String) {
    let options = TestOptions {
        domain: "a.example".to_owned(),
        ..TestOptions::on(database)
    };
    let server = TestHomeserver::start_with(options).await;
    let channel = channel(&server).await;
    let alice = Client::register(&channel, "alice").await;
    let url = &server.config().database.url;
    succeeded(&admin_command("a.example", url, &["grant", "alice"]).await);
    let session = AdminSessionServiceClient::new(channel.clone())
        .login(admin::AdminLoginRequest {
            username: "alice".to_owned(),
            password: PASSWORD.to_owned(),
        })
        .await
        .expect("alice logs in")
        .into_inner();
    (server, channel, alice, session.token)
}

fn list(
    token: &str,
    query: &str,
    page_size: u32,
    page_token: &str,
) -> tonic::Request<admin::ListGroupsRequest> {
    authorized(
        token,
        admin::ListGroupsRequest {
            query: query.to_owned(),
            page_size,
            page_token: page_token.to_owned(),
        },
    )
}

async fn groups_and_tokens_through_the_admin_api(database: DatabaseChoice) {
    let (_server, channel, mut alice, token) = start_as_admin(database).await;
    let mut bob = Client::register(&channel, "bob").await;
    let mut carol = Client::register(&channel, "carol").await;
    let mut groups = GroupAdminServiceClient::new(channel.clone());
    let mut tokens = RegistrationTokenAdminServiceClient::new(channel.clone());

    // Two groups: alice's with bob and carol (a commit and two messages),
    // then carol's own, the most recently active.
    let group_id = alice.create_group().await;
    alice.invite(&["bob@a.example", "carol@a.example"]).await;
    bob.sync().await;
    carol.sync().await;
    alice.send("hello").await;
    bob.send("hi").await;
    alice.sync().await;
    bob.sync().await;
    let carols = {
        let mut carol_alone = Client::login(&channel, "carol").await;
        carol_alone.create_group().await;
        carol_alone.send("note to self").await;
        carol_alone.group_id()
    };

    let first = groups
        .list_groups(list(&token, "", 1, ""))
        .await
        .expect("a page")
        .into_inner();
    assert_eq!(first.groups.len(), 1);
    assert_eq!(first.groups[0].group_id, carols);
    let second = groups
        .list_groups(list(&token, "", 1, &first.next_page_token))
        .await
        .expect("the next page")
        .into_inner();
    assert_eq!(second.groups.len(), 1);
    let summary = &second.groups[0];
    assert_eq!(summary.group_id, group_id);
    assert_eq!(
        (summary.epoch, summary.member_devices, summary.last_seq),
        (1, 3, 3)
    );
    assert_eq!(summary.hub_domain, "a.example");
    assert!(summary.hosted_here);
    assert!(summary.last_activity_at.is_some());
    assert!(
        second.next_page_token.is_empty(),
        "the last page: {second:?}"
    );
    let bobs = groups
        .list_groups(list(&token, "bob@a.example", 0, ""))
        .await
        .expect("bob's groups")
        .into_inner();
    assert_eq!(
        bobs.groups
            .iter()
            .map(|group| &group.group_id)
            .collect::<Vec<_>>(),
        [&group_id]
    );
    assert_status(
        groups.list_groups(list(&token, "not hex", 0, "")).await,
        Code::InvalidArgument,
        "is neither hex digits of a group id nor a user id",
    );
    assert_status(
        groups.list_groups(list(&token, "", 201, "")).await,
        Code::InvalidArgument,
        "page_size 201",
    );
    assert_status(
        groups.list_groups(list(&token, "", 0, "!!")).await,
        Code::InvalidArgument,
        "page_token",
    );
    assert_status(
        groups
            .list_groups(admin::ListGroupsRequest::default())
            .await,
        Code::Unauthenticated,
        "missing admin session token",
    );

    let inspection = groups
        .inspect_group(authorized(
            &token,
            admin::InspectGroupRequest {
                group_id: group_id.clone(),
            },
        ))
        .await
        .expect("an inspection")
        .into_inner();
    assert_eq!(inspection.group.as_ref().map(|group| group.epoch), Some(1));
    assert_eq!(
        inspection.members_per_domain,
        [admin::DomainMembers {
            domain: "a.example".to_owned(),
            devices: 3
        }]
    );
    assert_eq!(inspection.members.len(), 3);
    for member in &inspection.members {
        assert!(member.local && member.leaf_index.is_some(), "{member:?}");
        assert!(member.last_seen_at.is_some(), "{member:?}");
        assert_eq!(member.behind, 3 - member.acknowledged_seq, "{member:?}");
    }
    let carol_member = inspection
        .members
        .iter()
        .find(|member| member.credential_identity == carol.identity())
        .expect("carol's device");
    // Carol read the commit that added her, not the two messages.
    assert_eq!((carol_member.acknowledged_seq, carol_member.behind), (1, 2));
    assert_eq!(
        (inspection.log_length, inspection.first_retained_seq),
        (3, 1)
    );
    assert_eq!(inspection.cipher_suite, 1);
    assert!(inspection.followers.is_empty());
    assert!(inspection.last_commit_at.is_some() && inspection.created_at.is_some());
    for (group_id, code, message) in [
        (vec![], Code::InvalidArgument, "group_id is required"),
        (
            vec![0x00, 0xff],
            Code::NotFound,
            "there is no group 00ff here",
        ),
    ] {
        assert_status(
            groups
                .inspect_group(authorized(&token, admin::InspectGroupRequest { group_id }))
                .await,
            code,
            message,
        );
    }

    // Registration tokens.
    let created = tokens
        .create_registration_token(authorized(
            &token,
            admin::CreateRegistrationTokenRequest {
                uses: 2,
                valid_for_days: 30,
            },
        ))
        .await
        .expect("a token")
        .into_inner();
    assert!(!created.token.is_empty());
    let record = created.registration_token.expect("its record");
    assert_eq!((record.uses_allowed, record.uses_remaining), (2, 2));
    assert_eq!(record.state(), admin::RegistrationTokenState::Usable);
    assert_eq!(record.created_by, "alice@a.example");
    assert!(record.expires_at.is_some() && record.revoked_at.is_none());
    assert_status(
        tokens
            .create_registration_token(authorized(
                &token,
                admin::CreateRegistrationTokenRequest {
                    uses: 0,
                    valid_for_days: 0,
                },
            ))
            .await,
        Code::InvalidArgument,
        "uses must be 1 to 1000000, not 0",
    );
    let listed = tokens
        .list_registration_tokens(authorized(
            &token,
            admin::ListRegistrationTokensRequest::default(),
        ))
        .await
        .expect("the tokens")
        .into_inner();
    assert_eq!(listed.registration_tokens, std::slice::from_ref(&record));
    let revoke = |id| authorized(&token, admin::RevokeRegistrationTokenRequest { id });
    let revoked = tokens
        .revoke_registration_token(revoke(record.id))
        .await
        .expect("revoked")
        .into_inner();
    assert_eq!(revoked.state(), admin::RegistrationTokenState::Revoked);
    assert!(revoked.revoked_at.is_some());
    assert_status(
        tokens.revoke_registration_token(revoke(record.id)).await,
        Code::FailedPrecondition,
        "is already revoked",
    );
    assert_status(
        tokens.revoke_registration_token(revoke(424_242)).await,
        Code::NotFound,
        "there is no registration token 424242",
    );
    let usable = tokens
        .list_registration_tokens(authorized(
            &token,
            admin::ListRegistrationTokensRequest::default(),
        ))
        .await
        .expect("the usable tokens")
        .into_inner();
    assert!(usable.registration_tokens.is_empty(), "{usable:?}");
    let everything = tokens
        .list_registration_tokens(authorized(
            &token,
            admin::ListRegistrationTokensRequest {
                include_unusable: true,
                ..Default::default()
            },
        ))
        .await
        .expect("every token")
        .into_inner();
    assert_eq!(everything.registration_tokens, [revoked]);
}
