//! A real Prometheus (Debian's package) scrapes a homeserver: after some
//! group traffic its own HTTP API shows the target up and the accepted
//! messages; and `promtool check metrics` accepts the exposition as served.

use crate::groups_harness::{Client, form_group, start_with_clients};
use crate::harness::{Api, channel, new_signer, register_request};
use conclave_test_support::metrics::{promtool_check_metrics, scrape_ok};
use conclave_test_support::{
    DatabaseChoice, TestHomeserver, TestOptions, TestPrometheus, eventually, within,
};
use std::time::Duration;

/// Longest Prometheus may take to scrape (every second) and store a change.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn prometheus_scrapes_the_target_and_sees_accepted_messages() {
    within(Duration::from_secs(120), "the test", async {
        let (server, _channel, [mut alice, mut bob]) =
            start_with_clients(DatabaseChoice::Sqlite, ["alice", "bob"]).await;
        let prometheus = TestPrometheus::start(&[server.http_address()]).await;
        form_group(&mut alice, &mut [&mut bob]).await;
        alice.send("hello").await;
        bob.send("hi").await;

        let instance = server.http_address().to_string();
        eventually(SCRAPE_TIMEOUT, "Prometheus to see the target up", || {
            let (prometheus, instance) = (&prometheus, &instance);
            async move {
                let up = prometheus.query("up").await;
                (up.len() == 1
                    && up[0].value == 1.0
                    && up[0].labels["instance"] == instance.as_str())
                .then_some(())
            }
        })
        .await;
        eventually(
            SCRAPE_TIMEOUT,
            "Prometheus to store both application messages",
            || {
                let prometheus = &prometheus;
                async move {
                    let accepted = prometheus
                        .query("sum(conclave_messages_accepted_total{kind=\"application\"})")
                        .await;
                    accepted
                        .first()
                        .is_some_and(|sample| sample.value >= 2.0)
                        .then_some(())
                }
            },
        )
        .await;
        // The commit that added bob counts too.
        let commits = prometheus
            .query("conclave_messages_accepted_total{kind=\"commit\", job=\"conclave-homeserver\"}")
            .await;
        assert!(
            commits.first().is_some_and(|sample| sample.value >= 1.0),
            "{commits:?}; Prometheus's log ends:\n{}",
            prometheus.log_tail()
        );
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn promtool_accepts_the_exposition_after_traffic() {
    within(Duration::from_secs(120), "the test", async {
        // A small attempt budget, so that a limit refuses something below.
        let server = TestHomeserver::start_with(TestOptions::on(DatabaseChoice::Sqlite).configure(
            |config| {
                config.limits.auth_attempt_burst = 5;
                config.limits.auth_attempts_per_minute = 1;
            },
        ))
        .await;
        let channel = channel(&server).await;
        let mut alice = Client::register(&channel, "alice").await;
        let mut bob = Client::register(&channel, "bob").await;
        form_group(&mut alice, &mut [&mut bob]).await;
        alice.send("hello").await;
        // Registrations without a proof of possession spend the address's
        // attempts (and are refused for the proof, cheaply) until the limit
        // refuses one: the rejection counter has a sample too.
        let api = Api::connect(&server).await;
        let mut limited = false;
        for _ in 0..40 {
            let status = api
                .try_register_as_is(register_request("mallory", &new_signer()))
                .await
                .expect_err("a registration without a proof");
            if status.code() == tonic::Code::ResourceExhausted {
                limited = true;
                break;
            }
        }
        assert!(limited, "the attempt limit never refused a registration");
        let text = scrape_ok(server.http_address()).await;
        assert!(
            text.contains("conclave_ratelimit_rejections_total{limit=\"register_attempts\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("conclave_messages_accepted_total{kind=\"application\"} 1"),
            "{text}"
        );
        let (success, printed) = promtool_check_metrics(&text);
        assert!(
            success,
            "promtool check metrics failed:\n{printed}\non:\n{text}"
        );
        assert_eq!(printed.trim(), "", "promtool's findings on:\n{text}");
        server.stop().await;
    })
    .await;
}
