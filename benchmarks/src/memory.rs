//! Benchmark 7: memory after many registrations. Every Register costs the
//! server an Argon2id hash (19 MiB of working memory with the default
//! parameters), so this part registers users, many at once, on one in-process
//! homeserver and reads the process's resident set size (`VmRSS`) and its peak
//! (`VmHWM`) from `/proc/self/status` before and after. The figures are of the
//! whole benchmark process: the homeserver and its gRPC clients, whose own
//! share is small (one channel and a signature key per request).

use crate::api::Api;
use crate::mls::new_signer;
use crate::server;
use conclave_test_support::DatabaseChoice;
use futures::{StreamExt as _, TryStreamExt as _};

/// What to run.
#[derive(Debug, Clone)]
pub(crate) struct MemorySettings {
    /// Users registered.
    pub(crate) registrations: usize,
    /// Register calls in flight at once.
    pub(crate) concurrency: usize,
}

/// One run's figures, in bytes.
#[derive(Debug)]
pub(crate) struct MemoryRun {
    pub(crate) database: DatabaseChoice,
    /// Resident set size with the homeserver started, before any registration.
    pub(crate) rss_before: u64,
    /// Resident set size after the last registration returned.
    pub(crate) rss_after: u64,
    /// The process's peak resident set size (since it started).
    pub(crate) peak: u64,
    /// Wall time of the registrations.
    pub(crate) elapsed: std::time::Duration,
}

/// Registers `settings.registrations` users on a fresh homeserver.
pub(crate) async fn run(
    database: DatabaseChoice,
    settings: &MemorySettings,
) -> anyhow::Result<MemoryRun> {
    let homeserver = server::start(database).await;
    let api = Api::connect(&homeserver.client_url()).await?;
    let rss_before = status_bytes("VmRSS")?;
    let started = std::time::Instant::now();
    futures::stream::iter(0..settings.registrations)
        .map(|index| {
            let api = api.clone();
            async move {
                let signer = new_signer()?;
                api.register(&format!("memory{index}"), &signer).await
            }
        })
        .buffer_unordered(settings.concurrency)
        .try_for_each(|_| async { Ok(()) })
        .await?;
    let elapsed = started.elapsed();
    let rss_after = status_bytes("VmRSS")?;
    let peak = status_bytes("VmHWM")?;
    server::stop(homeserver).await;
    Ok(MemoryRun {
        database,
        rss_before,
        rss_after,
        peak,
        elapsed,
    })
}

/// A `kB` line of `/proc/self/status`, in bytes.
fn status_bytes(field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
        .map(|kilobytes| kilobytes * 1024)
        .ok_or_else(|| anyhow::anyhow!("/proc/self/status has no {field} in kB"))
}
