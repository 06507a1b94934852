//! Recovery through the library: commit races, an offline device catching up,
//! and crashes between sending a submission and applying the answer.

use std::collections::BTreeSet;

use conclave_client::{ClientError, FailPoint, GroupId, MessageBody};
use conclave_core::ids::UserId;
use conclave_test_support::DatabaseChoice;

use crate::support::{
    GROUP_STOCK, Reopen as _, TestDevice, register, start_server, take_all_unread, within,
};

fn user(id: &str) -> UserId {
    id.parse().unwrap()
}

async fn receive(device: &TestDevice) -> conclave_client::ReceiveReport {
    within(120, "receive", device.client.receive())
        .await
        .unwrap_or_else(|error| panic!("receive on {}: {error}", device.identity()))
}

fn epoch(device: &TestDevice, group_id: &GroupId) -> u64 {
    device.client.group(group_id).unwrap().epoch.unwrap()
}

fn assert_same_state(devices: &[&TestDevice], group_id: &GroupId) {
    let first = devices[0].client.group(group_id).unwrap();
    for device in devices {
        let summary = device.client.group(group_id).unwrap();
        assert_eq!(summary.epoch, first.epoch);
        assert_eq!(summary.epoch_authenticator, first.epoch_authenticator);
        assert_eq!(summary.tree_hash, first.tree_hash);
        assert_eq!(summary.member_devices, first.member_devices);
    }
}

/// A group of the given users, created by the first, everyone joined.
async fn group_of(devices: &[&TestDevice], users: &[&str]) -> GroupId {
    let group_id = devices[0]
        .client
        .create_group("race")
        .await
        .unwrap()
        .group_id;
    let users: Vec<UserId> = users.iter().map(|name| user(name)).collect();
    devices[0].client.invite(&group_id, &users).await.unwrap();
    for device in &devices[1..] {
        assert_eq!(receive(device).await.joined, vec![group_id.clone()]);
    }
    group_id
}

conclave_test_support::on_both_databases!(concurrent_commits, offline_catch_up);

/// Rounds of [`concurrent_commits`].
const COMMIT_ROUNDS: u64 = 100;

/// Two members commit in the same epoch, round after round: the hub takes
/// exactly one, the other loses, catches up, and commits again on the next
/// epoch. A third member follows. In the end all agree on the group's state.
async fn concurrent_commits(database: DatabaseChoice) {
    let rounds = COMMIT_ROUNDS;
    let server = start_server(database).await;
    let (alice, _) = register(&server, "alice", GROUP_STOCK).await;
    let (bob, _) = register(&server, "bob", GROUP_STOCK).await;
    let (carol, _) = register(&server, "carol", GROUP_STOCK).await;
    let group_id = group_of(
        &[&alice, &bob, &carol],
        &["bob@localhost", "carol@localhost"],
    )
    .await;

    for round in 0..rounds {
        let start = epoch(&alice, &group_id);
        assert_eq!(epoch(&bob, &group_id), start, "round {round}");
        let (by_alice, by_bob) = within(60, "two rotations", async {
            tokio::join!(alice.client.rotate(&group_id), bob.client.rotate(&group_id))
        })
        .await;
        let (by_alice, by_bob) = (by_alice.unwrap(), by_bob.unwrap());
        let lost: BTreeSet<u32> = [by_alice.lost_races, by_bob.lost_races].into();
        assert_eq!(
            lost,
            BTreeSet::from([0, 1]),
            "round {round}: exactly one wins"
        );
        let epochs: BTreeSet<u64> = [by_alice.epoch, by_bob.epoch].into();
        assert_eq!(
            epochs,
            BTreeSet::from([start + 1, start + 2]),
            "round {round}"
        );
        // The loser merged the winner's commit on its way; the winner now reads
        // the loser's.
        let winner = if by_alice.lost_races == 0 {
            &alice
        } else {
            &bob
        };
        receive(winner).await;
    }
    receive(&carol).await;
    assert_eq!(epoch(&carol, &group_id), 1 + 2 * rounds);
    assert_same_state(&[&alice, &bob, &carol], &group_id);

    // A lost race re-applies the intent: an invitation that loses to a rotation
    // is rebuilt for the next epoch, and the invitee joins exactly once.
    let (dave, _) = register(&server, "dave", GROUP_STOCK).await;
    let start = epoch(&alice, &group_id);
    let dave_user = [user("dave@localhost")];
    let (invited, rotated) = within(60, "invitation against rotation", async {
        tokio::join!(
            alice.client.invite(&group_id, &dave_user),
            bob.client.rotate(&group_id)
        )
    })
    .await;
    let (invited, rotated) = (invited.unwrap(), rotated.unwrap());
    assert_eq!(invited.devices, vec![dave.identity()]);
    assert_eq!(invited.lost_races + rotated.lost_races, 1);
    assert_eq!(invited.epoch.max(rotated.epoch), start + 2);
    assert_eq!(receive(&dave).await.joined, vec![group_id.clone()]);
    for device in [&alice, &bob, &carol] {
        receive(device).await;
    }
    assert_same_state(&[&alice, &bob, &carol, &dave], &group_id);
    assert_eq!(alice.client.members(&group_id).unwrap().len(), 4);
}

/// A device whose client was not running while 1,000 messages were sent reads
/// all of them, in order, once; a restart after that shows none again.
async fn offline_catch_up(database: DatabaseChoice) {
    const MESSAGES: usize = 1000;
    let server = start_server(database).await;
    let (alice, _) = register(&server, "alice", GROUP_STOCK).await;
    let (bob, _) = register(&server, "bob", GROUP_STOCK).await;
    let group_id = group_of(&[&alice, &bob], &["bob@localhost"]).await;
    let bob_identity = bob.identity();
    let TestDevice { client, state_dir } = bob;
    drop(client);

    for index in 0..MESSAGES {
        alice
            .client
            .send(&group_id, &format!("message {index:04}"))
            .await
            .unwrap();
    }

    let bob = TestDevice {
        client: conclave_client::Client::open(state_dir.path()).unwrap(),
        state_dir,
    };
    assert_eq!(bob.identity(), bob_identity);
    let report = receive(&bob).await;
    assert_eq!(report.new_messages, MESSAGES);
    let messages = take_all_unread(&bob);
    assert_eq!(messages.len(), MESSAGES);
    for (index, message) in messages.iter().enumerate() {
        assert_eq!(
            message.body,
            MessageBody::Text(format!("message {index:04}")),
            "in order"
        );
        assert_eq!(message.sender, alice.identity());
        assert!(message.server_time.is_some());
    }
    assert!(messages.windows(2).all(|pair| pair[0].seq < pair[1].seq));

    // Nothing twice: not on the next receive, not after a restart.
    assert_eq!(receive(&bob).await.new_messages, 0);
    let bob = bob.reopen();
    assert_eq!(receive(&bob).await.new_messages, 0);
    assert!(bob.client.take_unread(None).unwrap().is_none());
    assert_eq!(
        bob.client.messages(&group_id, 2000).unwrap().len(),
        MESSAGES
    );
}

fn assert_simulated_crash(result: Result<impl std::fmt::Debug, ClientError>) {
    match result {
        Err(ClientError::SimulatedCrash(_)) => {}
        other => panic!("expected a simulated crash, got {other:?}"),
    }
}

/// A crash between a submission and its answer being applied: reopened, the
/// client sends the stored submission again with the same idempotency key, the
/// hub answers with the original result, and the intent completes exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submissions_survive_a_crash() {
    let server = start_server(DatabaseChoice::Sqlite).await;
    let (alice, _) = register(&server, "alice", GROUP_STOCK).await;
    let (bob, _) = register(&server, "bob", GROUP_STOCK).await;
    let (carol, _) = register(&server, "carol", GROUP_STOCK).await;
    let group_id = group_of(&[&alice, &bob], &["bob@localhost"]).await;

    // A commit the hub accepted, the client "crashing" before merging it.
    alice.client.set_fail_point(Some(FailPoint::AfterAccepted));
    assert_simulated_crash(alice.client.rotate(&group_id).await);
    let alice = alice.reopen();
    assert_eq!(epoch(&alice, &group_id), 1, "not merged before the restart");
    receive(&alice).await;
    assert_eq!(epoch(&alice, &group_id), 2);
    receive(&bob).await;
    assert_eq!(epoch(&bob, &group_id), 2, "the hub took the commit once");
    assert_same_state(&[&alice, &bob], &group_id);

    // An invitation likewise: the invitee joins once.
    alice.client.set_fail_point(Some(FailPoint::AfterAccepted));
    assert_simulated_crash(
        alice
            .client
            .invite(&group_id, &[user("carol@localhost")])
            .await,
    );
    let alice = alice.reopen();
    receive(&alice).await;
    assert_eq!(receive(&carol).await.joined, vec![group_id.clone()]);
    receive(&bob).await;
    assert_same_state(&[&alice, &bob, &carol], &group_id);
    assert_eq!(epoch(&alice, &group_id), 3);

    // A message accepted but not recorded, and one stored but never sent.
    alice.client.set_fail_point(Some(FailPoint::AfterAccepted));
    assert_simulated_crash(alice.client.send(&group_id, "accepted once").await);
    let alice = alice.reopen();
    receive(&alice).await;
    alice.client.set_fail_point(Some(FailPoint::BeforeSend));
    assert_simulated_crash(alice.client.send(&group_id, "sent after restart").await);
    let alice = alice.reopen();
    receive(&alice).await;
    for device in [&bob, &carol] {
        receive(device).await;
        let texts: Vec<String> = take_all_unread(device)
            .into_iter()
            .map(|message| message.body.text().unwrap().to_owned())
            .collect();
        assert_eq!(texts, ["accepted once", "sent after restart"]);
    }
    let history: Vec<String> = alice
        .client
        .messages(&group_id, 10)
        .unwrap()
        .into_iter()
        .filter(|message| message.own)
        .map(|message| message.body.text().unwrap().to_owned())
        .collect();
    assert_eq!(history, ["accepted once", "sent after restart"]);

    // A crash after a commit was stored but before it was sent: the restarted
    // client sends it.
    alice.client.set_fail_point(Some(FailPoint::BeforeSend));
    assert_simulated_crash(alice.client.rotate(&group_id).await);
    let alice = alice.reopen();
    receive(&alice).await;
    for device in [&bob, &carol] {
        receive(device).await;
    }
    assert_eq!(epoch(&alice, &group_id), 4);
    assert_same_state(&[&alice, &bob, &carol], &group_id);
}

/// A device restored from an old backup of its state is behind the group: the
/// events the hub delivers are for epochs it never reached. It holds them,
/// finds no commit that leads there, and rejoins by external commit; from then
/// on it reads the group again and agrees with the others on its state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_restored_from_a_backup_rejoins() {
    let server = start_server(DatabaseChoice::Sqlite).await;
    let (alice, _) = register(&server, "alice", GROUP_STOCK).await;
    let (bob, _) = register(&server, "bob", GROUP_STOCK).await;
    let group_id = group_of(&[&alice, &bob], &["bob@localhost"]).await;

    let state_file = bob.state_dir.path().join(conclave_client::STATE_FILE_NAME);
    let bob = bob.close();
    let backup = std::fs::read(&state_file).unwrap();
    let bob = bob.open();

    alice.client.rotate(&group_id).await.unwrap();
    alice.client.rotate(&group_id).await.unwrap();
    receive(&bob).await;
    assert_eq!(epoch(&bob, &group_id), 3);
    alice
        .client
        .send(&group_id, "before the restore")
        .await
        .unwrap();

    let bob = bob.close();
    std::fs::write(&state_file, backup).unwrap();
    let bob = bob.open();
    assert_eq!(epoch(&bob, &group_id), 1, "the backup is behind");
    let report = receive(&bob).await;
    assert_eq!(report.rejoined, vec![group_id.clone()]);
    // That message was for an epoch the restored state never had.
    assert!(bob.client.take_unread(None).unwrap().is_none());

    receive(&alice).await;
    assert_same_state(&[&alice, &bob], &group_id);
    alice
        .client
        .send(&group_id, "after the rejoin")
        .await
        .unwrap();
    receive(&bob).await;
    let texts: Vec<String> = take_all_unread(&bob)
        .into_iter()
        .map(|message| message.body.text().unwrap().to_owned())
        .collect();
    assert_eq!(texts, ["after the rejoin"]);
}
