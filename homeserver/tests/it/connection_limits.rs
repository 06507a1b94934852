//! What one caller may hold of the server (`[limits]`): Subscribe streams per
//! device (a newer stream closes the oldest) and per connection (one more is
//! refused; a closed stream frees its place), the deadline of every call, and
//! the HTTP/2 settings of the listeners (streams per connection, header list
//! size, keepalive PINGs that close dead connections).

use crate::harness::{Api, assert_status, authorized, channel, within_timeout};
use conclave_homeserver::config::{Config, LimitsConfig};
use conclave_proto::client::v1 as proto;
use conclave_proto::client::v1::delivery_service_client::DeliveryServiceClient;
use conclave_test_support::{DatabaseChoice, TestHomeserver, TestOptions, eventually, within};
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

on_both_databases!(
    a_device_over_its_stream_limit_loses_its_oldest_stream,
    a_full_connection_refuses_a_stream_until_one_closes,
    a_call_blocked_past_its_deadline_ends_with_deadline_exceeded,
);

/// Longest wait for the server to notice a closed stream or a dead connection.
const NOTICE_TIMEOUT: Duration = Duration::from_secs(30);

/// A server on `database` with `[limits]` changed by `change`.
async fn start_with_limits(
    database: DatabaseChoice,
    change: impl FnOnce(&mut LimitsConfig) + Send + 'static,
) -> TestHomeserver {
    let options = TestOptions::on(database).configure(move |config: &mut Config| {
        change(&mut config.limits);
    });
    TestHomeserver::start_with(options).await
}

async fn subscribe(
    channel: &Channel,
    token: &str,
) -> Result<Streaming<proto::DeliveryEvent>, Status> {
    DeliveryServiceClient::new(channel.clone())
        .subscribe(authorized(token, proto::SubscribeRequest {}))
        .await
        .map(tonic::Response::into_inner)
}

/// The status that ends `stream` (a device with no events receives none first).
async fn ending_status(stream: &mut Streaming<proto::DeliveryEvent>) -> Status {
    within(NOTICE_TIMEOUT, "the stream to end", async {
        match stream.message().await {
            Err(status) => status,
            Ok(item) => panic!("expected the stream to end with a status, got {item:?}"),
        }
    })
    .await
}

async fn a_device_over_its_stream_limit_loses_its_oldest_stream(database: DatabaseChoice) {
    let server = start_with_limits(database, |limits| {
        limits.subscribe_streams_per_device = 2;
    })
    .await;
    let api = Api::connect(&server).await;
    let alice = api.register("alice").await;
    let channel = channel(&server).await;
    let mut first = subscribe(&channel, &alice.token)
        .await
        .expect("first stream");
    let mut second = subscribe(&channel, &alice.token)
        .await
        .expect("second stream");

    // A third stream opens (the device may be reconnecting while its old
    // streams are dead but not noticed yet), and the oldest one ends.
    let _third = subscribe(&channel, &alice.token)
        .await
        .expect("the newest stream is never refused for the device's limit");
    let status = ending_status(&mut first).await;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status
            .message()
            .contains("more than 2 Subscribe streams (limits.subscribe_streams_per_device)"),
        "{status:?}"
    );

    // The second is the oldest now: the next stream ends it, not the third.
    let _fourth = subscribe(&channel, &alice.token)
        .await
        .expect("fourth stream");
    let status = ending_status(&mut second).await;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    // Each closed stream is counted once, before its status is sent.
    assert_eq!(
        rejections(&server, "subscribe_streams_per_device").await,
        Some(2.0)
    );
}

/// `conclave_ratelimit_rejections_total{limit}` on the server's `/metrics`.
async fn rejections(server: &TestHomeserver, limit: &str) -> Option<f64> {
    let text = conclave_test_support::metrics::scrape_ok(server.http_address()).await;
    conclave_test_support::metrics::sample(
        &text,
        &format!("conclave_ratelimit_rejections_total{{limit=\"{limit}\"}}"),
    )
}

async fn a_full_connection_refuses_a_stream_until_one_closes(database: DatabaseChoice) {
    let server = start_with_limits(database, |limits| {
        limits.subscribe_streams_per_connection = 2;
    })
    .await;
    let api = Api::connect(&server).await;
    let alice = api.register("alice").await;
    let bob = api.register("bob").await;
    let carol = api.register("carol").await;
    // One channel is one HTTP/2 connection.
    let shared = channel(&server).await;
    let alice_stream = subscribe(&shared, &alice.token).await.expect("alice");
    let _bob_stream = subscribe(&shared, &bob.token).await.expect("bob");

    let refused = subscribe(&shared, &carol.token).await;
    assert_status(
        refused,
        Code::ResourceExhausted,
        "this connection already carries 2 Subscribe streams, the most allowed (limits.subscribe_streams_per_connection)",
    );
    assert_eq!(
        rejections(&server, "subscribe_streams_per_connection").await,
        Some(1.0)
    );
    // Another connection has places of its own.
    let _carol_elsewhere = subscribe(&channel(&server).await, &carol.token)
        .await
        .expect("a stream on another connection");

    // Alice's stream ends (the client cancels it); once the server has seen it
    // end, its place is free.
    drop(alice_stream);
    let _carol_stream = eventually(
        NOTICE_TIMEOUT,
        "the closed stream's place to be freed",
        || {
            let shared = shared.clone();
            let token = carol.token.clone();
            async move {
                match subscribe(&shared, &token).await {
                    Ok(stream) => Some(stream),
                    Err(status) if status.code() == Code::ResourceExhausted => None,
                    Err(status) => panic!("unexpected refusal: {status:?}"),
                }
            }
        },
    )
    .await;
}

/// A lock held by the test on the server's database, so that a call that
/// writes (SQLite) or touches the devices table (PostgreSQL) waits for it.
struct DatabaseLock(sea_orm::DatabaseConnection);

impl DatabaseLock {
    async fn take(url: &str) -> DatabaseLock {
        use sea_orm::ConnectionTrait as _;
        let mut options = sea_orm::ConnectOptions::new(url.to_owned());
        // One connection, so every statement below runs on the same one.
        options.max_connections(1).min_connections(1);
        let connection = sea_orm::Database::connect(options)
            .await
            .expect("connecting to the test database");
        let statements: &[&str] = if url.starts_with("sqlite:") {
            // The write lock: readers go on (WAL), writers wait.
            &["BEGIN IMMEDIATE"]
        } else {
            &["BEGIN", "LOCK TABLE devices IN ACCESS EXCLUSIVE MODE"]
        };
        for statement in statements {
            connection
                .execute_unprepared(statement)
                .await
                .unwrap_or_else(|error| panic!("{statement}: {error}"));
        }
        DatabaseLock(connection)
    }

    async fn release(self) {
        use sea_orm::ConnectionTrait as _;
        self.0
            .execute_unprepared("ROLLBACK")
            .await
            .expect("releasing the lock");
        self.0.close().await.expect("closing the lock's connection");
    }
}

async fn a_call_blocked_past_its_deadline_ends_with_deadline_exceeded(database: DatabaseChoice) {
    let server = start_with_limits(database, |limits| limits.call_deadline_seconds = 1).await;
    let api = Api::connect(&server).await;
    let alice = api.register("alice").await;
    let bob = api.register("bob").await;

    // Logout removes the device: it waits for the lock longer than its deadline
    // (SQLite's busy timeout is 10 s, PostgreSQL waits for as long as it takes).
    let lock = DatabaseLock::take(&server.config().database.url).await;
    assert_status(
        api.logout(&alice.token).await,
        Code::DeadlineExceeded,
        "the call was not answered within its deadline of 1000 ms (limits.call_deadline_seconds",
    );
    lock.release().await;

    // The server serves again once the lock is gone.
    api.who_am_i(&bob.token)
        .await
        .expect("a call after the lock was released");
}

/// A server on SQLite with `[limits]` changed by `change`, for what does not
/// depend on the database.
async fn start_on_sqlite(
    change: impl FnOnce(&mut LimitsConfig) + Send + 'static,
) -> TestHomeserver {
    start_with_limits(DatabaseChoice::Sqlite, change).await
}

#[tokio::test]
async fn the_listener_announces_its_stream_limit() {
    within_timeout(async {
        let server = start_on_sqlite(|limits| {
            limits.http2_max_concurrent_streams = 7;
            limits.subscribe_streams_per_connection = 6;
        })
        .await;
        let tcp = TcpStream::connect(server.client_address())
            .await
            .expect("connecting");
        let (send_request, connection) = h2::client::handshake(tcp).await.expect("handshake");
        tokio::spawn(async move {
            let _ = connection.await;
        });
        // Any answer comes after the server's SETTINGS, which the client has
        // applied by then.
        let request = http::Request::post(format!(
            "http://{}/grpc.health.v1.Health/Check",
            server.client_address()
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("a request");
        let mut ready = send_request.clone().ready().await.expect("ready");
        let (response, _) = ready.send_request(request, true).expect("sending");
        response.await.expect("an answer");
        assert_eq!(send_request.current_max_send_streams(), 7);
    })
    .await;
}

#[tokio::test]
async fn request_headers_over_the_limit_are_refused() {
    within_timeout(async {
        // The default limit, 8 KiB (hyper's own would be 16 KiB).
        let server = start_on_sqlite(|_| {}).await;
        let mut health = HealthClient::new(channel(&server).await);
        let check = |padding: usize| {
            let mut request = tonic::Request::new(HealthCheckRequest {
                service: String::new(),
            });
            let value = MetadataValue::try_from("x".repeat(padding)).expect("ASCII");
            request.metadata_mut().insert("x-padding", value);
            request
        };
        health
            .check(check(6 * 1024))
            .await
            .expect("headers within the limit");
        let refused = health.check(check(12 * 1024)).await;
        assert!(refused.is_err(), "12 KiB of headers passed: {refused:?}");
        // The connection is still good for calls within the limit.
        health
            .check(check(1024))
            .await
            .expect("headers within the limit, again");
    })
    .await;
}

/// HTTP/2 frame types, as they appear in a frame's header.
const FRAME_PING: u8 = 6;
/// The client connection preface and an empty SETTINGS frame.
const CLIENT_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const EMPTY_SETTINGS: [u8; 9] = [0, 0, 0, 4, 0, 0, 0, 0, 0];

#[tokio::test]
async fn a_connection_that_does_not_answer_pings_is_closed() {
    within_timeout(async {
        let server = start_on_sqlite(|limits| {
            limits.http2_keepalive_interval_seconds = 1;
            limits.http2_keepalive_timeout_seconds = 1;
        })
        .await;
        // A peer that opened a connection and went silent: it never answers
        // anything, PINGs included.
        let mut tcp = TcpStream::connect(server.client_address())
            .await
            .expect("connecting");
        tcp.write_all(CLIENT_PREFACE).await.expect("preface");
        tcp.write_all(&EMPTY_SETTINGS).await.expect("settings");
        let received = within(
            NOTICE_TIMEOUT,
            "the server to close the connection",
            async {
                let mut received = Vec::new();
                // Ends when the server closes the connection (or resets it).
                let _ = tcp.read_to_end(&mut received).await;
                received
            },
        )
        .await;
        assert!(
            frame_types(&received).contains(&FRAME_PING),
            "the server sent no PING before closing: {:?}",
            frame_types(&received)
        );
    })
    .await;
}

/// The types of the HTTP/2 frames in `bytes`, in order.
fn frame_types(mut bytes: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    while bytes.len() >= 9 {
        let length =
            usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]);
        types.push(bytes[3]);
        bytes = &bytes[(9 + length).min(bytes.len())..];
    }
    types
}
