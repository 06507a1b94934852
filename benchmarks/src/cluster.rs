//! Benchmark 8: one domain as a cluster of 1, 2 and 3 replicas, each a
//! homeserver in this process (`run` instances, so they share the machine's
//! cores with each other, with PostgreSQL, Redis and the clients), on one fresh
//! PostgreSQL database and a private `redis-server`, in cluster mode with the
//! default `redis.poll_interval_ms` (1 s).
//!
//! Benchmark 1's scenario on them: the receiver streams from the first
//! replica, sender `i` sends through replica `i % replicas`; so with several
//! replicas, some messages reach the receiver through a wake-up across
//! replicas (published to Redis by the sender's replica, received by the
//! receiver's), and their latencies are reported apart.

use crate::server;
use crate::throughput::{self, ThroughputRun, ThroughputSettings};
use anyhow::Context as _;
use conclave_test_support::{DatabaseChoice, TestHomeserver, TestOptions, TestRedis};
use std::time::Duration;

/// Longest wait for every replica to subscribe to its wake-ups.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(30);

/// What to run.
#[derive(Debug, Clone)]
pub(crate) struct ClusterSettings {
    pub(crate) replica_counts: Vec<usize>,
    /// Benchmark 1's settings for each cluster.
    pub(crate) throughput: ThroughputSettings,
}

/// One cluster's runs.
#[derive(Debug)]
pub(crate) struct ClusterRun {
    pub(crate) replicas: usize,
    pub(crate) runs: Vec<ThroughputRun>,
}

pub(crate) async fn run(settings: &ClusterSettings) -> anyhow::Result<Vec<ClusterRun>> {
    let mut results = Vec::new();
    for &replicas in &settings.replica_counts {
        eprintln!("  {replicas} replica(s)");
        let runs = run_cluster(replicas, &settings.throughput)
            .await
            .with_context(|| format!("the cluster of {replicas} replicas"))?;
        results.push(ClusterRun { replicas, runs });
    }
    Ok(results)
}

async fn run_cluster(
    replicas: usize,
    settings: &ThroughputSettings,
) -> anyhow::Result<Vec<ThroughputRun>> {
    let redis = TestRedis::start().await;
    let url = redis.url();
    let first = TestHomeserver::start_with(TestOptions::on(DatabaseChoice::Postgres).configure(
        move |config| {
            server::raise_limits(config);
            config.redis.url = Some(url);
        },
    ))
    .await;
    let mut others = Vec::new();
    for _ in 1..replicas {
        others.push(first.start_replica(|_| {}).await);
    }
    // A replica connects to Redis in the background: wait until each one is
    // subscribed, or the first messages would wait for a resync instead.
    let channel = format!("{}:wakeups", first.config().redis.key_prefix);
    let expected = u64::try_from(replicas)?;
    tokio::time::timeout(SUBSCRIBE_TIMEOUT, async {
        while redis.subscribers(&channel).await != Some(expected) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .context("the replicas did not all subscribe to their wake-ups")?;

    let urls: Vec<String> = std::iter::once(&first)
        .chain(&others)
        .map(TestHomeserver::client_url)
        .collect();
    let runs = throughput::measure(DatabaseChoice::Postgres, &urls, settings, None).await;
    for other in others {
        server::stop(other).await;
    }
    server::stop(first).await;
    runs
}
