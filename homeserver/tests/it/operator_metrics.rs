//! The operator's metrics on `/metrics` move as the server's state does:
//! rejections by each limit, devices low on key packages (read from the
//! database periodically), the database pool, Redis reachability in cluster
//! mode, the process's own numbers, and the format the `Accept` header asks for.

use crate::harness::{Api, key_packages, last_resort_key_package, login_request, new_signer};
use conclave_test_support::metrics::{sample, scrape_accepting, scrape_ok};
use conclave_test_support::{
    DatabaseChoice, TestHomeserver, TestOptions, TestRedis, eventually, within,
};
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};
use tonic::Code;

on_both_databases!(devices_low_on_key_packages_follow_uploads_and_claims);

/// Longest a metric may take to show a change (a few refresh periods).
const METRIC_TIMEOUT: Duration = Duration::from_secs(20);

/// Waits until the sample `series` at `address` is `expected`.
async fn metric_becomes(address: SocketAddr, series: &str, expected: f64) {
    eventually(
        METRIC_TIMEOUT,
        &format!("{series} to be {expected}"),
        || async move {
            let text = scrape_ok(address).await;
            (sample(&text, series) == Some(expected)).then_some(())
        },
    )
    .await;
}

fn rejections(text: &str, limit: &str) -> Option<f64> {
    sample(
        text,
        &format!("conclave_ratelimit_rejections_total{{limit=\"{limit}\"}}"),
    )
}

async fn devices_low_on_key_packages_follow_uploads_and_claims(database: DatabaseChoice) {
    let server = TestHomeserver::start_with(TestOptions::on(database).configure(|config| {
        config.telemetry.refresh_interval_ms = 100;
        config.key_packages.low_stock_threshold = 3;
    }))
    .await;
    let api = Api::connect(&server).await;
    let address = server.http_address();
    const SERIES: &str = "conclave_devices_low_on_key_packages";

    let alice = api.register("alice").await;
    let bob = api.register("bob").await;
    // Neither has uploaded anything.
    metric_becomes(address, SERIES, 2.0).await;
    api.upload(
        &alice,
        key_packages(&alice, 4),
        Some(last_resort_key_package(&alice)),
    )
    .await
    .expect("alice's upload");
    metric_becomes(address, SERIES, 1.0).await;
    // Two claims leave alice 2 packages, below the threshold of 3: the
    // last-resort package does not count.
    for _ in 0..2 {
        api.claim(&bob, "alice@localhost").await;
    }
    metric_becomes(address, SERIES, 2.0).await;
    api.upload(&bob, key_packages(&bob, 3), None)
        .await
        .expect("bob's upload");
    metric_becomes(address, SERIES, 1.0).await;
    server.stop().await;
}

#[tokio::test]
async fn each_limit_counts_its_refusals() {
    within(Duration::from_secs(120), "the test", async {
        let server = TestHomeserver::start_with(TestOptions::default().configure(|config| {
            config.limits.auth_attempt_burst = 3;
            config.limits.auth_attempts_per_minute = 1;
            config.key_packages.claims_per_minute = 1;
        }))
        .await;
        let api = Api::connect(&server).await;
        let text = scrape_ok(server.http_address()).await;
        assert_eq!(rejections(&text, "register_attempts"), None, "{text}");

        let alice = api.register("alice").await;
        let bob = api.register("bob").await;
        api.stock_up(&alice, 2).await;
        api.claim(&bob, "alice@localhost").await;
        let refused = api.try_claim(&bob.token, "alice@localhost").await;
        assert_eq!(refused.unwrap_err().code(), Code::ResourceExhausted);
        // The bucket's third attempt was spent by a login; the next Register
        // and Login are refused.
        api.login("alice").await;
        let refused = api
            .try_register(crate::harness::register_request("carol", &new_signer()))
            .await;
        assert_eq!(refused.unwrap_err().code(), Code::ResourceExhausted);
        let refused = api.try_login(login_request("alice", &new_signer())).await;
        assert_eq!(refused.unwrap_err().code(), Code::ResourceExhausted);

        let text = scrape_ok(server.http_address()).await;
        assert_eq!(rejections(&text, "key_package_claims"), Some(1.0), "{text}");
        assert_eq!(rejections(&text, "register_attempts"), Some(1.0), "{text}");
        assert_eq!(rejections(&text, "login_attempts"), Some(1.0), "{text}");
        assert_eq!(rejections(&text, "login_backoff"), None, "{text}");
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn process_and_pool_metrics_are_read_at_each_scrape() {
    within(Duration::from_secs(60), "the test", async {
        let server = TestHomeserver::start_with(
            TestOptions::default().configure(|config| config.database.max_connections = 4),
        )
        .await;
        let text = scrape_ok(server.http_address()).await;
        let value = |series: &str| {
            sample(&text, series).unwrap_or_else(|| panic!("{series} missing from:\n{text}"))
        };
        assert_eq!(value("conclave_db_pool_max_connections"), 4.0);
        let open = value("conclave_db_pool_connections{state=\"idle\"}")
            + value("conclave_db_pool_connections{state=\"in_use\"}");
        assert!(
            (1.0..=4.0).contains(&open),
            "{open} connections open:\n{text}"
        );
        assert!(value("process_resident_memory_bytes") > 1_000_000.0);
        assert!(value("process_virtual_memory_bytes") >= value("process_resident_memory_bytes"));
        assert!(value("process_open_fds") >= 3.0);
        assert!(value("process_max_fds") >= value("process_open_fds"));
        assert!(value("process_cpu_seconds_total") > 0.0);
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let started = value("process_start_time_seconds");
        assert!(
            now - 24.0 * 3600.0 < started && started <= now + 1.0,
            "started at {started}, now is {now}"
        );
        // Without `[redis]` there is no Redis to be up or down.
        assert!(!text.contains("conclave_redis_up"), "{text}");
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn the_accept_header_chooses_openmetrics_or_the_classic_text() {
    within(Duration::from_secs(60), "the test", async {
        let server = TestHomeserver::start().await;
        let address = server.http_address();
        // What Prometheus sends.
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        let (status, content_type, text) = scrape_accepting(address, prometheus).await;
        assert_eq!(status, 200);
        assert!(
            content_type.starts_with("application/openmetrics-text; version=1.0.0"),
            "{content_type}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(text.contains("# TYPE conclave_commit_conflicts counter"), "{text}");

        for accept in ["text/plain", "*/*"] {
            let (status, content_type, text) = scrape_accepting(address, accept).await;
            assert_eq!(status, 200);
            assert!(
                content_type.starts_with("text/plain; version=0.0.4"),
                "{accept}: {content_type}"
            );
            assert!(!text.contains("# EOF"), "{text}");
            assert!(
                text.contains("# TYPE conclave_commit_conflicts_total counter"),
                "{text}"
            );
        }
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn redis_up_follows_the_replicas_link_to_redis() {
    within(Duration::from_secs(120), "the test", async {
        let mut redis = TestRedis::start().await;
        let url = redis.url();
        let server = TestHomeserver::start_with(
            TestOptions::on(DatabaseChoice::Postgres).configure(move |config| {
                config.redis.url = Some(url);
            }),
        )
        .await;
        let address = server.http_address();
        metric_becomes(address, "conclave_redis_up", 1.0).await;
        redis.stop();
        metric_becomes(address, "conclave_redis_up", 0.0).await;
        redis.start_again().await;
        metric_becomes(address, "conclave_redis_up", 1.0).await;
        server.stop().await;
    })
    .await;
}
