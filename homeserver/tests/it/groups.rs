//! The hub's happy paths through GroupService and DeliveryService, with real
//! openmls clients: creating a group, inviting through the directory, joining from
//! Welcomes, exchanging messages, acknowledging, proposals by reference, removal,
//! self-update and external rejoin.

use crate::groups_harness::{
    Change, Client, Received, assert_in_sync, form_group, group_seqs, start_with_clients, texts,
    welcomes,
};
use crate::harness::assert_refused;
use conclave_proto::client::v1 as proto;
use conclave_test_support::DatabaseChoice;
use std::time::{Duration, SystemTime};
use tonic::Code;

on_both_databases!(
    invited_devices_join_and_read_each_others_messages,
    acknowledgements_move_cursors_forward_only,
    proposals_removal_and_self_update,
    devices_of_member_users_rejoin_by_external_commit,
);

/// The summary fields a test compares: epoch, member_count, last_seq, acked_seq.
fn counters(summary: &proto::GroupSummary) -> (u64, u32, u64, u64) {
    (
        summary.epoch,
        summary.member_count,
        summary.last_seq,
        summary.acked_seq,
    )
}

fn received(seq: u64, sender: &Client, text: &str) -> Received {
    Received {
        seq,
        sender_user_id: sender.device.user_id.clone(),
        sender_device_id: sender.device.device_id.clone(),
        plaintext: text.as_bytes().to_vec(),
    }
}

async fn invited_devices_join_and_read_each_others_messages(database: DatabaseChoice) {
    let started = SystemTime::now();
    let (_server, channel, [mut alice, mut bob, mut carol]) =
        start_with_clients(database, ["alice", "bob", "carol"]).await;
    let mut carol_phone = Client::login(&channel, "carol").await;
    let dave = Client::register(&channel, "dave").await;

    let group_id = alice.create_group().await;
    assert_eq!(counters(&alice.summary().await), (0, 1, 0, 0));
    let added = alice.invite(&["bob@localhost", "carol@localhost"]).await;
    assert_eq!((added.seq, added.epoch), (1, 1));

    // Each added device has exactly one Welcome, for this group and commit; the
    // committer and a device nobody invited have none.
    for invited in [&bob, &carol, &carol_phone] {
        let events = invited.fetch(0).await;
        let welcomes = welcomes(&events);
        assert_eq!(events.len(), 1, "{}: {events:?}", invited.identity());
        assert_eq!(welcomes.len(), 1, "{}", invited.identity());
        assert_eq!(welcomes[0].group_id, group_id);
        assert_eq!(welcomes[0].commit_seq, 1);
    }
    let alice_events = alice.fetch(0).await;
    assert!(welcomes(&alice_events).is_empty());
    assert_eq!(group_seqs(&alice_events), [1], "alice reads her own commit");
    dave.assert_nothing_new().await;

    for client in [&mut bob, &mut carol, &mut carol_phone, &mut alice] {
        client.sync().await;
    }
    assert_in_sync(&[&alice, &bob, &carol, &carol_phone]).await;
    assert_eq!(alice.group().members().count(), 4);

    let first = alice.send("hello from alice").await;
    let second = carol_phone.send("hello from carol's phone").await;
    assert_eq!((first.seq, first.epoch), (2, 1));
    assert_eq!((second.seq, second.epoch), (3, 1));

    let from_alice = received(2, &alice, "hello from alice");
    let from_phone = received(3, &carol_phone, "hello from carol's phone");
    assert_eq!(bob.sync().await, [from_alice.clone(), from_phone.clone()]);
    assert_eq!(carol.sync().await, [from_alice.clone(), from_phone.clone()]);
    assert_eq!(carol_phone.sync().await, [from_alice]);
    assert_eq!(alice.sync().await, [from_phone]);
    // The server's time of each event is the time it was accepted.
    let window = (started - Duration::from_secs(60))..(SystemTime::now() + Duration::from_secs(60));
    for event in &bob.log {
        let time = event.server_time.expect("server_time is set");
        let time = SystemTime::UNIX_EPOCH
            + Duration::new(u64::try_from(time.seconds).unwrap(), time.nanos as u32);
        assert!(
            window.contains(&time),
            "server_time {time:?} of event {}",
            event.seq
        );
    }

    for client in [&alice, &bob, &carol, &carol_phone] {
        assert_eq!(
            counters(&client.summary().await),
            (1, 4, 3, 3),
            "{}",
            client.identity()
        );
    }
    assert!(dave.try_list_groups().await.unwrap().is_empty());
    dave.assert_nothing_new().await;
}

async fn acknowledgements_move_cursors_forward_only(database: DatabaseChoice) {
    let (_server, _, [mut alice, mut bob, carol]) =
        start_with_clients(database, ["alice", "bob", "carol"]).await;
    let group_id = form_group(&mut alice, &mut [&mut bob]).await;
    alice.send("two").await;
    alice.send("three").await;

    // Fetch does not consume: until Bob acknowledges, the same events come back.
    // Bob's events start after the commit that added him.
    assert_eq!(group_seqs(&bob.fetch(0).await), [2, 3]);
    assert_eq!(group_seqs(&bob.fetch(0).await), [2, 3]);
    assert_eq!(group_seqs(&bob.fetch(1).await), [2]);
    assert_eq!(bob.summary().await.acked_seq, 1);

    let ack = |seq| proto::AckRequest {
        groups: vec![proto::GroupAck {
            group_id: group_id.clone(),
            seq,
        }],
        inbox_seq: 0,
    };
    bob.try_ack(ack(2)).await.expect("acknowledging 2");
    assert_eq!(group_seqs(&bob.fetch(0).await), [3]);
    assert_eq!(bob.summary().await.acked_seq, 2);

    // Acknowledging less than before leaves the cursor where it is.
    bob.try_ack(ack(1)).await.expect("acknowledging 1");
    assert_eq!(bob.summary().await.acked_seq, 2);
    assert_eq!(group_seqs(&bob.fetch(0).await), [3]);

    assert_refused(
        "beyond the log",
        bob.try_ack(ack(4)).await,
        Code::InvalidArgument,
        "cannot acknowledge group sequence number 4: the newest is 3",
    );
    let inbox = proto::AckRequest {
        groups: Vec::new(),
        inbox_seq: 2,
    };
    assert_refused(
        "beyond the inbox",
        bob.try_ack(inbox).await,
        Code::InvalidArgument,
        "cannot acknowledge inbox sequence number 2: the newest is 1",
    );
    assert_refused(
        "a group the device is not in",
        carol.try_ack(ack(1)).await,
        Code::PermissionDenied,
        "you are not a member of group",
    );
    let unknown = proto::AckRequest {
        groups: vec![
            proto::GroupAck {
                group_id: group_id.clone(),
                seq: 3,
            },
            proto::GroupAck {
                group_id: b"no such group".to_vec(),
                seq: 1,
            },
        ],
        inbox_seq: 0,
    };
    // All acknowledgements of a request are checked before any is applied.
    assert_refused(
        "an unknown group beside a valid one",
        bob.try_ack(unknown).await,
        Code::NotFound,
        &hex::encode(b"no such group"),
    );
    assert_eq!(bob.summary().await.acked_seq, 2);
    assert_eq!(group_seqs(&bob.fetch(0).await), [3]);

    bob.try_ack(ack(3)).await.expect("acknowledging 3");
    bob.assert_nothing_new().await;
    assert_eq!(counters(&bob.summary().await), (1, 2, 3, 3));
    alice.send("four").await;
    assert_eq!(group_seqs(&bob.fetch(0).await), [4]);
    assert_eq!(counters(&alice.summary().await), (1, 2, 4, 1));
}

async fn proposals_removal_and_self_update(database: DatabaseChoice) {
    let (_server, channel, [mut alice, mut bob, mut carol]) =
        start_with_clients(database, ["alice", "bob", "carol"]).await;
    let mut carol_phone = Client::login(&channel, "carol").await;
    form_group(&mut alice, &mut [&mut bob, &mut carol, &mut carol_phone]).await;

    // Bob proposes an update by reference; it is logged without ending the epoch.
    let bob_leaf = alice.leaf_of(bob.identity());
    let leaf_key = |client: &Client| {
        let mut members = client.group().members();
        members
            .find(|member| member.index == bob_leaf)
            .unwrap()
            .encryption_key
    };
    let bob_key_before = leaf_key(&alice);
    let proposal = bob.propose_self_update();
    let request = bob.proposal_request(proposal);
    let proposed = bob.try_submit_proposal(request).await.expect("proposal");
    assert_eq!((proposed.seq, proposed.epoch), (2, 1));
    for client in [&mut alice, &mut carol, &mut carol_phone] {
        client.sync().await;
    }
    // Alice commits it: every member merges, and Bob's leaf has his proposed key.
    let covered = alice.commit(Change::PendingProposals).await;
    assert_eq!((covered.seq, covered.epoch), (3, 2));
    for client in [&mut bob, &mut carol, &mut carol_phone] {
        client.sync().await;
    }
    assert_in_sync(&[&alice, &bob, &carol, &carol_phone]).await;
    assert_ne!(leaf_key(&alice), bob_key_before);

    // Carol's phone writes a message for this epoch, then Alice removes the phone.
    let late = carol_phone.encrypt(b"written before the removal");
    let phone_leaf = alice.leaf_of(carol_phone.identity());
    let removal = alice.commit(Change::Remove(vec![phone_leaf])).await;
    assert_eq!((removal.seq, removal.epoch), (4, 3));
    alice.send("after the removal").await;

    // The phone receives up to and including the commit that removed it, and
    // nothing after.
    assert_eq!(group_seqs(&carol_phone.fetch(0).await), [4]);
    carol_phone.sync().await;
    assert!(
        !carol_phone.group().is_active(),
        "the phone knows it was removed"
    );
    carol_phone.assert_nothing_new().await;
    assert!(carol_phone.summary_of(&alice.group_id()).await.is_none());
    let request = carol_phone.message_request(late);
    assert_refused(
        "a removed device's message",
        carol_phone.try_send_message(request).await,
        Code::PermissionDenied,
        "you are not a member of group",
    );
    assert_eq!(counters(&alice.summary().await), (3, 3, 5, 2));

    for client in [&mut bob, &mut carol] {
        let received = client.sync().await;
        assert_eq!(texts(&received), ["after the removal"]);
    }
    alice.sync().await;

    // Bob updates his own leaf.
    let updated = bob.commit(Change::SelfUpdate).await;
    assert_eq!((updated.seq, updated.epoch), (6, 4));
    alice.sync().await;
    carol.sync().await;
    assert_in_sync(&[&alice, &bob, &carol]).await;
    carol.send("still here").await;
    assert_eq!(texts(&alice.sync().await), ["still here"]);
    assert_eq!(texts(&bob.sync().await), ["still here"]);
    assert!(carol.sync().await.is_empty());
    for client in [&alice, &bob, &carol] {
        assert_eq!(counters(&client.summary().await), (4, 3, 7, 7));
    }
    carol_phone.assert_nothing_new().await;
}

async fn devices_of_member_users_rejoin_by_external_commit(database: DatabaseChoice) {
    let (_server, channel, [mut alice, mut bob, mut mallory]) =
        start_with_clients(database, ["alice", "bob", "mallory"]).await;
    let group_id = form_group(&mut alice, &mut [&mut bob]).await;
    alice.send("before the laptop").await;
    bob.sync().await;

    // A new device of a member user reads the GroupInfo and joins by itself; it
    // may not send before.
    let mut bob_laptop = Client::login(&channel, "bob").await;
    let request = proto::SendMessageRequest {
        idempotency_key: bob_laptop.new_key(),
        group_id: group_id.clone(),
        message: b"not yet".to_vec(),
    };
    assert_refused(
        "a message before joining",
        bob_laptop.try_send_message(request).await,
        Code::PermissionDenied,
        "you are not a member of group",
    );
    let info = bob_laptop
        .try_group_info(&group_id)
        .await
        .expect("group info");
    assert_eq!(info.epoch, 1);
    let joined = bob_laptop
        .try_join_externally(&group_id)
        .await
        .expect("the external commit is accepted");
    assert_eq!((joined.seq, joined.epoch), (3, 2));
    alice.sync().await;
    bob.sync().await;
    assert_in_sync(&[&alice, &bob, &bob_laptop]).await;
    assert_eq!(counters(&bob_laptop.summary().await), (2, 3, 3, 3));

    bob_laptop.send("hello from the laptop").await;
    alice.send("welcome, laptop").await;
    assert_eq!(
        texts(&alice.sync().await),
        ["hello from the laptop"],
        "alice reads the new device"
    );
    assert_eq!(
        texts(&bob.sync().await),
        ["hello from the laptop", "welcome, laptop"]
    );
    assert_eq!(texts(&bob_laptop.sync().await), ["welcome, laptop"]);

    // A member device that lost its state rejoins as itself, replacing its leaf.
    bob.lose_state();
    let rejoined = bob
        .try_join_externally(&group_id)
        .await
        .expect("the resynchronising external commit is accepted");
    assert_eq!((rejoined.seq, rejoined.epoch), (6, 3));
    alice.sync().await;
    bob_laptop.sync().await;
    assert_in_sync(&[&alice, &bob, &bob_laptop]).await;
    assert_eq!(counters(&alice.summary().await), (3, 3, 6, 6));
    alice.send("welcome back").await;
    assert_eq!(texts(&bob.sync().await), ["welcome back"]);
    assert_eq!(texts(&bob_laptop.sync().await), ["welcome back"]);
    alice.sync().await;

    // A stranger may not read the GroupInfo, and cannot join with one it got
    // elsewhere.
    assert_refused(
        "a stranger's GetGroupInfo",
        mallory.try_group_info(&group_id).await,
        Code::NotFound,
        &format!("group {} does not exist", hex::encode(&group_id)),
    );
    let info = bob.try_group_info(&group_id).await.expect("group info");
    let (_, request) = mallory.external_commit(&group_id, &info);
    assert_refused(
        "a stranger's external commit",
        mallory.try_submit_commit(request).await,
        Code::PermissionDenied,
        "user mallory@localhost has no device in the group",
    );
    assert_eq!(counters(&alice.summary().await), (3, 3, 7, 7));
    alice.assert_nothing_new().await;
    mallory.assert_nothing_new().await;
}
