//! One message, one trace, across processes and domains: a.example and
//! b.example each run as one process of the real `conclave-homeserver` binary
//! (the tracer provider is per process, so each has a resource of its own),
//! exporting to an in-process OTLP receiver at `sampling_ratio = 1.0`, with
//! JSON logs. bob@b.example's group is hosted on b.example; alice and carol
//! are on a.example. alice sends with the real `conclave` CLI, exporting its
//! spans too, while carol's Subscribe stream is open.
//!
//! The trace: the CLI's `cli_command` -> its `client_call` -> a.example's
//! `client_request` -> b.example's `federation_request` (the relay to the
//! hub) -> b.example's `federation_delivery` (the outbox to a.example) ->
//! a.example's `federation_request` -> a.example's `stream_delivery` to
//! carol; every parent within the trace, one root.
//!
//! And a collector that does not answer: requests go on, the failure is
//! logged once, and the homeserver still stops promptly.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use conclave_test_support::cluster::{client_binary, free_address};
use conclave_test_support::wait::DELIVERY_TIMEOUT;
use conclave_test_support::{
    ClusterOptions, IssuedCertificate, OtlpReceiver, PASSWORD, ReceivedSpan, TestCluster, TestPki,
    eventually, within,
};
use tokio::sync::Notify;
use tracing_subscriber::layer::SubscriberExt as _;

use crate::harness::{User, group_of, logged};

/// Longest the whole test may take (two processes start and migrate).
const TEST_TIMEOUT: Duration = Duration::from_secs(240);

/// What alice sends: no span attribute and no log line may contain it.
const TEXT: &str = "the secret plan is tulips at noon";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_send_is_one_trace_from_the_cli_to_the_recipient_s_stream() {
    conclave_test_support::init_logging();
    within(TEST_TIMEOUT, "the traced send", traced_send()).await;
}

async fn traced_send() {
    let receiver = OtlpReceiver::start().await;
    let pki = TestPki::new();
    let (a_certificate, b_certificate) = (pki.issue("a.example"), pki.issue("b.example"));
    let a_federation = free_address(Ipv4Addr::LOCALHOST);
    let b_federation = free_address(Ipv4Addr::LOCALHOST);
    let domain = |name: &str, certificate, listen, peer: &str, peer_listen| {
        ClusterOptions::replicas(1).domain(name).config(&settings(
            &pki,
            certificate,
            listen,
            peer,
            peer_listen,
            &receiver,
        ))
    };
    let a_example = TestCluster::start(domain(
        "a.example",
        &a_certificate,
        a_federation,
        "b.example",
        b_federation,
    ))
    .await;
    let b_example = TestCluster::start(domain(
        "b.example",
        &b_certificate,
        b_federation,
        "a.example",
        a_federation,
    ))
    .await;

    let bob = User::register_at(&b_example.client_url(0), "bob@b.example").await;
    let alice = User::register_at(&a_example.client_url(0), "alice@a.example").await;
    let carol = User::register_at(&a_example.client_url(0), "carol@a.example").await;
    let group_id = group_of(&bob, "traced", &[&alice, &carol]).await;

    // carol listens; her listener catches up (Fetch) and then subscribes. A
    // layer in this process sees the Subscribe call's span: from then on, a
    // new message reaches her through the stream.
    let subscribing = Arc::new(Notify::new());
    let watcher = tracing_subscriber::registry().with(SubscribeCallWatcher {
        subscribing: Arc::clone(&subscribing),
    });
    let mut listener = carol.client.listen(Some(group_id.clone()));
    let carol_receives = tracing::instrument::WithSubscriber::with_subscriber(
        async { listener.next().await.expect("carol listening") },
        watcher,
    );
    let alice_sends = async {
        subscribing.notified().await;
        send_with_cli(&alice, &group_id.to_string(), &receiver).await;
    };
    // Bounded apart from the test, so a message that never arrives says so,
    // with what both homeservers logged.
    let Ok((message, ())) = tokio::time::timeout(DELIVERY_TIMEOUT, async {
        tokio::join!(carol_receives, alice_sends)
    })
    .await
    else {
        panic!(
            "carol's listener did not get alice's message within {DELIVERY_TIMEOUT:?}\n\
             a.example's log ends:\n{}\nb.example's log ends:\n{}",
            a_example.log_tail(0),
            b_example.log_tail(0)
        );
    };
    assert_eq!(logged(&message).2, TEXT);

    let trace = receiver
        .wait_for(
            DELIVERY_TIMEOUT,
            "the send's trace, to carol's stream",
            |spans| {
                let root = spans.iter().find(|span| {
                    span.name == "cli_command" && span.attribute("conclave.command") == Some("send")
                })?;
                let trace: Vec<ReceivedSpan> = spans
                    .iter()
                    .filter(|span| span.trace_id == root.trace_id)
                    .cloned()
                    .collect();
                // Each process exports in batches of its own: wait for all of
                // them, down to carol's stream, with every parent in.
                let complete = trace.iter().any(|span| span.name == "stream_delivery")
                    && trace.iter().all(|span| {
                        span.parent_span_id
                            .as_ref()
                            .is_none_or(|parent| trace.iter().any(|other| &other.span_id == parent))
                    });
                complete.then_some(trace)
            },
        )
        .await;
    check_trace(&trace);
    // Nothing any process exported holds the message or the password.
    for span in receiver.spans() {
        for (key, value) in span.attributes.iter().chain(&span.resource) {
            assert!(
                !value.contains(TEXT) && !value.contains(PASSWORD),
                "{} span {} has {key} = {value:?}",
                span.service_name().unwrap_or("?"),
                span.name
            );
        }
    }
    let lines_in_trace =
        check_logs(&a_example, &trace, "a.example") + check_logs(&b_example, &trace, "b.example");
    assert!(
        lines_in_trace > 0,
        "no log line carries the send's trace id"
    );
}

/// The chain from carol's `stream_delivery` up to the CLI's root, each span
/// from the process it must come from.
fn check_trace(trace: &[ReceivedSpan]) {
    let by_id: HashMap<&str, &ReceivedSpan> = trace
        .iter()
        .map(|span| (span.span_id.as_str(), span))
        .collect();
    let roots: Vec<&ReceivedSpan> = trace
        .iter()
        .filter(|span| span.parent_span_id.is_none())
        .collect();
    assert_eq!(roots.len(), 1, "one root: {roots:#?}");
    assert_eq!(roots[0].name, "cli_command");
    for span in trace {
        if let Some(parent) = &span.parent_span_id {
            assert!(
                by_id.contains_key(parent.as_str()),
                "the parent of {} ({}) is not in the trace",
                span.name,
                span.service_name().unwrap_or("?")
            );
        }
    }
    let stream_delivery = trace
        .iter()
        .find(|span| span.name == "stream_delivery")
        .expect("carol's stream delivery");
    let mut chain = vec![stream_delivery];
    while let Some(parent) = &chain[chain.len() - 1].parent_span_id {
        chain.push(by_id[parent.as_str()]);
    }
    chain.reverse();
    let described: Vec<(String, String, String, String)> = chain
        .iter()
        .map(|span| {
            (
                span.name.clone(),
                span.service_name().unwrap_or("").to_owned(),
                span.resource
                    .get("conclave.domain")
                    .cloned()
                    .unwrap_or_default(),
                span.attribute("rpc.method").unwrap_or("").to_owned(),
            )
        })
        .collect();
    let expected = [
        ("cli_command", "conclave-cli", "", ""),
        ("client_call", "conclave-cli", "", "SendMessage"),
        (
            "client_request",
            "conclave-homeserver",
            "a.example",
            "SendMessage",
        ),
        (
            "federation_request",
            "conclave-homeserver",
            "b.example",
            "SubmitToHub",
        ),
        (
            "federation_delivery",
            "conclave-homeserver",
            "b.example",
            "",
        ),
        (
            "federation_request",
            "conclave-homeserver",
            "a.example",
            "DeliverEvents",
        ),
        ("stream_delivery", "conclave-homeserver", "a.example", ""),
    ];
    let expected: Vec<(String, String, String, String)> = expected
        .iter()
        .map(|(name, service, domain, method)| {
            (
                (*name).to_owned(),
                (*service).to_owned(),
                (*domain).to_owned(),
                (*method).to_owned(),
            )
        })
        .collect();
    assert_eq!(
        described, expected,
        "the chain from the CLI to carol's stream"
    );
    // Each homeserver names its replica; each federation span its peer.
    for span in &chain[2..] {
        let domain = &span.resource["conclave.domain"];
        assert_eq!(
            span.service_instance_id(),
            Some(format!("{domain}-0").as_str())
        );
    }
    assert_eq!(
        chain[3].attribute("conclave.peer_domain"),
        Some("a.example")
    );
    assert_eq!(
        chain[5].attribute("conclave.peer_domain"),
        Some("b.example")
    );
    assert_eq!(chain[2].attribute("rpc.system"), Some("grpc"));
}

/// `domain`'s JSON log: no line holds the message or the password, and the
/// lines written within the trace carry its id and one of its span ids at the
/// top level. Returns how many lines are in the trace.
fn check_logs(cluster: &TestCluster, trace: &[ReceivedSpan], domain: &str) -> usize {
    let log = std::fs::read_to_string(cluster.log_path(0)).expect("the replica's log");
    assert!(
        !log.contains(TEXT) && !log.contains(PASSWORD),
        "{domain}'s log holds a secret"
    );
    let trace_id = &trace[0].trace_id;
    let in_trace: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["trace_id"].as_str() == Some(trace_id))
        .collect();
    for line in &in_trace {
        let span_id = line["span_id"]
            .as_str()
            .expect("a span id beside the trace id");
        assert!(
            trace.iter().any(|span| span.span_id == span_id),
            "{domain}: {line} names a span outside the trace"
        );
    }
    in_trace.len()
}

/// a.example's or b.example's settings: federation with the other, the
/// receiver as collector, every trace sampled, JSON logs down to DEBUG (more
/// lines to find secrets in, and to carry the trace's ids).
fn settings(
    pki: &TestPki,
    certificate: &IssuedCertificate,
    listen: std::net::SocketAddr,
    peer: &str,
    peer_listen: std::net::SocketAddr,
    receiver: &OtlpReceiver,
) -> String {
    format!(
        "[federation]\nlisten = '{listen}'\ncertificate = '{}'\nprivate_key = '{}'\ntrust_roots = '{}'\n\
         [federation.peers.'{peer}']\nendpoint = 'https://{peer_listen}'\n\
         [telemetry]\notlp_endpoint = '{}'\nsampling_ratio = 1.0\nreplica = '{}-0'\n\
         [log]\nformat = 'json'\nfilter = 'info,conclave_homeserver=debug,conclave_federation=debug'",
        certificate.certificate.display(),
        certificate.private_key.display(),
        pki.trust_roots().display(),
        receiver.endpoint(),
        certificate.domain,
    )
}

/// alice sends [`TEXT`] to `group` with the `conclave` CLI on her state,
/// exporting its spans to `receiver`.
async fn send_with_cli(alice: &User, group: &str, receiver: &OtlpReceiver) {
    let output = tokio::process::Command::new(client_binary())
        .arg("--state")
        .arg(alice.state_dir())
        .args(["send", group, TEXT])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint())
        .env_remove("OTEL_SERVICE_NAME")
        .env_remove("OTEL_RESOURCE_ATTRIBUTES")
        .env_remove("OTEL_TRACES_SAMPLER")
        .kill_on_drop(true)
        .output()
        .await
        .expect("running the conclave CLI");
    assert!(
        output.status.success(),
        "conclave send failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Notifies once the client library starts its Subscribe call.
struct SubscribeCallWatcher {
    subscribing: Arc<Notify>,
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for SubscribeCallWatcher {
    fn on_new_span(
        &self,
        attributes: &tracing::span::Attributes<'_>,
        _id: &tracing::span::Id,
        _context: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if attributes.metadata().name() != "client_call" {
            return;
        }
        let mut method = MethodVisitor(None);
        attributes.record(&mut method);
        if method.0.as_deref() == Some("Subscribe") {
            self.subscribing.notify_one();
        }
    }
}

/// Reads the `rpc.method` field of a span.
struct MethodVisitor(Option<String>);

impl tracing::field::Visit for MethodVisitor {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "rpc.method" {
            self.0 = Some(value.to_owned());
        }
    }

    fn record_debug(&mut self, _field: &tracing::field::Field, _value: &dyn std::fmt::Debug) {}
}

/// How the homeserver reports that its collector does not answer.
const EXPORT_FAILURE: &str = "cannot export spans to the OTLP collector";

/// A collector that does not answer costs no request: a homeserver exporting
/// to a closed port serves registrations and a group's messages, logs the
/// failure once (not once per batch: the flush at SIGTERM fails again), and
/// stops cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_collector_fails_no_request_and_is_logged_once() {
    conclave_test_support::init_logging();
    within(TEST_TIMEOUT, "the unreachable collector", async {
        let closed = free_address(Ipv4Addr::LOCALHOST);
        let cluster = TestCluster::start(ClusterOptions::replicas(1).config(&format!(
            "[telemetry]\notlp_endpoint = 'http://{closed}'\nsampling_ratio = 1.0"
        )))
        .await;
        let alice = User::register_at(&cluster.client_url(0), "alice@localhost").await;
        let bob = User::register_at(&cluster.client_url(0), "bob@localhost").await;
        let group_id = group_of(&alice, "untraced", &[&bob]).await;
        // The first batch leaves after the batch processor's delay and fails.
        eventually(
            DELIVERY_TIMEOUT,
            "the export failure in the log",
            || async {
                let log = std::fs::read_to_string(cluster.log_path(0)).expect("the log");
                log.contains(EXPORT_FAILURE).then_some(())
            },
        )
        .await;
        for number in 0..5 {
            alice.send(&group_id, &format!("message {number}")).await;
        }
        let received = bob.next_messages(&group_id, 5).await;
        assert_eq!(received.len(), 5);
        let status = cluster.terminate(0).await;
        assert!(status.success(), "the homeserver exited with {status}");
        let log = std::fs::read_to_string(cluster.log_path(0)).expect("the log");
        assert_eq!(
            log.matches(EXPORT_FAILURE).count(),
            1,
            "one report of the failing collector:\n{log}"
        );
    })
    .await;
}
