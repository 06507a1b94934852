//! Commits of members on different domains racing for the same epoch of a
//! group hosted on a.example: the hub takes exactly one per epoch; each loser
//! (relayed through its own homeserver) gets ABORTED with the winner's
//! position, catches up and commits again on the next epoch, on its own. After
//! each round every member holds the same epoch, epoch authenticator and tree.
//!
//! The winner's position is worth something only if the loser's homeserver can
//! hand that commit out: a follower fetches it from the hub before it tells
//! its device, even while the hub's deliveries to it lag behind.

use conclave_client::{CommitOutcome, GroupId, GroupStatus};
use conclave_proto::federation::v1 as proto;
use conclave_test_support::{DatabaseChoice, TestNetwork};
use tonic::Code;

use crate::harness::{THREE_DOMAINS, User, assert_same_state};

on_both_databases!(
    concurrent_commits_converge,
    a_commit_loses_to_one_its_homeserver_has_not_received_yet,
);

/// Rounds in which bob (b.example) and carol (c.example) update their leaves at
/// once.
const ROTATION_ROUNDS: usize = 3;

async fn concurrent_commits_converge(database: DatabaseChoice) {
    let network = TestNetwork::start(&THREE_DOMAINS, database).await;
    let [alice, bob, carol, dave] = User::register_all(
        &network,
        [
            "alice@a.example",
            "bob@b.example",
            "carol@c.example",
            "dave@c.example",
        ],
    )
    .await;
    let group_id = alice.create_group("races").await;
    alice.invite(&group_id, &[&bob, &carol, &dave]).await;
    let mut members = vec![&alice, &bob, &carol, &dave];
    let mut epoch = 1;
    converge(&group_id, &members, epoch).await;

    for _ in 0..ROTATION_ROUNDS {
        let (by_bob, by_carol) = tokio::join!(bob.rotate(&group_id), carol.rotate(&group_id));
        assert_one_winner(epoch, &[raced(by_bob), raced(by_carol)]);
        epoch += 2;
        converge(&group_id, &members, epoch).await;
    }

    // All three domains at once, the hub's own member included.
    let (by_alice, by_bob, by_carol) = tokio::join!(
        alice.rotate(&group_id),
        bob.rotate(&group_id),
        carol.rotate(&group_id)
    );
    assert_one_winner(epoch, &[raced(by_alice), raced(by_bob), raced(by_carol)]);
    epoch += 3;
    converge(&group_id, &members, epoch).await;

    // A removal races an update: both land, in one order or the other.
    let (removed, by_carol) = tokio::join!(bob.remove(&group_id, &dave), carol.rotate(&group_id));
    assert_eq!(removed.devices, vec![dave.identity()]);
    assert_one_winner(
        epoch,
        &[(removed.epoch, removed.lost_races), raced(by_carol)],
    );
    epoch += 2;
    members.retain(|member| member.user_id() != dave.user_id());
    converge(&group_id, &members, epoch).await;
    dave.receive_until("his removal", |user| {
        user.status(&group_id) == Some(GroupStatus::Removed)
    })
    .await;
}

/// A commit's epoch and the races it lost on the way.
pub(crate) fn raced(outcome: CommitOutcome) -> (u64, u32) {
    (outcome.epoch, outcome.lost_races)
}

/// Of commits all built on `epoch` (each as the epoch it created and the races
/// it lost), exactly one won it, creating `epoch + 1` without losing a race;
/// each other one lost at least once and landed on a later epoch of its own.
#[track_caller]
pub(crate) fn assert_one_winner(epoch: u64, outcomes: &[(u64, u32)]) {
    let mut epochs: Vec<u64> = outcomes.iter().map(|(created, _)| *created).collect();
    epochs.sort();
    let expected: Vec<u64> = (1..=outcomes.len() as u64).map(|n| epoch + n).collect();
    assert_eq!(epochs, expected, "one commit per epoch: {outcomes:?}");
    for (created, lost_races) in outcomes {
        let won_first = *created == epoch + 1;
        assert_eq!(*lost_races == 0, won_first, "{outcomes:?}");
    }
}

/// Every member catches up to `epoch` and they agree on the group's state.
async fn converge(group_id: &GroupId, members: &[&User], epoch: u64) {
    for member in members {
        member
            .receive_until(&format!("epoch {epoch}"), |user| {
                user.epoch(group_id) == Some(epoch)
            })
            .await;
    }
    assert_same_state(members, group_id, members.len());
}

async fn a_commit_loses_to_one_its_homeserver_has_not_received_yet(database: DatabaseChoice) {
    let mut network = TestNetwork::start(&["a.example", "b.example"], database).await;
    let [alice, bob] = User::register_all(&network, ["alice@a.example", "bob@b.example"]).await;
    let group_id = alice.create_group("a lagging copy").await;
    alice.invite(&group_id, &[&bob]).await;
    converge(&group_id, &[&alice, &bob], 1).await;
    network.outbox_drained("a.example", "b.example").await;

    // b.example's copy of the group is to lag behind the hub: it now takes
    // one request a minute from each peer, and a.example's is used up, so the
    // hub's delivery of the next commit waits (as it would after an outage, or
    // under load).
    network
        .restart_with("b.example", |config| {
            config.federation.peer_requests_per_minute = 1;
        })
        .await;
    let as_the_hub = network.pki().issue("a.example");
    for expected in [Code::Ok, Code::ResourceExhausted] {
        let mut client = network
            .raw_federation_client("b.example", Some(&as_the_hub))
            .await
            .expect("a connection as a.example");
        let result = client
            .verify_credential(proto::VerifyCredentialRequest {
                asking_domain: "a.example".to_owned(),
                credential_identity: bob.identity().to_string(),
                signature_public_key: vec![0; 32],
                key_package_ref: Vec::new(),
            })
            .await;
        let code = result.map_or_else(|status| status.code(), |_| Code::Ok);
        assert_eq!(code, expected, "a.example's allowance at b.example");
    }
    alice.rotate(&group_id).await;

    // Bob's commit for epoch 1 loses to alice's, which b.example does not have;
    // b.example fetches it before answering, so bob's client loses once.
    let rotated = bob.rotate(&group_id).await;
    assert_eq!((rotated.epoch, rotated.lost_races), (3, 1));
    converge(&group_id, &[&alice, &bob], 3).await;
}
