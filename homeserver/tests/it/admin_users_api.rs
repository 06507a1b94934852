//! `conclave.admin.v1.UserAdminService` through the real server's client
//! port, as the console calls it: an administrator's session lists, shows,
//! suspends, unsuspends and deactivates accounts and revokes a device, with
//! the refusals; a suspended device's open stream ends at once, its calls
//! are refused, and a suspended administrator's sessions end. A device that
//! logs out itself has its open stream end too.

use crate::admin_cli::{admin_command, succeeded};
use crate::harness::{Api, assert_status, authorized, channel, end_status};
use conclave_proto::admin::v1 as admin;
use conclave_proto::admin::v1::admin_session_service_client::AdminSessionServiceClient;
use conclave_proto::admin::v1::user_admin_service_client::UserAdminServiceClient;
use conclave_proto::client::v1 as proto;
use conclave_proto::client::v1::account_service_client::AccountServiceClient;
use conclave_proto::client::v1::delivery_service_client::DeliveryServiceClient;
use conclave_test_support::{DatabaseChoice, PASSWORD, TestHomeserver, TestOptions};
use std::time::Duration;
use tonic::Code;
use tonic::transport::Channel;

on_both_databases!(an_administrator_acts_on_accounts_and_devices_through_the_api);
on_both_databases!(a_logged_out_device_s_open_stream_ends_at_once);

/// Logs `username` (an administrator) in; returns the session's token.
async fn admin_login(channel: &Channel, username: &str) -> String {
    AdminSessionServiceClient::new(channel.clone())
        .login(admin::AdminLoginRequest {
            username: username.to_owned(),
            password: PASSWORD.to_owned(),
        })
        .await
        .unwrap_or_else(|status| panic!("{username} logs in: {status:?}"))
        .into_inner()
        .token
}

fn state(user: &admin::User) -> admin::UserState {
    admin::UserState::try_from(user.state).expect("a known state")
}

async fn an_administrator_acts_on_accounts_and_devices_through_the_api(database: DatabaseChoice) {
    let options = TestOptions {
        domain: "a.example".to_owned(),
        ..TestOptions::on(database)
    };
    let server: TestHomeserver = TestHomeserver::start_with(options).await;
    let channel = channel(&server).await;
    let api = Api::new(channel.clone());
    api.register("alice").await;
    let bob = api.register("bob").await;
    api.register("carol").await;
    let url = &server.config().database.url;
    succeeded(&admin_command("a.example", url, &["grant", "alice"]).await);
    succeeded(&admin_command("a.example", url, &["grant", "carol"]).await);
    let alice = admin_login(&channel, "alice").await;
    let carol = admin_login(&channel, "carol").await;
    let mut users = UserAdminServiceClient::new(channel.clone());

    assert_status(
        users.list_users(admin::ListUsersRequest::default()).await,
        Code::Unauthenticated,
        "",
    );
    let page = users
        .list_users(authorized(
            &alice,
            admin::ListUsersRequest {
                page_size: 2,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let names: Vec<_> = page
        .users
        .iter()
        .map(|user| user.user_id.as_str())
        .collect();
    assert_eq!(names, ["alice@a.example", "bob@a.example"]);
    assert!(page.users[0].admin && !page.users[1].admin);
    assert!(!page.next_page_token.is_empty());
    let shown = users
        .get_user(authorized(
            &alice,
            admin::GetUserRequest {
                user_id: "bob".to_owned(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let shown_user = shown.user.expect("the user");
    assert_eq!(state(&shown_user), admin::UserState::Active);
    assert_eq!(shown.devices.len(), 1);
    assert_eq!(shown.devices[0].credential_identity, bob.identity);
    assert!(shown.devices[0].last_seen_at.is_some());

    let mut delivery = DeliveryServiceClient::new(channel.clone());
    let mut stream = delivery
        .subscribe(authorized(&bob.token, proto::SubscribeRequest {}))
        .await
        .expect("subscribing")
        .into_inner();
    assert_status(
        users
            .suspend_user(authorized(
                &alice,
                admin::SuspendUserRequest {
                    user_id: "alice".to_owned(),
                    reason: String::new(),
                },
            ))
            .await,
        Code::FailedPrecondition,
        "you cannot suspend your own account",
    );
    let suspended = users
        .suspend_user(authorized(
            &alice,
            admin::SuspendUserRequest {
                user_id: "bob@a.example".to_owned(),
                reason: "spam".to_owned(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(state(&suspended), admin::UserState::Suspended);
    assert_eq!(suspended.state_reason, "spam");
    assert!(suspended.state_changed_at.is_some());
    // This replica closes the stream itself: at once, however the database is shared.
    let ended = end_status(
        &mut stream,
        Duration::from_secs(10),
        "the suspended device's stream ends",
    )
    .await;
    assert_eq!(ended.code(), Code::Unauthenticated, "{ended:?}");
    assert_eq!(ended.message(), "this account is suspended");
    assert_status(
        api.who_am_i(&bob.token).await,
        Code::Unauthenticated,
        "suspended",
    );
    assert_status(
        users
            .suspend_user(authorized(
                &alice,
                admin::SuspendUserRequest {
                    user_id: "bob".to_owned(),
                    reason: String::new(),
                },
            ))
            .await,
        Code::FailedPrecondition,
        "the account is suspended",
    );
    let active = users
        .unsuspend_user(authorized(
            &alice,
            admin::UnsuspendUserRequest {
                user_id: "bob".to_owned(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(state(&active), admin::UserState::Active);
    api.who_am_i(&bob.token)
        .await
        .expect("bob's device works again");

    // Suspending an administrator ends their admin sessions.
    users
        .suspend_user(authorized(
            &alice,
            admin::SuspendUserRequest {
                user_id: "carol".to_owned(),
                reason: String::new(),
            },
        ))
        .await
        .unwrap();
    assert_status(
        users
            .list_users(authorized(&carol, admin::ListUsersRequest::default()))
            .await,
        Code::Unauthenticated,
        "",
    );

    assert_status(
        users
            .revoke_device(authorized(
                &alice,
                admin::RevokeDeviceRequest {
                    user_id: "bob".to_owned(),
                    device_id: "00000000000000ff".to_owned(),
                },
            ))
            .await,
        Code::NotFound,
        "bob@a.example has no device 00000000000000ff",
    );
    users
        .revoke_device(authorized(
            &alice,
            admin::RevokeDeviceRequest {
                user_id: "bob".to_owned(),
                device_id: bob.device_id.clone(),
            },
        ))
        .await
        .unwrap();
    assert_status(
        api.who_am_i(&bob.token).await,
        Code::Unauthenticated,
        "revoked",
    );

    let deactivated = users
        .deactivate_user(authorized(
            &alice,
            admin::DeactivateUserRequest {
                user_id: "carol".to_owned(),
                reason: "left".to_owned(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deactivated.devices_removed, 1);
    assert_eq!(
        state(deactivated.user.as_ref().expect("the user")),
        admin::UserState::Deactivated
    );
    assert_status(
        users
            .get_user(authorized(
                &alice,
                admin::GetUserRequest {
                    user_id: "nobody".to_owned(),
                },
            ))
            .await,
        Code::NotFound,
        "there is no user nobody@a.example",
    );

    let low = users
        .list_low_key_package_stock(authorized(
            &alice,
            admin::ListLowKeyPackageStockRequest {
                threshold: 1,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(low.threshold, 1);
    let low_users: Vec<_> = low
        .devices
        .iter()
        .map(|device| device.user_id.as_str())
        .collect();
    assert_eq!(
        low_users,
        ["alice@a.example"],
        "bob's and carol's devices are gone"
    );
}

async fn a_logged_out_device_s_open_stream_ends_at_once(database: DatabaseChoice) {
    let server = TestHomeserver::start_with(TestOptions::on(database)).await;
    let channel = channel(&server).await;
    let bob = Api::new(channel.clone()).register("bob").await;
    let mut stream = DeliveryServiceClient::new(channel.clone())
        .subscribe(authorized(&bob.token, proto::SubscribeRequest {}))
        .await
        .expect("subscribing")
        .into_inner();
    AccountServiceClient::new(channel.clone())
        .logout(authorized(&bob.token, proto::LogoutRequest {}))
        .await
        .expect("logging out");
    // At once, not at the next resync: the logout itself ends the stream.
    let ended = end_status(
        &mut stream,
        Duration::from_secs(10),
        "the logged-out device's stream ends",
    )
    .await;
    assert_eq!(ended.code(), Code::Unauthenticated, "{ended:?}");
}
