//! Replicas of one domain in this process, on one PostgreSQL database and a
//! private `redis-server`: a wake-up crosses replicas through Redis, and
//! delivery goes on through a Redis outage (the resync) and is instant again
//! once Redis is back (re-subscription). Each test proves "through Redis"
//! without timing: the receiving replica's resync interval is the longest the
//! configuration allows (a minute), and the replica starts just before it is
//! needed, so within the few seconds the test takes after that nothing but a
//! Redis wake-up can wake it.

use crate::groups_harness::{Client, form_group, texts};
use crate::harness::{channel, within_timeout};
use conclave_proto::client::v1 as proto;
use conclave_proto::client::v1::delivery_event::Event;
use conclave_test_support::{DatabaseChoice, TestHomeserver, TestOptions, TestRedis, eventually};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The longest resync interval (`redis.poll_interval_ms`'s maximum): a replica
/// configured so and started just before use is woken by Redis or not at all
/// while the test runs. Its first look is at its start, when nothing waits.
const NEVER_MS: u64 = 60_000;
/// A short resync interval, for a replica that must deliver while Redis is down.
const SHORT_MS: u64 = 200;
/// Longest wait for Redis and the replicas to (re)connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_message_sent_through_one_replica_is_streamed_from_another() {
    within_timeout(async {
        let redis = TestRedis::start().await;
        let a = start_first_replica(&redis, NEVER_MS).await;
        let mut alice = Client::register(&channel(&a).await, "alice").await;
        let mut bob = Client::register(&channel(&a).await, "bob").await;
        form_group(&mut alice, &mut [&mut bob]).await;
        // Bob streams from B, started now (see NEVER_MS).
        let b = a
            .start_replica(|config| config.redis.poll_interval_ms = NEVER_MS)
            .await;
        all_subscribed(&redis, 2).await;
        bob.reconnect(&channel(&b).await);
        let mut stream = bob.subscribe().await;
        for text in ["one", "two", "three"] {
            let sent = alice.send(text).await;
            let event = stream.next_group_event().await;
            assert_eq!(event.seq, sent.seq, "{text}");
            bob.handle(group_event(event));
        }
        assert_eq!(texts(&bob.received), ["one", "two", "three"]);
        drop(stream);
        b.stop().await;
        a.stop().await;
    })
    .await;
}

#[tokio::test]
async fn delivery_goes_on_through_a_redis_outage_and_is_instant_again_after_it() {
    within_timeout(async {
        let mut redis = TestRedis::start().await;
        // A takes the submissions; B resyncs often (delivery while Redis is
        // down); C only ever learns of an event through Redis.
        let a = start_first_replica(&redis, NEVER_MS).await;
        let b = a
            .start_replica(|config| config.redis.poll_interval_ms = SHORT_MS)
            .await;
        let mut alice = Client::register(&channel(&a).await, "alice").await;
        let mut bob = Client::register(&channel(&b).await, "bob").await;
        let mut carol = Client::register(&channel(&a).await, "carol").await;
        form_group(&mut alice, &mut [&mut bob, &mut carol]).await;
        let mut bob_stream = bob.subscribe().await;
        // Carol streams from C, started now so that its next resync comes long
        // after the test.
        let c = a
            .start_replica(|config| config.redis.poll_interval_ms = NEVER_MS)
            .await;
        all_subscribed(&redis, 3).await;
        carol.reconnect(&channel(&c).await);
        let mut carol_stream = carol.subscribe().await;
        let one = alice.send("one").await;
        assert_eq!(bob_stream.next_group_event().await.seq, one.seq);
        assert_eq!(carol_stream.next_group_event().await.seq, one.seq);

        redis.stop();
        for replica in [&a, &b, &c] {
            redis_is(replica, "down").await;
            assert_eq!(
                http_get(replica.http_address(), "/readyz").await.0,
                200,
                "a replica stays ready while Redis is down"
            );
        }
        // A's wake-up is lost with Redis; B's resync finds the event.
        let two = alice.send("two").await;
        assert_eq!(bob_stream.next_group_event().await.seq, two.seq);

        redis.start_again().await;
        // Every replica re-connected and re-subscribed on its own.
        all_subscribed(&redis, 3).await;
        for replica in [&a, &b, &c] {
            redis_is(replica, "up").await;
        }
        // C's resync sleeps for a minute: "three" (and "two", which C's stream
        // has not seen) can only reach Carol through a Redis wake-up.
        let three = alice.send("three").await;
        assert_eq!(carol_stream.next_group_event().await.seq, two.seq);
        assert_eq!(carol_stream.next_group_event().await.seq, three.seq);
        assert_eq!(bob_stream.next_group_event().await.seq, three.seq);

        drop((bob_stream, carol_stream));
        c.stop().await;
        b.stop().await;
        a.stop().await;
    })
    .await;
}

/// A replica on a fresh PostgreSQL database (cluster mode needs it), in
/// cluster mode on `redis`.
async fn start_first_replica(redis: &TestRedis, poll_interval_ms: u64) -> TestHomeserver {
    let url = redis.url();
    TestHomeserver::start_with(
        TestOptions::on(DatabaseChoice::Postgres).configure(move |config| {
            config.redis.url = Some(url);
            config.redis.poll_interval_ms = poll_interval_ms;
        }),
    )
    .await
}

/// Waits until `replicas` connections are subscribed to the wake-up channel.
async fn all_subscribed(redis: &TestRedis, replicas: u64) {
    eventually(
        CONNECT_TIMEOUT,
        "every replica subscribing to its wake-ups",
        || async { (redis.subscribers("conclave:wakeups").await == Some(replicas)).then_some(()) },
    )
    .await;
}

/// Waits until the replica's `/healthz` reports Redis `state` ("up" or "down").
async fn redis_is(replica: &TestHomeserver, state: &str) {
    let expected = format!("\"redis\":\"{state}\"");
    eventually(
        CONNECT_TIMEOUT,
        &format!("/healthz showing Redis {state}"),
        || {
            let expected = expected.clone();
            async move {
                let (status, body) = http_get(replica.http_address(), "/healthz").await;
                (status == 200 && body.contains(&expected)).then_some(())
            }
        },
    )
    .await;
}

/// A minimal HTTP/1.1 GET: the status code and the body.
async fn http_get(address: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect to the HTTP endpoint");
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("receive");
    let status = response
        .lines()
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or_default();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn group_event(event: proto::GroupEvent) -> proto::DeliveryEvent {
    proto::DeliveryEvent {
        event: Some(Event::GroupEvent(event)),
    }
}
