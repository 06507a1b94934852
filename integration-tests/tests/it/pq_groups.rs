//! Post-quantum groups (cipher suite 0x004F,
//! MLS_128_MLKEM768X25519_AES128GCM_SHA256_Ed25519) across two domains, and
//! the refusals around them: alice@a.example creates a PQ group; b.example
//! first offers the classic suite only, and a claim for bob is refused naming
//! it; once b.example offers both, bob's device (which published classic
//! packages only) is refused by name until it publishes PQ ones; then bob is
//! invited, both talk, bob rejoins by external commit, and alice removes bob.
//! Finally a.example requires post-quantum groups and refuses a classic one.

use conclave_client::{CipherSuite, ClientError, GroupStatus};
use conclave_test_support::{DatabaseChoice, TestNetwork};
use tonic::Code;

use crate::harness::{User, assert_same_state};

on_both_databases!(a_post_quantum_group_across_two_domains);

const PQ: &str = "0x004f (MLS_128_MLKEM768X25519_AES128GCM_SHA256_Ed25519)";

#[track_caller]
fn assert_refused(case: &str, error: ClientError, code: Code, fragment: &str) {
    assert_eq!(error.rpc_code(), Some(code), "{case}: {error}");
    let message = error.to_string();
    assert!(
        message.contains(fragment),
        "{case}: {message:?} does not contain {fragment:?}"
    );
}

async fn a_post_quantum_group_across_two_domains(database: DatabaseChoice) {
    let mut network = TestNetwork::builder(&["a.example", "b.example"], database)
        .configure_domain("b.example", |config| {
            config.groups.cipher_suites = vec!["classic".to_owned()];
        })
        .start()
        .await;
    let [alice, bob] = User::register_all(&network, ["alice@a.example", "bob@b.example"]).await;
    let created = alice
        .client
        .create_group_in("quantum", CipherSuite::PostQuantum)
        .await
        .expect("a post-quantum group");
    assert_eq!(created.cipher_suite, Some(CipherSuite::PostQuantum));
    let group_id = created.group_id;
    let bob_id = bob.user_id().clone();

    // A peer that does not offer the suite refuses, and says so.
    let error = alice
        .client
        .invite(&group_id, std::slice::from_ref(&bob_id))
        .await
        .expect_err("b.example offers no PQ suite");
    assert_refused(
        "peer without the suite",
        error,
        Code::FailedPrecondition,
        &format!("b.example does not offer cipher suite {PQ}"),
    );
    let stocks = bob.client.key_package_stocks().await.expect("bob's stock");
    assert_eq!(
        stocks.iter().map(|(suite, _)| *suite).collect::<Vec<_>>(),
        [CipherSuite::Classic],
        "b.example lists the suites it offers"
    );

    // b.example now offers both; bob's device has classic packages only.
    network
        .restart_with("b.example", |config| {
            config.groups.cipher_suites = vec!["classic".to_owned(), "pq".to_owned()];
        })
        .await;
    let error = alice
        .client
        .invite(&group_id, std::slice::from_ref(&bob_id))
        .await
        .expect_err("bob's device has no PQ package");
    assert_refused(
        "device without the suite",
        error,
        Code::FailedPrecondition,
        &format!(
            "{} has no key package for cipher suite {PQ}",
            bob.identity()
        ),
    );
    // Nothing was handed out by the refused claim.
    let classic = bob.client.key_package_status().await.expect("bob's stock");
    assert!(classic.available > 0 && classic.has_last_resort);
    bob.client
        .replenish_key_packages()
        .await
        .expect("bob publishes for every suite offered");
    let stocks = bob.client.key_package_stocks().await.expect("bob's stock");
    let post_quantum = stocks
        .iter()
        .find(|(suite, _)| *suite == CipherSuite::PostQuantum)
        .map(|(_, stock)| *stock)
        .expect("a PQ stock");
    assert!(post_quantum.available > 0 && post_quantum.has_last_resort);

    // Invite, and talk both ways.
    let invited = alice.invite(&group_id, &[&bob]).await;
    assert_eq!(invited.devices, vec![bob.identity()]);
    bob.receive_until("the Welcome", |user| {
        user.status(&group_id) == Some(GroupStatus::Active)
    })
    .await;
    assert_eq!(
        bob.group(&group_id).cipher_suite,
        Some(CipherSuite::PostQuantum)
    );
    assert_same_state(&[&alice, &bob], &group_id, 2);
    let hub = network.stored_group("a.example", group_id.as_bytes()).await;
    assert_eq!(hub.map(|group| group.member_devices), Some(2));
    for (sender, reader) in [(&alice, &bob), (&bob, &alice)] {
        let text = format!("post-quantum hello from {}", sender.user_id());
        let sent = sender.send(&group_id, &text).await;
        let received = reader.next_messages(&group_id, 1).await;
        assert_eq!(received[0].seq, sent.seq);
        assert_eq!(received[0].body.text(), Some(text.as_str()));
    }

    // Bob's device loses the group and rejoins by external commit, in the
    // group's suite.
    bob.client
        .discard_group_state(&group_id)
        .expect("drop the state");
    let report = bob.receive().await;
    assert_eq!(report.rejoined, vec![group_id.clone()]);
    alice
        .receive_until("bob's external commit", |user| {
            user.epoch(&group_id) == bob.epoch(&group_id)
        })
        .await;
    assert_same_state(&[&alice, &bob], &group_id, 2);
    assert_eq!(
        bob.group(&group_id).cipher_suite,
        Some(CipherSuite::PostQuantum)
    );
    let text = "after the rejoin";
    let sent = alice.send(&group_id, text).await;
    let received = bob.next_messages(&group_id, 1).await;
    assert_eq!(received[0].seq, sent.seq);

    // Alice removes bob.
    alice.remove(&group_id, &bob).await;
    bob.receive_until("the removal", |user| {
        user.status(&group_id) == Some(GroupStatus::Removed)
    })
    .await;
    assert_eq!(alice.group(&group_id).member_devices, 1);

    // a.example requires post-quantum groups from now on.
    network
        .restart_with("a.example", |config| {
            config.groups.require_post_quantum = true;
        })
        .await;
    let error = alice
        .client
        .create_group("classic")
        .await
        .expect_err("classic groups are refused");
    assert_refused(
        "classic group where PQ is required",
        error,
        Code::FailedPrecondition,
        &format!("a.example requires post-quantum groups: create the group with cipher suite {PQ}"),
    );
    alice
        .client
        .create_group_in("still quantum", CipherSuite::PostQuantum)
        .await
        .expect("a PQ group");
    network.shutdown().await;
}
