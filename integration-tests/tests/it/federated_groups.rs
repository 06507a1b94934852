//! One group with members on three domains, as issue 4 demands: alice on
//! a.example creates it (a.example is its hub) and invites bob@b.example and
//! carol@c.example; all three talk and read each other in the hub's one order;
//! bob removes carol; alice updates her own leaf; carol can no longer send.

use std::collections::BTreeSet;

use conclave_client::{ClientError, GroupStatus};
use conclave_core::ids::CredentialIdentity;
use conclave_test_support::{DatabaseChoice, TestNetwork};
use tonic::Code;

use crate::harness::{ALICE_BOB_AND_CAROL, Logged, THREE_DOMAINS, User, assert_same_state, logged};

on_both_databases!(one_group_across_three_domains);

async fn one_group_across_three_domains(database: DatabaseChoice) {
    let network = TestNetwork::start(&THREE_DOMAINS, database).await;
    let [alice, bob, carol] = User::register_all(&network, ALICE_BOB_AND_CAROL).await;
    let everyone = [&alice, &bob, &carol];

    // Alice invites one user of each other domain; their homeservers deliver
    // the Welcome.
    let group_id = alice.create_group("three domains").await;
    let invited = alice.invite(&group_id, &[&bob, &carol]).await;
    assert_eq!(
        invited.devices.iter().cloned().collect::<BTreeSet<_>>(),
        BTreeSet::from([bob.identity(), carol.identity()])
    );
    assert_eq!(invited.epoch, 1);
    for user in [&bob, &carol] {
        user.receive_until("the Welcome", |user| {
            user.status(&group_id) == Some(GroupStatus::Active)
        })
        .await;
        assert_eq!(user.group(&group_id).name, "three domains");
        let members: BTreeSet<CredentialIdentity> = user
            .client
            .members(&group_id)
            .expect("the members")
            .into_iter()
            .map(|member| member.identity)
            .collect();
        let expected: BTreeSet<CredentialIdentity> =
            everyone.iter().map(|user| user.identity()).collect();
        assert_eq!(members, expected, "{}", user.user_id());
    }
    assert_same_state(&everyone, &group_id, 3);

    // All three send at once: the hub orders the messages, and each member
    // reads the other two's in that order, whichever domain it is on.
    let texts = everyone.map(|user| format!("hello from {}", user.user_id()));
    let (from_alice, from_bob, from_carol) = tokio::join!(
        alice.send(&group_id, &texts[0]),
        bob.send(&group_id, &texts[1]),
        carol.send(&group_id, &texts[2]),
    );
    let mut log: Vec<Logged> = [from_alice, from_bob, from_carol]
        .into_iter()
        .zip(everyone)
        .zip(&texts)
        .map(|((sent, user), text)| (sent.seq, user.identity(), text.clone()))
        .collect();
    log.sort();
    assert!(
        log.windows(2).all(|pair| pair[0].0 < pair[1].0),
        "one log position each: {log:?}"
    );
    for user in everyone {
        let received: Vec<Logged> = user
            .next_messages(&group_id, 2)
            .await
            .iter()
            .map(logged)
            .collect();
        let others: Vec<Logged> = log
            .iter()
            .filter(|(_, sender, _)| *sender != user.identity())
            .cloned()
            .collect();
        assert_eq!(received, others, "{}", user.user_id());
        // Its history, its own message included, is the hub's log.
        let history: Vec<Logged> = user.history(&group_id);
        assert_eq!(history, log, "{}", user.user_id());
    }

    // Bob, on b.example, removes carol: a commit relayed to the hub.
    let removed = bob.remove(&group_id, &carol).await;
    assert_eq!(removed.devices, vec![carol.identity()]);
    assert_eq!(removed.epoch, 2);
    alice
        .receive_until("carol's removal", |user| user.epoch(&group_id) == Some(2))
        .await;
    assert_same_state(&[&alice, &bob], &group_id, 2);

    // Alice updates her own leaf (post-compromise security); bob follows.
    let rotated = alice.rotate(&group_id).await;
    assert_eq!(rotated.epoch, 3);
    bob.receive_until("alice's update", |user| user.epoch(&group_id) == Some(3))
        .await;
    assert_same_state(&[&alice, &bob], &group_id, 2);

    // Carol cannot send any more: neither before her device has heard of the
    // removal (her homeserver or the hub refuses) nor after (her client does).
    let error = carol
        .client
        .send(&group_id, "am I still here?")
        .await
        .expect_err("carol was removed");
    assert_eq!(error.rpc_code(), Some(Code::PermissionDenied), "{error}");
    carol
        .receive_until("her removal", |user| {
            user.status(&group_id) == Some(GroupStatus::Removed)
        })
        .await;
    let error = carol
        .client
        .send(&group_id, "still here?")
        .await
        .expect_err("carol was removed");
    assert!(matches!(error, ClientError::NotAMember { .. }), "{error}");
    // The others read on in log order, and nothing of carol's comes first.
    alice.send(&group_id, "carol is gone").await;
    let received = bob.next_messages(&group_id, 1).await;
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].sender, alice.identity());
    assert_eq!(received[0].body.text(), Some("carol is gone"));
    // Carol's history ends where her membership did.
    let history: Vec<Logged> = carol.history(&group_id);
    assert_eq!(history, log);
}
