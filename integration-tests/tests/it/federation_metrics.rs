//! The federation metrics of a hub (a.example) and a follower (b.example), read
//! from `/metrics` as Prometheus would: calls counted at both ends, the
//! follower seen up, down while stopped and up again, the hub's outbox backlog
//! rising during the outage and back to 0 once delivered, and the
//! certificates' expiry. A call acting for a domain that is no peer is counted
//! as `peer="unknown"`, never under the domain it named.
//!
//! In a domain of two replicas, the one not holding the outbox's lease (not
//! sending to the peer) reports the same backlog as the one sending.

use conclave_test_support::metrics::{sample, scrape_ok, sum};
use conclave_test_support::wait::DELIVERY_TIMEOUT;
use conclave_test_support::{DatabaseChoice, KillableReplica, TestNetwork, eventually};
use std::net::SocketAddr;

use conclave_proto::federation::v1 as proto;

use crate::harness::{User, deliver, group_of, within_timeout};

on_both_databases!(federation_metrics_follow_a_peer_down_and_back);

/// Messages sent while b.example is down.
const MESSAGES_WHILE_DOWN: usize = 3;

const PENDING_FOR_B: &str = "conclave_federation_outbox_pending{peer=\"b.example\"}";
const OLDEST_AGE_FOR_B: &str = "conclave_federation_outbox_oldest_age_seconds{peer=\"b.example\"}";
const B_UP: &str = "conclave_federation_peer_up{peer=\"b.example\"}";
const REQUESTS: &str = "conclave_federation_requests_total";

/// Scrapes `domain`'s homeserver until `condition` holds for its metrics.
async fn metrics_until(
    network: &TestNetwork,
    domain: &str,
    what: &str,
    condition: impl Fn(&str) -> bool,
) -> String {
    let address = network.server(domain).http_address();
    scrape_until(address, &format!("{domain}: {what}"), condition).await
}

/// Scrapes the HTTP listener at `address` until `condition` holds.
async fn scrape_until(address: SocketAddr, what: &str, condition: impl Fn(&str) -> bool) -> String {
    eventually(DELIVERY_TIMEOUT, what, || async {
        let text = scrape_ok(address).await;
        condition(&text).then_some(text)
    })
    .await
}

async fn federation_metrics_follow_a_peer_down_and_back(database: DatabaseChoice) {
    let mut network = TestNetwork::start(&["a.example", "b.example"], database).await;
    let not_after = network.pki().not_after_unix_seconds() as f64;

    // Every configured peer's outbox series is there from the start.
    let text = metrics_until(&network, "a.example", "the outbox series", |text| {
        sample(text, PENDING_FOR_B).is_some()
    })
    .await;
    assert_eq!(sample(&text, PENDING_FOR_B), Some(0.0), "{text}");
    assert_eq!(sample(&text, OLDEST_AGE_FOR_B), Some(0.0), "{text}");
    // Nothing is known of the peer before the first call to it.
    assert_eq!(sample(&text, B_UP), None, "{text}");
    assert_eq!(
        sample(
            &text,
            "conclave_tls_certificate_expiry_timestamp_seconds{listener=\"federation\"}"
        ),
        Some(not_after),
        "{text}"
    );

    let [alice, bob] = User::register_all(&network, ["alice@a.example", "bob@b.example"]).await;
    let group_id = group_of(&alice, "metrics", &[&bob]).await;
    alice.send(&group_id, "hello").await;
    assert_eq!(bob.next_messages(&group_id, 1).await.len(), 1);

    let outbound_ok = [
        "peer=\"b.example\"",
        "direction=\"outbound\"",
        "code=\"OK\"",
    ];
    let text = metrics_until(&network, "a.example", "b.example called and up", |text| {
        sum(text, REQUESTS, &outbound_ok) > 0.0 && sample(text, B_UP) == Some(1.0)
    })
    .await;
    // The hub verified b.example's server certificate when it connected.
    assert_eq!(
        sample(
            &text,
            "conclave_federation_peer_certificate_expiry_timestamp_seconds{peer=\"b.example\",role=\"server\"}"
        ),
        Some(not_after),
        "{text}"
    );
    // No series carries anything but a configured peer at the hub.
    assert_eq!(sum(&text, REQUESTS, &["peer=\"unknown\""]), 0.0, "{text}");

    let text = metrics_until(&network, "b.example", "a.example's calls counted", |text| {
        sum(
            text,
            REQUESTS,
            &["peer=\"a.example\"", "direction=\"inbound\"", "code=\"OK\""],
        ) > 0.0
    })
    .await;
    // The follower saw the hub's client certificate on the hub's calls.
    assert_eq!(
        sample(
            &text,
            "conclave_federation_peer_certificate_expiry_timestamp_seconds{peer=\"a.example\",role=\"client\"}"
        ),
        Some(not_after),
        "{text}"
    );

    // a.example's certificate, used for a domain that is no peer of b.example:
    // refused, and counted without the name the request chose.
    let forged = proto::DeliverEventsRequest {
        hub_domain: "c.example".to_owned(),
        group_id: group_id.as_bytes().to_vec(),
        events: Vec::new(),
        member_count: 1,
    };
    let refused = deliver(
        &network,
        "b.example",
        Some(network.certificate("a.example")),
        forged,
    )
    .await;
    assert!(refused.is_err(), "{refused:?}");
    let text = metrics_until(&network, "b.example", "the refused call counted", |text| {
        sum(
            text,
            REQUESTS,
            &[
                "peer=\"unknown\"",
                "direction=\"inbound\"",
                "code=\"PERMISSION_DENIED\"",
            ],
        ) == 1.0
    })
    .await;
    assert_eq!(sum(&text, REQUESTS, &["peer=\"c.example\""]), 0.0, "{text}");

    // b.example down: the hub keeps the messages, older and older, and sees
    // b.example unreachable.
    network.stop("b.example").await;
    for number in 0..MESSAGES_WHILE_DOWN {
        alice.send(&group_id, &format!("while down {number}")).await;
    }
    let text = metrics_until(
        &network,
        "a.example",
        "the backlog for the stopped b.example",
        |text| {
            sample(text, PENDING_FOR_B) == Some(MESSAGES_WHILE_DOWN as f64)
                && sample(text, OLDEST_AGE_FOR_B).is_some_and(|age| age > 0.0)
                && sample(text, B_UP) == Some(0.0)
        },
    )
    .await;
    // The failed calls are counted with the code tonic reports for a refused
    // connection.
    assert!(
        sum(
            &text,
            REQUESTS,
            &[
                "peer=\"b.example\"",
                "direction=\"outbound\"",
                "code=\"UNAVAILABLE\""
            ]
        ) > 0.0,
        "{text}"
    );

    // b.example back: the backlog drains, and b.example is up again.
    network.start_again("b.example").await;
    assert_eq!(
        bob.next_messages(&group_id, MESSAGES_WHILE_DOWN)
            .await
            .len(),
        MESSAGES_WHILE_DOWN
    );
    metrics_until(&network, "a.example", "the backlog drained", |text| {
        sample(text, PENDING_FOR_B) == Some(0.0)
            && sample(text, OLDEST_AGE_FOR_B) == Some(0.0)
            && sample(text, B_UP) == Some(1.0)
    })
    .await;
    network.outbox_drained("a.example", "b.example").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_replica_reports_the_domains_backlog() {
    within_timeout(backlog_on_every_replica()).await;
}

async fn backlog_on_every_replica() {
    // The replica not sending reads the backlog only at its refresh: a short
    // one, so the test does not wait the default 30 s.
    let mut network = TestNetwork::builder(&["a.example", "b.example"], DatabaseChoice::Postgres)
        .configure(|_, _, config| config.telemetry.refresh_interval_ms = 500)
        .start()
        .await;
    let [alice, bob] = User::register_all(&network, ["alice@a.example", "bob@b.example"]).await;
    let group_id = group_of(&alice, "replicas", &[&bob]).await;
    network.outbox_drained("a.example", "b.example").await;
    // A second replica of a.example on its database: the first holds the
    // outbox's lease, so this one never calls b.example.
    let replica = KillableReplica::start(network.config("a.example").clone()).await;
    let sending = network.server("a.example").http_address();
    let waiting = replica.config().http.listen;

    network.stop("b.example").await;
    for number in 0..MESSAGES_WHILE_DOWN {
        alice.send(&group_id, &format!("while down {number}")).await;
    }
    for (address, replica_name) in [(sending, "the sending replica"), (waiting, "the other")] {
        scrape_until(address, &format!("{replica_name}: the backlog"), |text| {
            sample(text, PENDING_FOR_B) == Some(MESSAGES_WHILE_DOWN as f64)
                && sample(text, OLDEST_AGE_FOR_B).is_some_and(|age| age > 0.0)
        })
        .await;
    }
    let text = scrape_ok(waiting).await;
    // It never called b.example: nothing is known of it there.
    assert_eq!(sample(&text, B_UP), None, "{text}");
    assert_eq!(
        sum(
            &text,
            REQUESTS,
            &["peer=\"b.example\"", "direction=\"outbound\""]
        ),
        0.0,
        "{text}"
    );

    network.start_again("b.example").await;
    for (address, replica_name) in [(sending, "the sending replica"), (waiting, "the other")] {
        scrape_until(
            address,
            &format!("{replica_name}: the backlog drained"),
            |text| {
                sample(text, PENDING_FOR_B) == Some(0.0)
                    && sample(text, OLDEST_AGE_FOR_B) == Some(0.0)
            },
        )
        .await;
    }
    replica.kill();
    network.shutdown().await;
}
