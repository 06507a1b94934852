//! Wake-ups across replicas of one domain, each a process of the real binary
//! on one PostgreSQL database and a private Redis (`TestCluster`): a message
//! sent through one replica reaches a device streaming from another; delivery
//! goes on while Redis is down (each replica's resync re-reads the database
//! every `redis.poll_interval_ms`) and is instant again once it is back.
//!
//! "Through Redis" is shown without timing: a replica whose resync interval is
//! the longest allowed (a minute), started or restarted just before it is
//! needed, learns of an event within the test only through a Redis wake-up.
//! The wake-up latency is measured by `conclave-bench --part cluster`
//! (BENCHMARKS.md), never asserted here.

use std::net::SocketAddr;
use std::time::Duration;

use conclave_client::Listener;
use conclave_test_support::{ClusterOptions, TestCluster, eventually};

use crate::harness::{User, group_of, logged, within_timeout};

/// `redis.poll_interval_ms`'s maximum (see the module's comment).
const LONG_POLL: &str = "poll_interval_ms = 60000";
/// A short resync interval, for a replica that must deliver while Redis is down.
const SHORT_POLL: &str = "poll_interval_ms = 200";
/// The clusters' key prefix, to find their wake-up channel in Redis.
const KEY_PREFIX: &str = "wakeups-test";
/// Longest wait for replicas to notice Redis going and coming back.
const REDIS_TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_sent_through_one_replica_is_streamed_from_another() {
    within_timeout(async {
        let mut cluster = start_cluster(2, LONG_POLL).await;
        all_subscribed(&mut cluster, 2).await;
        let alice = User::register_at(&cluster.client_url(0), "alice@localhost").await;
        let bob = User::register_at(&cluster.client_url(1), "bob@localhost").await;
        let group_id = group_of(&alice, "across replicas", &[&bob]).await;

        let mut listener = bob.client.listen(Some(group_id.clone()));
        for number in 0..10 {
            let text = format!("message {number}");
            let sent = alice.send(&group_id, &text).await;
            let message = listener.next().await.expect("bob listening on replica 1");
            let (seq, sender, received) = logged(&message);
            assert_eq!((seq, received.as_str()), (sent.seq, text.as_str()));
            assert_eq!(sender, alice.identity());
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_goes_on_through_a_redis_outage_and_is_instant_again_after_it() {
    within_timeout(async {
        // Replica 0 takes alice's messages; replica 1 resyncs often (bob);
        // replica 2 only through Redis (carol).
        let mut cluster = start_cluster(3, SHORT_POLL).await;
        let alice = User::register_at(&cluster.client_url(0), "alice@localhost").await;
        let bob = User::register_at(&cluster.client_url(1), "bob@localhost").await;
        let carol = User::register_at(&cluster.client_url(2), "carol@localhost").await;
        let group_id = group_of(&alice, "through an outage", &[&bob, &carol]).await;
        // Replica 2 again with the long interval, from now on: its next look
        // comes long after this test.
        cluster.terminate(2).await;
        let config_path = cluster.config_path(2);
        let config = std::fs::read_to_string(&config_path).expect("replica 2's configuration");
        assert!(config.contains(SHORT_POLL), "{config}");
        std::fs::write(&config_path, config.replace(SHORT_POLL, LONG_POLL))
            .expect("rewriting replica 2's configuration");
        cluster.restart(2).await;
        all_subscribed(&mut cluster, 3).await;

        let mut bob_listener = bob.client.listen(Some(group_id.clone()));
        let mut carol_listener = carol.client.listen(Some(group_id.clone()));
        let one = alice.send(&group_id, "one").await;
        expect(&mut bob_listener, one.seq).await;
        expect(&mut carol_listener, one.seq).await;

        cluster.redis().stop();
        for replica in 0..3 {
            redis_is(&cluster, replica, "down").await;
            assert!(
                cluster.is_ready(replica).await,
                "replica {replica} stays ready while Redis is down"
            );
        }
        // Replica 0's wake-up is lost with Redis; replica 1's resync finds it.
        let two = alice.send(&group_id, "two").await;
        expect(&mut bob_listener, two.seq).await;

        cluster.redis().start_again().await;
        // Every replica connected and subscribed again on its own.
        all_subscribed(&mut cluster, 3).await;
        for replica in 0..3 {
            redis_is(&cluster, replica, "up").await;
        }
        // "three" (and "two", which carol's stream has not seen) reaches
        // carol only through a Redis wake-up: replica 2 does not resync yet.
        let three = alice.send(&group_id, "three").await;
        expect(&mut carol_listener, two.seq).await;
        expect(&mut carol_listener, three.seq).await;
        expect(&mut bob_listener, three.seq).await;
    })
    .await;
}

/// A cluster of `replicas` with Redis, the key prefix [`KEY_PREFIX`] and the
/// resync interval `poll` (a `poll_interval_ms = N` line).
async fn start_cluster(replicas: usize, poll: &str) -> TestCluster {
    let redis = format!("[redis]\nkey_prefix = \"{KEY_PREFIX}\"\n{poll}");
    TestCluster::start(
        ClusterOptions::replicas(replicas)
            .with_redis()
            .config(&redis),
    )
    .await
}

/// Waits until `replicas` connections listen on the wake-up channel.
async fn all_subscribed(cluster: &mut TestCluster, replicas: u64) {
    let channel = format!("{KEY_PREFIX}:wakeups");
    let redis = cluster.redis();
    eventually(
        REDIS_TIMEOUT,
        "every replica subscribing to wake-ups",
        || async { (redis.subscribers(&channel).await == Some(replicas)).then_some(()) },
    )
    .await;
}

/// Waits until replica `index`'s `/healthz` says Redis is `state`.
async fn redis_is(cluster: &TestCluster, index: usize, state: &str) {
    let expected = format!("\"redis\":\"{state}\"");
    let address = cluster.http_address(index);
    eventually(
        REDIS_TIMEOUT,
        &format!("replica {index} seeing Redis {state}"),
        || async {
            http_get(address, "/healthz")
                .await
                .is_some_and(|body| body.contains(&expected))
                .then_some(())
        },
    )
    .await;
}

/// The body of a 200 answer to a minimal HTTP/1.1 GET; `None` otherwise.
async fn http_get(address: SocketAddr, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(address).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
}

/// Waits for the listener's next message, which must be the one at `seq`.
async fn expect(listener: &mut Listener<'_>, seq: u64) {
    let message = listener.next().await.expect("listening");
    assert_eq!(message.seq, seq, "{message:?}");
}
