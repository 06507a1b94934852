//! A replica killed with SIGKILL while clients spread over two replicas of one
//! domain (separate processes of the real binary on one PostgreSQL database)
//! send 1,000 messages to one group: every message a sender's client got
//! acknowledged, or kept and sent again after the failure until it was, is
//! delivered to every receiver exactly once, in the hub's order, which is the
//! same for all and keeps each sender's own order.
//!
//! How clients reach the survivor: each client knows one server URL, a
//! `TestBalancer` (a TCP load balancer, as operators put in front of a
//! cluster) that forwards each new connection to the first replica that
//! accepts it. alice and carol go through one that prefers replica 0, bob and
//! dave through one that prefers replica 1. When replica 1 dies, bob's and
//! dave's connections break; their clients reconnect, and the balancer
//! forwards the new connection to replica 0. The client library itself is
//! given no second endpoint: that is what the balancer does here, explicitly,
//! in the test.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use conclave_client::GroupId;
use conclave_test_support::{ClusterOptions, TestBalancer, TestCluster};
use tokio::sync::watch;

use crate::harness::{Logged, User, group_of, logged};

/// Messages each of the two senders sends.
const MESSAGES_PER_SENDER: usize = 500;

/// Messages acknowledged (of both senders) before replica 1 is killed.
const KILL_AFTER: usize = 300;

/// Longest the whole test may take.
const TEST_TIMEOUT: Duration = Duration::from_secs(600);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_burst_loses_and_doubles_nothing() {
    conclave_test_support::init_logging();
    conclave_test_support::within(TEST_TIMEOUT, "the burst through a crash", async {
        let cluster = TestCluster::start(ClusterOptions::replicas(2).with_redis()).await;
        let (first, second) = (cluster.client_address(0), cluster.client_address(1));
        let to_first = TestBalancer::start(vec![first, second]).await;
        let to_second = TestBalancer::start(vec![second, first]).await;
        let alice = User::register_at(&to_first.url(), "alice@localhost").await;
        let carol = User::register_at(&to_first.url(), "carol@localhost").await;
        let bob = User::register_at(&to_second.url(), "bob@localhost").await;
        let dave = User::register_at(&to_second.url(), "dave@localhost").await;
        let group_id = group_of(&alice, "through a crash", &[&bob, &carol, &dave]).await;

        let (acknowledged, _) = watch::channel(0usize);
        let failures = AtomicUsize::new(0);
        let started = Instant::now();
        let kill = async {
            let mut count = acknowledged.subscribe();
            count
                .wait_for(|count| *count >= KILL_AFTER)
                .await
                .expect("the senders hold the channel");
            cluster.kill(1).await;
            eprintln!("replica 1 killed after {} acknowledged messages", *acknowledged.borrow());
        };
        let total = 2 * MESSAGES_PER_SENDER;
        let (_, _, _, by_carol, by_dave) = tokio::join!(
            send_all(&alice, "alice", &group_id, &acknowledged, &failures),
            send_all(&bob, "bob", &group_id, &acknowledged, &failures),
            kill,
            receive_all(&carol, &group_id, total),
            receive_all(&dave, &group_id, total),
        );
        eprintln!(
            "{total} messages sent and received in {:.1} s; {} sends failed with the replica and were sent again",
            started.elapsed().as_secs_f64(),
            failures.load(Ordering::Relaxed)
        );

        assert_once_in_order(&by_carol, total);
        assert_eq!(by_carol, by_dave, "carol and dave got the same messages in the same order");
        // The senders' histories (their own messages and the other's) agree.
        for sender in [&alice, &bob] {
            sender
                .receive_until("the whole burst", |user| user.history(&group_id).len() == total)
                .await;
            assert_eq!(sender.history(&group_id), by_carol, "{}'s history", sender.user_id());
        }
    })
    .await;
}

/// `user` sends `MESSAGES_PER_SENDER` messages `"{name} {number}"`, each
/// until the hub has it (sent again after a failure; see
/// `User::send_through_outages`), counting the acknowledged ones and the
/// failures.
async fn send_all(
    user: &User,
    name: &str,
    group_id: &GroupId,
    acknowledged: &watch::Sender<usize>,
    failures: &AtomicUsize,
) {
    for number in 0..MESSAGES_PER_SENDER {
        let text = format!("{name} {number}");
        user.send_through_outages(group_id, &text, || {
            failures.fetch_add(1, Ordering::Relaxed);
        })
        .await;
        acknowledged.send_modify(|count| *count += 1);
    }
}

/// The next `count` messages of the group at `receiver`, from one listener
/// (its Subscribe stream, reconnecting when it breaks), in the order received.
async fn receive_all(receiver: &User, group_id: &GroupId, count: usize) -> Vec<Logged> {
    let mut listener = receiver.client.listen(Some(group_id.clone()));
    let mut received = Vec::with_capacity(count);
    while received.len() < count {
        let message = listener
            .next()
            .await
            .unwrap_or_else(|error| panic!("{} listening: {error}", receiver.user_id()));
        received.push(logged(&message));
    }
    received
}

/// `received` holds `total` messages, each once, in strictly increasing log
/// order, and each sender's in the order it sent them.
#[track_caller]
fn assert_once_in_order(received: &[Logged], total: usize) {
    assert_eq!(received.len(), total);
    let texts: BTreeSet<&str> = received.iter().map(|(_, _, text)| text.as_str()).collect();
    assert_eq!(texts.len(), total, "every message once");
    for pair in received.windows(2) {
        assert!(pair[0].0 < pair[1].0, "log order: {pair:?}");
    }
    for sender in ["alice", "bob"] {
        let numbers: Vec<usize> = received
            .iter()
            .filter_map(|(_, _, text)| text.strip_prefix(sender)?.trim().parse().ok())
            .collect();
        let expected: Vec<usize> = (0..MESSAGES_PER_SENDER).collect();
        assert_eq!(
            numbers, expected,
            "{sender}'s messages, each once, in the order sent"
        );
    }
}
