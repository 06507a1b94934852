//! A rolling restart: the three replicas of one domain (processes of the real
//! binary on one PostgreSQL database) are stopped with SIGTERM and started
//! again one by one, each waited for until ready, while alice, bob and carol,
//! each starting on a replica of their own, chat in one group. Every client
//! knows all three replicas' addresses: when its replica shuts down, its
//! Subscribe stream ends with UNAVAILABLE and its sends fail over to the next
//! address. Afterwards each of them has received every message of the other
//! two exactly once, in the hub's order, which is the same for all.
//!
//! Each receiver listens live while the chat goes on and, once it is over,
//! fetches whatever is left: the check is on the union, so it holds whether a
//! message arrived by a wake-up, by the catch-up after a reconnection, or by
//! the last fetch. Wake-ups across replicas come through Redis (the cluster's
//! notifier); where a replica is not woken, a message waits for the next
//! catch-up, never lost or doubled.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use conclave_client::{ConnectionNotice, GroupId};
use conclave_test_support::{ClusterOptions, TestCluster};
use tokio::sync::watch;

use crate::harness::{Logged, User, group_of, logged, parse_url};

/// Each sender sends at least this many messages, and goes on until every
/// replica was restarted.
const MIN_MESSAGES_PER_SENDER: usize = 30;

/// Messages acknowledged (of all senders) before the first replica stops, and
/// again after each restart before the next stops: the chat goes on through
/// every one.
const MESSAGES_BETWEEN_RESTARTS: usize = 10;

/// Longest the whole test may take.
const TEST_TIMEOUT: Duration = Duration::from_secs(600);

/// The three users, each registered on the replica of its index.
const SENDERS: [&str; 3] = ["alice", "bob", "carol"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_loses_and_doubles_nothing() {
    conclave_test_support::init_logging();
    conclave_test_support::within(TEST_TIMEOUT, "the chat through a rolling restart", async {
        let cluster = TestCluster::start(ClusterOptions::replicas(3).with_redis()).await;
        let urls: Vec<String> = (0..3).map(|index| cluster.client_url(index)).collect();
        let mut users = Vec::new();
        for (index, name) in SENDERS.iter().enumerate() {
            let user = User::register_at(&urls[index], &format!("{name}@localhost")).await;
            user.client
                .set_server_endpoints(urls.iter().map(|url| parse_url(url)).collect());
            users.push(user);
        }
        let [alice, bob, carol] = &users[..] else {
            unreachable!("three users")
        };
        let group_id = group_of(alice, "rolling", &[bob, carol]).await;

        let (acknowledged, _) = watch::channel(0usize);
        let (restarted, _) = watch::channel(false);
        let (over, _) = watch::channel(false);
        let started = Instant::now();
        let restart_all = async {
            let mut count = acknowledged.subscribe();
            for index in 0..3 {
                let before = *count.borrow();
                count
                    .wait_for(|count| *count >= before + MESSAGES_BETWEEN_RESTARTS)
                    .await
                    .expect("the senders hold the channel");
                let status = cluster.terminate(index).await;
                assert!(
                    status.success(),
                    "replica {index} did not stop cleanly ({status}):\n{}",
                    cluster.log_tail(index)
                );
                cluster.restart(index).await;
                eprintln!(
                    "replica {index} restarted after {:.1} s, {} messages acknowledged",
                    started.elapsed().as_secs_f64(),
                    *count.borrow()
                );
            }
            restarted.send_replace(true);
        };
        let chatting = async {
            let (_, by_alice, by_bob, by_carol) = tokio::join!(
                restart_all,
                chat(
                    alice,
                    "alice",
                    &group_id,
                    &acknowledged,
                    restarted.subscribe()
                ),
                chat(bob, "bob", &group_id, &acknowledged, restarted.subscribe()),
                chat(
                    carol,
                    "carol",
                    &group_id,
                    &acknowledged,
                    restarted.subscribe()
                ),
            );
            over.send_replace(true);
            BTreeMap::from([("alice", by_alice), ("bob", by_bob), ("carol", by_carol)])
        };
        let (sent, live_alice, live_bob, live_carol) = tokio::join!(
            chatting,
            listen(alice, &group_id, over.subscribe()),
            listen(bob, &group_id, over.subscribe()),
            listen(carol, &group_id, over.subscribe()),
        );
        let total: usize = sent.values().sum();
        let live = [live_alice, live_bob, live_carol];
        eprintln!(
            "{total} messages ({sent:?}) in {:.1} s through three restarts; received live: {:?}",
            started.elapsed().as_secs_f64(),
            live.iter()
                .map(|(received, _)| received.len())
                .collect::<Vec<_>>()
        );

        let mut histories = Vec::new();
        for (user, (live, notices)) in users.iter().zip(live) {
            // Whatever did not arrive live is fetched now.
            user.receive().await;
            let mut received = live;
            while let Some(message) = user.client.take_unread(Some(&group_id)).unwrap() {
                received.push(logged(&message));
            }
            let me = user.user_id().to_string();
            assert_each_once_in_order(&received, &sent, &me);
            // Not asserted: a listener may reconnect without a notice (a
            // stream its replica ended without a status, because the
            // listener was busy applying and its buffer was full).
            eprintln!("{me}'s listener: {notices:?}");
            // The device's history (its own messages and the others') is
            // the hub's log.
            let history = user.history(&group_id);
            assert_eq!(history.len(), total, "{me}'s history");
            histories.push(history);
        }
        assert!(
            histories.windows(2).all(|pair| pair[0] == pair[1]),
            "every member has the same log"
        );
    })
    .await;
}

/// `user` sends `"{name} {number}"` until every replica was restarted and at
/// least [`MIN_MESSAGES_PER_SENDER`] were sent, each until the hub has it;
/// returns how many it sent.
async fn chat(
    user: &User,
    name: &str,
    group_id: &GroupId,
    acknowledged: &watch::Sender<usize>,
    restarted: watch::Receiver<bool>,
) -> usize {
    let mut number = 0;
    while number < MIN_MESSAGES_PER_SENDER || !*restarted.borrow() {
        user.send_through_outages(group_id, &format!("{name} {number}"), || {})
            .await;
        acknowledged.send_modify(|count| *count += 1);
        number += 1;
    }
    number
}

/// `user`'s listener, live, until the chat is `over`: the messages it handed
/// out, and the connection changes it reported. Stopping it loses nothing:
/// what it did not hand out stays unread, for the final fetch.
async fn listen(
    user: &User,
    group_id: &GroupId,
    mut over: watch::Receiver<bool>,
) -> (Vec<Logged>, Vec<ConnectionNotice>) {
    let notices = Arc::new(Mutex::new(Vec::new()));
    let recorded = notices.clone();
    let mut listener = user
        .client
        .listen(Some(group_id.clone()))
        .on_connection_change(move |notice| recorded.lock().unwrap().push(notice));
    let mut received = Vec::new();
    loop {
        tokio::select! {
            message = listener.next() => {
                let message = message
                    .unwrap_or_else(|error| panic!("{} listening: {error}", user.user_id()));
                received.push(logged(&message));
            }
            _ = over.wait_for(|over| *over) => break,
        }
    }
    drop(listener);
    let notices = notices.lock().unwrap().clone();
    (received, notices)
}

/// `received` (at `receiver`) holds the messages of every other sender, each
/// once, in strictly increasing log order, each sender's in the order sent.
#[track_caller]
fn assert_each_once_in_order(received: &[Logged], sent: &BTreeMap<&str, usize>, receiver: &str) {
    for pair in received.windows(2) {
        assert!(pair[0].0 < pair[1].0, "{receiver}: log order: {pair:?}");
    }
    let mut expected_total = 0;
    for (sender, count) in sent {
        if receiver.starts_with(&format!("{sender}@")) {
            continue;
        }
        expected_total += count;
        let numbers: Vec<usize> = received
            .iter()
            .filter_map(|(_, _, text)| text.strip_prefix(sender)?.trim().parse().ok())
            .collect();
        let expected: Vec<usize> = (0..*count).collect();
        assert_eq!(
            numbers, expected,
            "{receiver} got {sender}'s messages: each once, in the order sent"
        );
    }
    assert_eq!(received.len(), expected_total, "{receiver}: nothing else");
}
