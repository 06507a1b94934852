//! Delivery: Subscribe replays what lies after the device's cursors and then
//! pushes new events as they are stored; a device's stream follows it into groups
//! it is added to; streams carry only the device's own groups; a device that
//! was offline catches up on everything, in order, once; and a busy group does
//! not starve a device's quiet ones.

use crate::groups_harness::{
    Change, Client, Received, form_group, group_seqs, start_with_clients, texts, welcomes,
};
use conclave_proto::client::v1 as proto;
use conclave_test_support::{DatabaseChoice, TestHomeserver};
use proto::delivery_event::Event;
use std::time::Instant;
use tonic::transport::Channel;

on_both_databases!(
    subscribe_replays_then_pushes_and_resumes_from_the_cursor,
    a_welcome_arrives_on_the_stream_and_the_stream_follows_the_new_group,
    subscribers_receive_only_their_own_groups,
    a_removed_subscriber_receives_nothing_after_its_removal,
    an_offline_member_catches_up_on_a_thousand_messages,
    a_busy_group_does_not_starve_a_quiet_one,
);

/// Messages sent while a subscriber does not read its stream, and their size:
/// more than HTTP/2 flow control (64 KiB windows, see [`small_window_channel`])
/// and the server's per-subscriber buffer (64 events) let through unread, so the
/// server stops reading for it.
const UNREAD_MESSAGES: usize = 150;
const UNREAD_MESSAGE_BYTES: usize = 4096;
/// Messages sent while a member is offline.
const OFFLINE_MESSAGES: usize = 1000;
/// Page size the offline member fetches with.
const PAGE: u32 = 100;
/// Groups of the device that reads a busy group and quiet ones.
const GROUPS: usize = 10;
/// Messages in the busy group: more than a page.
const BUSY_MESSAGES: usize = 150;
/// The server's page size for a stream (and for Fetch by default).
const STREAM_PAGE: usize = 100;

async fn subscribe_replays_then_pushes_and_resumes_from_the_cursor(database: DatabaseChoice) {
    let (_server, _, [mut alice, mut bob]) = start_with_clients(database, ["alice", "bob"]).await;
    form_group(&mut alice, &mut [&mut bob]).await;
    alice.send("one").await;
    alice.send("two").await;

    // What Bob missed is replayed...
    let mut stream = bob.subscribe().await;
    for seq in [2, 3] {
        let event = stream.next_group_event().await;
        assert_eq!(event.seq, seq);
        bob.handle(group_event(event));
    }
    // ...and what is sent while he listens is pushed to him, without polling.
    alice.send("three").await;
    let event = stream.next_group_event().await;
    assert_eq!(event.seq, 4);
    bob.handle(group_event(event));
    assert_eq!(texts(&bob.received), ["one", "two", "three"]);

    // Bob acknowledges up to 3 only, and disconnects.
    let ack = proto::AckRequest {
        groups: vec![proto::GroupAck {
            group_id: alice.group_id(),
            seq: 3,
        }],
        inbox_seq: 0,
    };
    bob.try_ack(ack).await.expect("acknowledging");
    drop(stream);
    alice.send("four").await;

    // A new stream resumes from the cursor: the unacknowledged event again, then
    // what was sent while he was away, nothing twice.
    let mut stream = bob.subscribe().await;
    assert_eq!(stream.next_group_event().await.seq, 4);
    let event = stream.next_group_event().await;
    assert_eq!(event.seq, 5);
    bob.handle(group_event(event));
    assert_eq!(texts(&bob.received), ["one", "two", "three", "four"]);
    alice.send("five").await;
    assert_eq!(stream.next_group_event().await.seq, 6);
}

fn group_event(event: proto::GroupEvent) -> proto::DeliveryEvent {
    proto::DeliveryEvent {
        event: Some(proto::delivery_event::Event::GroupEvent(event)),
    }
}

async fn a_welcome_arrives_on_the_stream_and_the_stream_follows_the_new_group(
    database: DatabaseChoice,
) {
    let (_server, _, [mut alice, mut carol]) =
        start_with_clients(database, ["alice", "carol"]).await;
    // Carol listens before she is in any group.
    let mut stream = carol.subscribe().await;
    alice.create_group().await;
    let added = alice.invite(&["carol@localhost"]).await;

    let event = stream.next().await;
    let welcome = welcomes(std::slice::from_ref(&event));
    assert_eq!(welcome.len(), 1, "expected a Welcome, got {event:?}");
    assert_eq!(welcome[0].commit_seq, added.seq);
    carol.handle(event);

    // The same stream now carries the group's events, after the adding commit.
    alice.send("hello, carol").await;
    let event = stream.next_group_event().await;
    assert_eq!(event.seq, added.seq + 1);
    carol.handle(group_event(event));
    assert_eq!(texts(&carol.received), ["hello, carol"]);
    carol.send("hello, alice").await;
    assert_eq!(stream.next_group_event().await.seq, added.seq + 2);
    assert_eq!(texts(&alice.sync().await), ["hello, alice"]);
}

async fn subscribers_receive_only_their_own_groups(database: DatabaseChoice) {
    let (_server, _, [mut alice, mut bob, mut carol, mut dave]) =
        start_with_clients(database, ["alice", "bob", "carol", "dave"]).await;
    let first_group = form_group(&mut alice, &mut [&mut bob]).await;
    let second_group = form_group(&mut carol, &mut [&mut dave]).await;
    let mut bob_stream = bob.subscribe().await;
    let mut dave_stream = dave.subscribe().await;

    // Interleaved: each stream gets its own group's two messages back to back, so
    // the other group's message, stored between them, never came first.
    alice.send("first group, one").await;
    carol.send("second group, one").await;
    alice.send("first group, two").await;
    carol.send("second group, two").await;
    for (client, stream, group_id) in [
        (&mut bob, &mut bob_stream, &first_group),
        (&mut dave, &mut dave_stream, &second_group),
    ] {
        for seq in [2, 3] {
            let event = stream.next_group_event().await;
            assert_eq!(&event.group_id, group_id);
            assert_eq!(event.seq, seq);
            client.handle(group_event(event));
        }
        // Nor does it come later.
        stream.assert_quiet().await;
    }
    assert_eq!(
        texts(&bob.received),
        ["first group, one", "first group, two"]
    );
    assert_eq!(
        texts(&dave.received),
        ["second group, one", "second group, two"]
    );
}

/// A channel whose HTTP/2 windows are the protocol's default of 64 KiB (tonic's
/// client otherwise allows megabytes in flight), so a stream nobody reads soon
/// holds the server back.
async fn small_window_channel(server: &TestHomeserver) -> Channel {
    Channel::from_shared(server.client_url())
        .expect("a valid URI")
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .expect("connecting")
}

async fn a_removed_subscriber_receives_nothing_after_its_removal(database: DatabaseChoice) {
    let (server, _, [mut alice, mut bob]) = start_with_clients(database, ["alice", "bob"]).await;
    let mut carol = Client::register(&small_window_channel(&server).await, "carol").await;
    form_group(&mut alice, &mut [&mut bob, &mut carol]).await;

    // Carol listens but does not read while Alice writes, removes her, and writes
    // on: the removal and the message after it are stored before the server reads
    // them for Carol (it waits for room in her stream's buffer).
    let mut stream = carol.subscribe().await;
    for index in 0..UNREAD_MESSAGES {
        let text = format!("{index:0width$}", width = UNREAD_MESSAGE_BYTES);
        alice.send(&text).await;
    }
    let carol_leaf = alice.leaf_of(carol.identity());
    let removal = alice.commit(Change::Remove(vec![carol_leaf])).await;
    let after = alice.send("after the removal").await;
    assert_eq!(after.seq, removal.seq + 1);

    // Carol receives everything up to and including her removal, and nothing
    // after it: not on this stream, not by Fetch, not on a new stream.
    for seq in 2..=removal.seq {
        let event = stream.next_group_event().await;
        assert_eq!(event.seq, seq);
        carol.handle(group_event(event));
    }
    assert!(!carol.group().is_active());
    stream.assert_quiet().await;
    let up_to_removal: Vec<u64> = (2..=removal.seq).collect();
    assert_eq!(group_seqs(&carol.fetch(1000).await), up_to_removal);
    carol.ack_handled().await;
    drop(stream);
    let mut stream = carol.subscribe().await;
    stream.assert_quiet().await;
    carol.assert_nothing_new().await;
    assert_eq!(carol.received.len(), UNREAD_MESSAGES);
    assert_eq!(texts(&bob.sync().await).len(), UNREAD_MESSAGES + 1);
}

async fn an_offline_member_catches_up_on_a_thousand_messages(database: DatabaseChoice) {
    let (_server, _, [mut alice, mut bob, mut carol]) =
        start_with_clients(database, ["alice", "bob", "carol"]).await;
    form_group(&mut alice, &mut [&mut bob, &mut carol]).await;

    let encrypting = Instant::now();
    let plaintexts: Vec<String> = (0..OFFLINE_MESSAGES)
        .map(|index| format!("message {index}"))
        .collect();
    let messages: Vec<Vec<u8>> = plaintexts
        .iter()
        .map(|text| alice.encrypt(text.as_bytes()))
        .collect();
    let encrypted = encrypting.elapsed();
    let sending = Instant::now();
    let mut expected = Vec::with_capacity(OFFLINE_MESSAGES);
    for (text, message) in plaintexts.into_iter().zip(messages) {
        let request = alice.message_request(message);
        let sent = alice.try_send_message(request).await.expect("sending");
        expected.push(Received {
            seq: sent.seq,
            sender_user_id: alice.device.user_id.clone(),
            sender_device_id: alice.device.device_id.clone(),
            plaintext: text.into_bytes(),
        });
    }
    eprintln!(
        "{OFFLINE_MESSAGES} messages: encrypting took {encrypted:?}, sending {:?}",
        sending.elapsed()
    );
    let first_seq = expected[0].seq;
    let seqs: Vec<u64> = expected.iter().map(|message| message.seq).collect();
    let dense: Vec<u64> = (first_seq..first_seq + OFFLINE_MESSAGES as u64).collect();
    assert_eq!(seqs, dense);

    // Bob polls in pages, acknowledging each.
    let fetching = Instant::now();
    let mut pages = 0;
    loop {
        let page = bob.fetch(PAGE).await;
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= PAGE as usize);
        pages += 1;
        for event in page {
            bob.handle(event);
        }
        bob.ack_handled().await;
    }
    eprintln!("fetching and decrypting them took {:?}", fetching.elapsed());
    assert_eq!(pages, OFFLINE_MESSAGES / PAGE as usize);
    assert_eq!(bob.received, expected);
    assert_eq!(group_seqs(&bob.fetch(0).await), Vec::<u64>::new());

    // Carol subscribes and is streamed all of them, then the next one live.
    let streaming = Instant::now();
    let mut stream = carol.subscribe().await;
    for _ in 0..OFFLINE_MESSAGES {
        let event = stream.next_group_event().await;
        carol.handle(group_event(event));
    }
    eprintln!(
        "streaming and decrypting them took {:?}",
        streaming.elapsed()
    );
    assert_eq!(carol.received, expected);
    carol.ack_handled().await;
    alice.send("one more").await;
    let event = stream.next_group_event().await;
    assert_eq!(event.seq, first_seq + OFFLINE_MESSAGES as u64);
    carol.handle(group_event(event));
    assert_eq!(
        carol
            .received
            .last()
            .map(|message| message.plaintext.as_slice()),
        Some(&b"one more"[..])
    );
}

/// Bob is in ten groups. The first (the first his pages used to be filled
/// from) has more messages waiting than a page holds, and the last one
/// message: that message is in Bob's first page, by Fetch and by stream, and
/// the busy group fills the rest of the page, in order.
async fn a_busy_group_does_not_starve_a_quiet_one(database: DatabaseChoice) {
    let (_server, channel, [bob]) = start_with_clients(database, ["bob"]).await;
    let mut creators = Vec::with_capacity(GROUPS);
    for index in 0..GROUPS {
        let mut creator = Client::register(&channel, &format!("creator{index}")).await;
        creator.create_group().await;
        // A key package of Bob's for each group.
        bob.api
            .upload(&bob.device, vec![bob.fresh_key_package()], None)
            .await
            .expect("uploading a key package");
        creator.invite(&["bob@localhost"]).await;
        creators.push(creator);
    }
    // Bob takes the Welcomes (and joins none: he only counts events).
    let welcomes = bob.fetch(1000).await;
    assert_eq!(welcomes.len(), GROUPS);
    let inbox_seq = welcomes
        .iter()
        .filter_map(|event| match &event.event {
            Some(Event::InboxEvent(inbox)) => Some(inbox.seq),
            _ => None,
        })
        .max()
        .expect("Welcomes");
    let ack = proto::AckRequest {
        groups: Vec::new(),
        inbox_seq,
    };
    bob.try_ack(ack).await.expect("acknowledging the Welcomes");

    let busy = creators[0].group_id();
    let quiet = creators[GROUPS - 1].group_id();
    for index in 0..BUSY_MESSAGES {
        creators[0].send(&format!("busy {index}")).await;
    }
    creators[GROUPS - 1].send("quiet").await;

    let page: Vec<proto::GroupEvent> = bob
        .fetch(0)
        .await
        .into_iter()
        .map(|event| match event.event {
            Some(Event::GroupEvent(event)) => event,
            other => panic!("a group event, not {other:?}"),
        })
        .collect();
    let mut stream = bob.subscribe().await;
    let mut streamed = Vec::with_capacity(STREAM_PAGE);
    for _ in 0..STREAM_PAGE {
        streamed.push(stream.next_group_event().await);
    }
    for (how, events) in [("fetched", page), ("streamed", streamed)] {
        assert_eq!(events.len(), STREAM_PAGE, "{how}");
        let from = |group_id: &[u8]| -> Vec<u64> {
            events
                .iter()
                .filter(|event| event.group_id == group_id)
                .map(|event| event.seq)
                .collect()
        };
        // After the adding commit (seq 1): the quiet group's message is 2.
        assert_eq!(from(&quiet), [2], "{how}: the quiet group's message");
        let busy_seqs: Vec<u64> = (2..2 + STREAM_PAGE as u64 - 1).collect();
        assert_eq!(from(&busy), busy_seqs, "{how}: the busy group in order");
    }
}
