//! What `/metrics` says about the hub and the gRPC listeners, read the way
//! Prometheus reads it: commit conflicts counted once per loser, accepted
//! messages by kind (a retried submission once), every call by its status code
//! (garbage paths under one `unknown` series), Subscribe streams open now, the
//! delivery lag of every event handed to a stream, the federation listener's
//! calls, and a server with metrics off.

use crate::groups_harness::{Change, Client, EVENT_TIMEOUT, form_group, start_with_clients};
use crate::harness::{Api, channel, key_packages, last_resort_key_package, within_timeout};
use crate::shutdown::hold_a_call;
use conclave_proto::client::v1 as proto;
use conclave_proto::client::v1::group_service_client::GroupServiceClient;
use conclave_test_support::metrics::{sample, scrape, scrape_ok, sum};
use conclave_test_support::{
    DatabaseChoice, TableLock, TestHomeserver, TestNetwork, TestOptions, eventually, within,
};
use std::net::SocketAddr;
use std::time::Duration;
use tonic::Code;

on_both_databases!(
    a_commit_race_counts_each_loser_once,
    accepted_messages_count_by_kind_and_a_retry_once,
    calls_count_by_status_code,
    subscribe_streams_and_delivery_lag_follow_the_streams,
);

/// How many commits race for one epoch.
const RACERS: usize = 5;

const CLIENT_GROUPS: &str = "conclave.client.v1.GroupService";
const CLIENT_DELIVERY: &str = "conclave.client.v1.DeliveryService";
const FEDERATION: &str = "conclave.federation.v1.FederationService";

/// `conclave_grpc_requests_total` of one method and code in `text`.
fn calls(text: &str, service: &str, method: &str, code: &str) -> f64 {
    sample(
        text,
        &format!(
            "conclave_grpc_requests_total{{service=\"{service}\",method=\"{method}\",code=\"{code}\"}}"
        ),
    )
    .unwrap_or(0.0)
}

fn accepted(text: &str, kind: &str) -> f64 {
    sample(
        text,
        &format!("conclave_messages_accepted_total{{kind=\"{kind}\"}}"),
    )
    .unwrap_or(0.0)
}

fn conflicts(text: &str) -> f64 {
    sample(text, "conclave_commit_conflicts_total").expect("the counter is always rendered")
}

fn open_streams(text: &str) -> f64 {
    sample(text, "conclave_subscribe_streams").expect("the gauge is always rendered")
}

fn lag_count(text: &str) -> f64 {
    sample(text, "conclave_delivery_lag_seconds_count").expect("the histogram is always rendered")
}

/// Scrapes `address` until `read` of the text is `expected` (the counts move
/// right after the event a test waits for, in another task); fails the test
/// if it never is.
async fn wait_for(address: SocketAddr, what: &str, read: impl Fn(&str) -> f64, expected: f64) {
    let what = format!("{what} to reach {expected}");
    eventually(EVENT_TIMEOUT, &what, || async {
        (read(&scrape_ok(address).await) == expected).then_some(())
    })
    .await;
}

async fn a_commit_race_counts_each_loser_once(database: DatabaseChoice) {
    let (server, _, [mut alice, mut bob]) = start_with_clients(database, ["alice", "bob"]).await;
    let address = server.http_address();
    form_group(&mut alice, &mut [&mut bob]).await;
    // A proposal for epoch 1, sent once that epoch has ended: refused like a
    // commit that lost, but not a commit conflict.
    let late_proposal = bob.propose_self_update();
    let late_proposal = bob.proposal_request(late_proposal);
    bob.forget_proposals();
    let before = scrape_ok(address).await;

    let mut requests = Vec::new();
    for _ in 0..RACERS {
        let commit = alice.stage(Change::SelfUpdate);
        alice.discard();
        requests.push(alice.commit_request(&commit));
    }
    let mut losers = 0;
    for answer in alice.sender().race_commits(requests).await {
        if let Err(status) = answer {
            assert_eq!(status.code(), Code::Aborted, "{status:?}");
            losers += 1;
        }
    }
    assert_eq!(losers, RACERS - 1, "exactly one commit wins");
    let status = bob
        .try_submit_proposal(late_proposal)
        .await
        .expect_err("the proposal's epoch has ended");
    assert_eq!(status.code(), Code::Aborted, "{status:?}");

    let losers = losers as f64;
    let expected = conflicts(&before) + losers;
    wait_for(address, "commit conflicts", conflicts, expected).await;
    let after = scrape_ok(address).await;
    assert_eq!(
        accepted(&after, "commit"),
        accepted(&before, "commit") + 1.0
    );
    assert_eq!(
        calls(&after, CLIENT_GROUPS, "SubmitCommit", "ABORTED"),
        calls(&before, CLIENT_GROUPS, "SubmitCommit", "ABORTED") + losers
    );
    assert_eq!(
        calls(&after, CLIENT_GROUPS, "SubmitCommit", "OK"),
        calls(&before, CLIENT_GROUPS, "SubmitCommit", "OK") + 1.0
    );
    assert_eq!(
        calls(&after, CLIENT_GROUPS, "SubmitProposal", "ABORTED"),
        calls(&before, CLIENT_GROUPS, "SubmitProposal", "ABORTED") + 1.0
    );
}

async fn accepted_messages_count_by_kind_and_a_retry_once(database: DatabaseChoice) {
    let (server, _, [mut alice, mut bob]) = start_with_clients(database, ["alice", "bob"]).await;
    let address = server.http_address();
    form_group(&mut alice, &mut [&mut bob]).await;
    let before = scrape_ok(address).await;

    alice.send("one").await;
    bob.send("two").await;
    // The same submission twice (a retry after a lost answer): one message.
    let message = alice.encrypt(b"three");
    let request = alice.message_request(message);
    let first = alice.try_send_message(request.clone()).await.expect("sent");
    let retried = alice.try_send_message(request).await.expect("retried");
    assert_eq!(first.seq, retried.seq);

    let commit = alice.stage(Change::SelfUpdate);
    let request = alice.commit_request(&commit);
    let first = alice
        .try_submit_commit(request.clone())
        .await
        .expect("committed");
    let retried = alice.try_submit_commit(request).await.expect("retried");
    assert_eq!(first.seq, retried.seq);
    alice.merge();

    let proposal = alice.propose_self_update();
    let request = alice.proposal_request(proposal);
    let first = alice
        .try_submit_proposal(request.clone())
        .await
        .expect("proposed");
    let retried = alice.try_submit_proposal(request).await.expect("retried");
    assert_eq!(first.seq, retried.seq);

    let expected = accepted(&before, "proposal") + 1.0;
    wait_for(
        address,
        "accepted proposals",
        |text| accepted(text, "proposal"),
        expected,
    )
    .await;
    let after = scrape_ok(address).await;
    assert_eq!(
        accepted(&after, "application"),
        accepted(&before, "application") + 3.0
    );
    assert_eq!(
        accepted(&after, "commit"),
        accepted(&before, "commit") + 1.0
    );
    assert_eq!(conflicts(&after), conflicts(&before));
    // Every call is counted, retries included.
    assert_eq!(
        calls(&after, CLIENT_GROUPS, "SendMessage", "OK"),
        calls(&before, CLIENT_GROUPS, "SendMessage", "OK") + 4.0
    );
}

async fn calls_count_by_status_code(database: DatabaseChoice) {
    let (server, channel, [mut alice]) = start_with_clients(database, ["alice"]).await;
    let address = server.http_address();
    alice.create_group().await;
    let before = scrape_ok(address).await;

    alice.try_list_groups().await.expect("listed");
    let mut anonymous = GroupServiceClient::new(channel.clone());
    let status = anonymous
        .list_groups(proto::ListGroupsRequest::default())
        .await
        .expect_err("no token");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let status = alice
        .try_group_info(b"no such group")
        .await
        .expect_err("no such group");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    let request = alice.message_request(Vec::new());
    let status = alice
        .try_send_message(request)
        .await
        .expect_err("an empty message");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    // Paths a client makes up: one `unknown` series, whatever they are.
    let garbage = [
        "/evil.Service/x1",
        "/evil.Service/x2",
        "/conclave.client.v1.GroupService/Evil",
        "/grpc.health.v1.Health",
    ];
    for path in garbage {
        assert_eq!(
            raw_call(server.client_address(), path).await,
            "12",
            "{path}"
        );
    }

    let expected = calls(&before, "unknown", "unknown", "UNIMPLEMENTED") + garbage.len() as f64;
    wait_for(
        address,
        "calls to unknown paths",
        |text| calls(text, "unknown", "unknown", "UNIMPLEMENTED"),
        expected,
    )
    .await;
    let after = scrape_ok(address).await;
    for (method, code) in [
        ("ListGroups", "OK"),
        ("ListGroups", "UNAUTHENTICATED"),
        ("GetGroupInfo", "NOT_FOUND"),
        ("SendMessage", "INVALID_ARGUMENT"),
    ] {
        assert_eq!(
            calls(&after, CLIENT_GROUPS, method, code),
            calls(&before, CLIENT_GROUPS, method, code) + 1.0,
            "{method} {code}"
        );
    }
    assert!(
        !after.contains("evil") && !after.contains("Evil"),
        "{after}"
    );
    // Every series names a service this listener serves, or `unknown`.
    let served = [
        "unknown",
        "conclave.client.v1.AccountService",
        "conclave.client.v1.KeyPackageService",
        "conclave.client.v1.GroupService",
        "conclave.client.v1.DeliveryService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    ];
    for line in after
        .lines()
        .filter(|line| line.starts_with("conclave_grpc_requests_total{"))
    {
        assert!(
            served.iter().any(|service| line.starts_with(&format!(
                "conclave_grpc_requests_total{{service=\"{service}\","
            ))),
            "{line}"
        );
    }
    assert!(sum(&after, "conclave_grpc_request_duration_seconds_count", &[]) > 0.0);
}

/// A unary call to `path` with an empty body, over raw HTTP/2 (no generated
/// client can name a made-up path): the `grpc-status` it was answered with.
async fn raw_call(address: SocketAddr, path: &str) -> String {
    let tcp = tokio::net::TcpStream::connect(address)
        .await
        .expect("connecting");
    let (send_request, connection) = h2::client::handshake(tcp).await.expect("handshake");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let request = http::Request::post(format!("http://{address}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("a request");
    let mut ready = send_request.ready().await.expect("ready");
    let (response, _) = ready.send_request(request, true).expect("sending");
    let response = response.await.expect("an answer");
    response
        .headers()
        .get("grpc-status")
        .expect("a trailers-only answer")
        .to_str()
        .expect("ASCII")
        .to_owned()
}

async fn subscribe_streams_and_delivery_lag_follow_the_streams(database: DatabaseChoice) {
    let (server, _, [mut alice, mut bob]) = start_with_clients(database, ["alice", "bob"]).await;
    let address = server.http_address();
    form_group(&mut alice, &mut [&mut bob]).await;
    let before = scrape_ok(address).await;
    assert_eq!(open_streams(&before), 0.0);

    // Live deliveries: one observation per event written to the stream.
    let mut stream = alice.subscribe().await;
    wait_for(address, "the stream counted open", open_streams, 1.0).await;
    for text in ["one", "two", "three"] {
        bob.send(text).await;
        let event = stream.next().await;
        alice.handle(event);
    }
    // Acknowledged, so a new stream replays only what comes after.
    alice.ack_handled().await;
    let delivered = lag_count(&before) + 3.0;
    wait_for(address, "lag of live deliveries", lag_count, delivered).await;

    // The client drops its stream: closed, and counted as CANCELLED.
    drop(stream);
    wait_for(address, "the dropped stream closed", open_streams, 0.0).await;
    let expected = calls(&before, CLIENT_DELIVERY, "Subscribe", "CANCELLED") + 1.0;
    wait_for(
        address,
        "the dropped stream counted",
        |text| calls(text, CLIENT_DELIVERY, "Subscribe", "CANCELLED"),
        expected,
    )
    .await;

    // Missed while away, then replayed when a stream opens: not observed (their
    // lag is the device's absence, not delivery's speed).
    bob.send("four").await;
    bob.send("five").await;
    // Fetch is not a stream: no lag observed.
    bob.sync().await;
    assert_eq!(lag_count(&scrape_ok(address).await), delivered);
    let mut stream = alice.subscribe().await;
    stream.next_group_event().await;
    stream.next_group_event().await;
    // A live event after the replay: the stream observes it, and by then
    // would have observed the replayed ones before it.
    bob.send("six").await;
    stream.next_group_event().await;
    wait_for(
        address,
        "lag of the live event only",
        lag_count,
        delivered + 1.0,
    )
    .await;
    assert_eq!(open_streams(&scrape_ok(address).await), 1.0);
    drop(stream);
    wait_for(address, "the second stream closed", open_streams, 0.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_closes_streams_and_counts_them_unavailable() {
    // Postgres only, for the lock that holds the server in its shutdown (see
    // `shutdown`); /metrics answers until everything else stopped.
    within_timeout(async {
        let server = TestHomeserver::start_with(
            TestOptions::on(DatabaseChoice::Postgres)
                .configure(|config| config.shutdown.deadline_seconds = 20),
        )
        .await;
        let address = server.http_address();
        let database_url = server.config().database.url.clone();
        let channel = channel(&server).await;
        let alice = Client::register(&channel, "alice").await;
        let mut stream = alice.subscribe().await;
        wait_for(address, "the stream counted open", open_streams, 1.0).await;

        let lock = TableLock::take(&database_url, "group_members").await;
        let call = hold_a_call(alice, &lock).await;
        let stopped = tokio::spawn(server.stop());
        let status = stream.end().await.expect("the stream ended with a status");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        wait_for(address, "the stream closed", open_streams, 0.0).await;
        wait_for(
            address,
            "the stream counted",
            |text| calls(text, CLIENT_DELIVERY, "Subscribe", "UNAVAILABLE"),
            1.0,
        )
        .await;
        assert!(!stopped.is_finished(), "the server waits for the held call");

        lock.release().await;
        call.await.expect("the call's task").1.expect("answered");
        within(Duration::from_secs(20), "the server stopping", stopped)
            .await
            .expect("the server stopped");
    })
    .await;
}

#[tokio::test]
async fn with_metrics_off_the_server_answers_and_metrics_is_not_found() {
    within_timeout(async {
        let server = TestHomeserver::start_with(
            TestOptions::on(DatabaseChoice::Sqlite)
                .configure(|config| config.telemetry.metrics = false),
        )
        .await;
        let channel = channel(&server).await;
        let mut alice = Client::register(&channel, "alice").await;
        alice.create_group().await;
        alice.send("still served").await;
        assert_eq!(
            raw_call(server.client_address(), "/evil.Service/x1").await,
            "12"
        );
        let (status, _) = scrape(server.http_address()).await;
        assert_eq!(status, 404);
    })
    .await;
}

#[tokio::test]
async fn the_federation_listener_counts_its_calls() {
    within_timeout(async {
        let network = TestNetwork::start(&["a.example", "b.example"], DatabaseChoice::Sqlite).await;
        let a = Api::connect(network.server("a.example")).await;
        let b = Api::connect(network.server("b.example")).await;
        let alice = a.register("alice").await;
        let bob = b.register("bob").await;
        b.upload(
            &bob,
            key_packages(&bob, 1),
            Some(last_resort_key_package(&bob)),
        )
        .await
        .expect("bob's upload");
        let (a_metrics, b_metrics) = (
            network.server("a.example").http_address(),
            network.server("b.example").http_address(),
        );
        let claims = |text: &str| calls(text, FEDERATION, "ClaimKeyPackages", "OK");
        let before = claims(&scrape_ok(b_metrics).await);

        let claimed = a.claim(&alice, "bob@b.example").await;
        assert_eq!(claimed.len(), 1);

        wait_for(
            b_metrics,
            "claims served to a.example",
            claims,
            before + 1.0,
        )
        .await;
        // a.example made the call; its own federation listener served none.
        let a_text = scrape_ok(a_metrics).await;
        assert_eq!(claims(&a_text), 0.0);
        assert_eq!(
            calls(
                &a_text,
                "conclave.client.v1.KeyPackageService",
                "ClaimKeyPackages",
                "OK"
            ),
            1.0
        );
    })
    .await;
}
