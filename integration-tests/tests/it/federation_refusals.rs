//! Federation calls that must be refused, made with a raw client of the
//! federation API (as a misbehaving or impersonating peer would call), around a
//! group hosted on a.example that b.example follows (alice and bob are its
//! members; c.example has none):
//!
//! - c.example, with a valid certificate of its own, acts for another domain:
//!   delivering the group's events as its hub, relaying a submission of bob's
//!   or alice's device: PERMISSION_DENIED.
//! - A caller without a client certificate, or with one of another CA: refused
//!   at the TLS handshake (or UNAUTHENTICATED).
//! - c.example announces departures of devices of other domains, or of its
//!   own that are in no group there: PERMISSION_DENIED, NOT_FOUND.
//! - c.example delivers events for itself, but forged ones (not MLS, or adding
//!   a device of another domain): INVALID_ARGUMENT, before the follower looks
//!   at whose group it is (`rogue_hub` makes the same attempts with well-formed
//!   MLS, for the refusals that come after).
//!
//! After all of them nothing is stored: neither copy of the group moved, bob's
//! and alice's devices get nothing new, and the group still works.

use conclave_client::GroupId;
use conclave_proto::federation::v1 as proto;
use conclave_test_support::{DatabaseChoice, IssuedCertificate, RawFailure, TestNetwork, TestPki};
use proto::submit_to_hub_request::Submission;
use tonic::Code;

use crate::harness::{
    THREE_DOMAINS, User, assert_refused, assert_refused_at_tls, call, deliver, group_of,
};

on_both_databases!(calls_for_other_domains_are_refused_and_store_nothing);

/// A device id no device of b.example has.
const UNKNOWN_BOB_DEVICE: &str = "bob@b.example/ffffffffffffffff";

async fn calls_for_other_domains_are_refused_and_store_nothing(database: DatabaseChoice) {
    let network = TestNetwork::start(&THREE_DOMAINS, database).await;
    let [alice, bob] = User::register_all(&network, ["alice@a.example", "bob@b.example"]).await;
    let group_id = group_of(&alice, "refusals", &[&bob]).await;
    alice.send(&group_id, "before the attempts").await;
    bob.next_messages(&group_id, 1).await;
    network.outbox_drained("a.example", "b.example").await;
    // Both devices have read everything there is (their own echoes included).
    alice.receive().await;
    bob.receive().await;
    let hub_before = network.stored_group("a.example", group_id.as_bytes()).await;
    let copy_before = network.stored_group("b.example", group_id.as_bytes()).await;
    let copy = copy_before.clone().expect("b.example follows the group");
    assert_eq!(copy.hub_domain.as_deref(), Some("a.example"));

    let c = network.pki().issue("c.example");
    // The control: c's certificate and the raw client work, for what c may do.
    let claim = proto::ClaimKeyPackagesRequest {
        requester: "carol@c.example/0000000000000001".to_owned(),
        user_id: bob.user_id().to_string(),
        cipher_suite: 0,
    };
    let claimed = call(&network, "b.example", Some(&c), |mut client| async move {
        client.claim_key_packages(claim).await
    })
    .await
    .expect("c claims for a device of its own");
    assert_eq!(claimed.key_packages.len(), 1);

    // The next event of the group's log, forged.
    let next_event = || proto::FederatedEvent {
        seq: copy.last_seq + 1,
        kind: proto::EventKind::Application as i32,
        epoch: copy.epoch,
        sender: alice.identity().to_string(),
        message: b"forged".to_vec(),
        created_at_ms: 0,
        ..Default::default()
    };
    let delivery =
        |hub: &str, group_id: &GroupId, event: proto::FederatedEvent| proto::DeliverEventsRequest {
            hub_domain: hub.to_owned(),
            group_id: group_id.as_bytes().to_vec(),
            events: vec![event],
            member_count: 2,
        };
    let submission = |sender: String| proto::SubmitToHubRequest {
        sender,
        idempotency_key: b"forged".to_vec(),
        group_id: group_id.as_bytes().to_vec(),
        submission: Some(Submission::ApplicationMessage(b"forged".to_vec())),
    };

    // (i, v) c acts for the hub, for a follower, for a device of the hub's
    // domain and for a device of a third domain.
    let not_for = |domain: &str| format!(r#"valid for ["c.example"], not for {domain}"#);
    for (case, to, request, domain) in [
        (
            "c delivers the group's events to b as a.example",
            "b.example",
            delivery("a.example", &group_id, next_event()),
            "a.example",
        ),
        (
            "c delivers events to a as b.example",
            "a.example",
            delivery("b.example", &group_id, next_event()),
            "b.example",
        ),
    ] {
        let result = deliver(&network, to, Some(&c), request).await;
        assert_refused(case, result, Code::PermissionDenied, &not_for(domain));
    }
    for (case, sender, domain) in [
        (
            "c relays a submission of bob's device to the hub",
            bob.identity().to_string(),
            "b.example",
        ),
        (
            "c relays a submission of alice's device to the hub",
            alice.identity().to_string(),
            "a.example",
        ),
    ] {
        let result = submit(&network, "a.example", Some(&c), submission(sender)).await;
        assert_refused(case, result, Code::PermissionDenied, &not_for(domain));
    }

    // (ii, iii) No client certificate, or one the network's CA did not issue
    // (for the hub's own domain): the connection is refused.
    let untrusted = TestPki::new().issue("a.example");
    for (case, identity) in [
        ("no client certificate", None),
        ("a certificate of another CA", Some(&untrusted)),
    ] {
        let request = delivery("a.example", &group_id, next_event());
        let result = deliver(&network, "b.example", identity, request).await;
        assert_refused_at_tls(&format!("{case}, delivering"), result);
        let request = submission(bob.identity().to_string());
        let result = submit(&network, "a.example", identity, request).await;
        assert_refused_at_tls(&format!("{case}, submitting"), result);
    }

    // (iv) c delivers as itself: forged events, of the group or of one b does
    // not know, are refused for what they are before anything else.
    let unknown_group = GroupId::from_bytes(b"a group b.example does not know".to_vec());
    let first_seq = |event: proto::FederatedEvent| proto::FederatedEvent { seq: 1, ..event };
    let commit = |added: &str| proto::FederatedEvent {
        kind: proto::EventKind::Commit as i32,
        added: vec![added.to_owned()],
        ..first_seq(next_event())
    };
    for (case, group, event, fragment) in [
        (
            "c delivers forged events of a.example's group as its hub",
            &group_id,
            next_event(),
            "message: it is not an MLSMessage",
        ),
        (
            "a forged message first",
            &unknown_group,
            first_seq(next_event()),
            "message: it is not an MLSMessage",
        ),
        (
            "a forged commit adding a device of b.example first",
            &unknown_group,
            commit(UNKNOWN_BOB_DEVICE),
            "message: it is not an MLSMessage",
        ),
        (
            "a commit adding a device of c.example first",
            &unknown_group,
            commit("carol@c.example/0000000000000001"),
            "is not a device of b.example",
        ),
    ] {
        let request = delivery("c.example", group, event);
        let result = deliver(&network, "b.example", Some(&c), request).await;
        assert_refused(case, result, Code::InvalidArgument, fragment);
    }

    // (vi) Departures: c announces them for b's device, as b, for the hub's
    // own device, and for a device of its own that is in no group of the hub.
    let departure = |follower: &str, departed: String| proto::AnnounceDepartureRequest {
        follower_domain: follower.to_owned(),
        group_id: group_id.as_bytes().to_vec(),
        credential_identity: departed,
        reason: "forged".to_owned(),
    };
    for (case, request, code, fragment) in [
        (
            "c announces the departure of bob's device",
            departure("c.example", bob.identity().to_string()),
            Code::PermissionDenied,
            format!("{} is not a device of c.example", bob.identity()),
        ),
        (
            "c announces bob's departure as b.example",
            departure("b.example", bob.identity().to_string()),
            Code::PermissionDenied,
            not_for("b.example"),
        ),
        (
            "c announces the departure of alice's device",
            departure("c.example", alice.identity().to_string()),
            Code::PermissionDenied,
            "is a device of this homeserver's own domain".to_owned(),
        ),
        (
            "c announces the departure of a device of its own that is no member",
            departure("c.example", "carol@c.example/0000000000000001".to_owned()),
            Code::NotFound,
            "is not hosted here or the device is no member of it".to_owned(),
        ),
    ] {
        let result = call(&network, "a.example", Some(&c), |mut client| async move {
            client.announce_departure(request).await
        })
        .await;
        assert_refused(case, result, code, &fragment);
    }

    // Nothing was stored, and nothing reaches the members.
    assert_eq!(
        network.stored_group("b.example", group_id.as_bytes()).await,
        copy_before
    );
    assert_eq!(
        network.stored_group("a.example", group_id.as_bytes()).await,
        hub_before
    );
    assert_eq!(
        network
            .stored_group("b.example", unknown_group.as_bytes())
            .await,
        None
    );
    assert_eq!(bob.receive().await.events, 0);
    assert_eq!(alice.receive().await.events, 0);
    assert_eq!(bob.client.groups().expect("bob's groups").len(), 1);
    // The group goes on at the position the forgeries tried to take.
    let sent = alice.send(&group_id, "after the attempts").await;
    assert_eq!(sent.seq, copy.last_seq + 1);
    let received = bob.next_messages(&group_id, 1).await;
    assert_eq!(received[0].seq, sent.seq);
    assert_eq!(received[0].body.text(), Some("after the attempts"));
}

async fn submit(
    network: &TestNetwork,
    to: &str,
    identity: Option<&IssuedCertificate>,
    request: proto::SubmitToHubRequest,
) -> Result<proto::SubmitToHubResponse, RawFailure> {
    call(network, to, identity, |mut client| async move {
        client.submit_to_hub(request).await
    })
    .await
}
