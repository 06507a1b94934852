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
    process_status_bytes("self", field)
}

/// A `kB` line of `/proc/PROCESS/status`, in bytes.
fn process_status_bytes(process: &str, field: &str) -> anyhow::Result<u64> {
    let path = format!("/proc/{process}/status");
    let status = std::fs::read_to_string(&path)?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
        .map(|kilobytes| kilobytes * 1024)
        .ok_or_else(|| anyhow::anyhow!("{path} has no {field} in kB"))
}

/// Another process's memory (the homeserver's, with `--server-process`), as
/// the kernel counts it: resident pages, and the peak since the process began
/// or since [`ProcessMemory::reset_peak`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct ProcessMemory {
    pid: u32,
}

impl ProcessMemory {
    pub(crate) fn of(pid: u32) -> ProcessMemory {
        ProcessMemory { pid }
    }

    /// Resident set size now (`VmRSS`), in bytes.
    pub(crate) fn resident(self) -> anyhow::Result<u64> {
        process_status_bytes(&self.pid.to_string(), "VmRSS")
    }

    /// Peak resident set size (`VmHWM`), in bytes.
    pub(crate) fn peak(self) -> anyhow::Result<u64> {
        process_status_bytes(&self.pid.to_string(), "VmHWM")
    }

    /// Starts the peak afresh from the current resident set size (writing 5
    /// to `clear_refs`, see proc(5)), so that [`ProcessMemory::peak`] is the
    /// peak of what follows alone.
    pub(crate) fn reset_peak(self) -> anyhow::Result<()> {
        let path = format!("/proc/{}/clear_refs", self.pid);
        std::fs::write(&path, "5").map_err(|error| anyhow::anyhow!("writing {path}: {error}"))
    }
}

/// What a `--serve` child is asked on its stdin for its live heap, which it
/// answers with one line on its stdout: the bytes allocated and not freed.
pub(crate) const HEAP_REQUEST: &str = "live-heap";

/// The live heap of a `--serve` child, asked over its stdin and stdout. The
/// child stops when its stdin closes ([`HeapProbe::close`]).
pub(crate) struct HeapProbe {
    pipe: tokio::sync::Mutex<Option<ChildPipe>>,
}

type ChildPipe = (
    tokio::process::ChildStdin,
    tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
);

impl HeapProbe {
    pub(crate) fn new(
        stdin: tokio::process::ChildStdin,
        lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    ) -> HeapProbe {
        HeapProbe {
            pipe: tokio::sync::Mutex::new(Some((stdin, lines))),
        }
    }

    /// Bytes the child's allocator has handed out and not had back.
    pub(crate) async fn live_bytes(&self) -> anyhow::Result<u64> {
        use anyhow::Context as _;
        use tokio::io::AsyncWriteExt as _;
        let mut pipe = self.pipe.lock().await;
        let (stdin, lines) = pipe.as_mut().context("the child's stdin is closed")?;
        stdin
            .write_all(format!("{HEAP_REQUEST}\n").as_bytes())
            .await?;
        stdin.flush().await?;
        let answer = tokio::time::timeout(std::time::Duration::from_secs(10), lines.next_line())
            .await
            .context("the child did not report its heap in time")??
            .context("the child closed its stdout")?;
        answer
            .trim()
            .parse()
            .with_context(|| format!("the child's heap report {answer:?} is not a number"))
    }

    /// Closes the child's stdin, which asks it to stop.
    pub(crate) async fn close(&self) {
        self.pipe.lock().await.take();
    }
}
