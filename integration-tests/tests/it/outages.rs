//! Homeservers that go down while a group hosted on a.example is busy.
//!
//! - A follower (b.example) down: the hub keeps its events in the durable
//!   outbox and delivers them, in order, once b.example is back; bob then reads
//!   every message exactly once, in the hub's order, and the outbox is empty.
//! - The hub (a.example) restarting mid-burst: senders on every domain keep
//!   sending; their clients keep each unanswered message with its idempotency
//!   key and send it again until the hub answers. Afterwards every member has
//!   every message exactly once, in one order everywhere.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use conclave_client::GroupId;
use conclave_test_support::{DatabaseChoice, TestNetwork};
use tokio::sync::Notify;

use crate::harness::{ALICE_BOB_AND_CAROL, Logged, THREE_DOMAINS, User, group_of, logged};

on_both_databases!(
    a_follower_that_was_down_receives_everything_once,
    a_hub_restart_loses_and_duplicates_nothing,
);

/// Messages sent while b.example is down (a quarter each by alice and anne on
/// a.example, carol and chris on c.example).
const MESSAGES_WHILE_DOWN: usize = 1000;

/// Messages each sender sends during the hub's restart.
const BURST_PER_SENDER: usize = 30;

/// Members on all three domains: alice (a.example, the hub), bob, carol.
async fn three_member_group(network: &TestNetwork) -> (GroupId, User, User, User) {
    let [alice, bob, carol] = User::register_all(network, ALICE_BOB_AND_CAROL).await;
    let group_id = group_of(&alice, "outages", &[&bob, &carol]).await;
    (group_id, alice, bob, carol)
}

/// `count` messages "<name> <n>", one after the other, as the hub logged them.
async fn send_numbered(sender: &User, group_id: &GroupId, name: &str, count: usize) -> Vec<Logged> {
    let mut logged = Vec::with_capacity(count);
    for number in 0..count {
        let text = format!("{name} {number}");
        let sent = sender.send(group_id, &text).await;
        logged.push((sent.seq, sender.identity(), text));
    }
    logged
}

async fn a_follower_that_was_down_receives_everything_once(database: DatabaseChoice) {
    let mut network = TestNetwork::start(&THREE_DOMAINS, database).await;
    let (group_id, alice, bob, carol) = three_member_group(&network).await;
    // Two more senders, so that the burst is over sooner: each client sends
    // one message at a time.
    let [anne, chris] = User::register_all(&network, ["anne@a.example", "chris@c.example"]).await;
    alice.invite(&group_id, &[&anne, &chris]).await;
    for user in [&anne, &chris] {
        user.receive_until("the Welcome", |user| user.epoch(&group_id) == Some(2))
            .await;
    }
    network.outbox_drained("a.example", "b.example").await;

    network.stop("b.example").await;
    let share = MESSAGES_WHILE_DOWN / 4;
    let (from_alice, from_anne, from_carol, from_chris) = tokio::join!(
        send_numbered(&alice, &group_id, "alice", share),
        send_numbered(&anne, &group_id, "anne", share),
        send_numbered(&carol, &group_id, "carol", share),
        send_numbered(&chris, &group_id, "chris", share),
    );
    let mut log: Vec<Logged> = [from_alice, from_anne, from_carol, from_chris].concat();
    log.sort();
    // None of it reached b.example, and all of it waits for it.
    assert_eq!(
        network.outbox_depth("a.example", "b.example").await,
        MESSAGES_WHILE_DOWN as u64
    );

    network.start_again("b.example").await;
    let received: Vec<Logged> = bob
        .next_messages(&group_id, MESSAGES_WHILE_DOWN)
        .await
        .iter()
        .map(logged)
        .collect();
    let first_difference = received
        .iter()
        .zip(&log)
        .position(|(got, sent)| got != sent);
    assert_eq!(first_difference, None, "bob reads the hub's order");
    assert_eq!(received.len(), log.len());
    // Nothing more, and nothing twice.
    assert_eq!(bob.receive().await.new_messages, 0);
    assert_eq!(bob.client.take_unread(None).expect("the state"), None);
    assert_eq!(bob.history(&group_id), log);
    network.outbox_drained("a.example", "b.example").await;
    network.outbox_drained("a.example", "c.example").await;
    let hub = network.stored_group("a.example", group_id.as_bytes()).await;
    let copy = network.stored_group("b.example", group_id.as_bytes()).await;
    assert_eq!(
        copy.map(|group| group.last_seq),
        hub.map(|group| group.last_seq)
    );
}

/// What the senders of a burst tell the test.
struct Burst {
    /// Per sender, the messages the hub has accepted so far.
    accepted: Vec<AtomicUsize>,
    /// Per sender, the failed attempts so far.
    failures: Vec<AtomicU32>,
    /// Notified whenever one of the above changes.
    changed: Notify,
}

impl Burst {
    fn new(senders: usize) -> Burst {
        Burst {
            accepted: (0..senders).map(|_| AtomicUsize::new(0)).collect(),
            failures: (0..senders).map(|_| AtomicU32::new(0)).collect(),
            changed: Notify::new(),
        }
    }

    /// Waits until `condition` holds.
    async fn until(&self, condition: impl Fn(&Burst) -> bool) {
        loop {
            // Made before the check, so that no change in between is missed.
            let changed = self.changed.notified();
            if condition(self) {
                return;
            }
            changed.await;
        }
    }

    /// Sender number `sender` sends its share, riding out outages.
    async fn send(&self, sender: (usize, &User), group_id: &GroupId) {
        let (index, user) = sender;
        for number in 0..BURST_PER_SENDER {
            let text = format!("{} {number}", user.user_id());
            let on_failure = || {
                self.failures[index].fetch_add(1, Ordering::SeqCst);
                self.changed.notify_waiters();
            };
            user.send_through_outages(group_id, &text, on_failure).await;
            self.accepted[index].fetch_add(1, Ordering::SeqCst);
            self.changed.notify_waiters();
        }
    }
}

async fn a_hub_restart_loses_and_duplicates_nothing(database: DatabaseChoice) {
    let mut network = TestNetwork::start(&THREE_DOMAINS, database).await;
    let (group_id, alice, bob, carol) = three_member_group(&network).await;
    let members = [&alice, &bob, &carol];

    // The hub stops once every sender is a third of the way through (so each
    // has plenty left to send into the outage), and starts again once every
    // sender has been turned away at least once.
    let burst = Burst::new(members.len());
    let restart_hub = async {
        burst
            .until(|burst| {
                let accepted = burst.accepted.iter();
                accepted
                    .map(|count| count.load(Ordering::SeqCst))
                    .all(|count| count >= BURST_PER_SENDER / 3)
            })
            .await;
        network.stop("a.example").await;
        burst
            .until(|burst| {
                let failures = burst.failures.iter();
                failures
                    .map(|count| count.load(Ordering::SeqCst))
                    .all(|count| count > 0)
            })
            .await;
        network.start_again("a.example").await;
    };
    tokio::join!(
        burst.send((0, &alice), &group_id),
        burst.send((1, &bob), &group_id),
        burst.send((2, &carol), &group_id),
        restart_hub,
    );

    // Everyone reads the same log, with every message once.
    let total = members.len() * BURST_PER_SENDER;
    for member in members {
        member
            .receive_until("the whole burst", |user| {
                user.history(&group_id).len() >= total
            })
            .await;
    }
    let log = alice.history(&group_id);
    assert!(
        log.windows(2).all(|pair| pair[0].0 < pair[1].0),
        "one log position each: {log:?}"
    );
    let mut texts: Vec<&str> = log.iter().map(|(_, _, text)| text.as_str()).collect();
    texts.sort();
    let mut sent: Vec<String> = members
        .iter()
        .flat_map(|member| {
            (0..BURST_PER_SENDER).map(move |number| format!("{} {number}", member.user_id()))
        })
        .collect();
    sent.sort();
    assert_eq!(texts, sent, "every message once");
    for member in [&bob, &carol] {
        assert_eq!(member.history(&group_id), log, "{}", member.user_id());
    }
}
