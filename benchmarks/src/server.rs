//! The homeserver under test: `conclave_test_support`'s in-process server on
//! 127.0.0.1, on a fresh database, with the limits that would get in
//! the benchmark's way raised and everything else at its defaults (notably a
//! pool of 10 database connections). With `--server-process`, benchmarks 1 to 4
//! run it in a child process instead (see [`Placement`]).

use crate::memory::{HEAP_REQUEST, HeapProbe, ProcessMemory};
use conclave_homeserver::config::Config;
use conclave_test_support::{DatabaseChoice, TestHomeserver, TestOptions};
use std::sync::Arc;
use std::time::Duration;

/// How long a graceful stop may take.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Starts a homeserver on a fresh database of this kind.
pub(crate) async fn start(database: DatabaseChoice) -> TestHomeserver {
    TestHomeserver::start_with(TestOptions::on(database).configure(raise_limits)).await
}

/// The limits every homeserver of the benchmark runs with, raised from the
/// defaults: building a 10,000-member group claims key packages faster than a
/// person would, the default limit is exactly 10,000 members, and the fan-out
/// multiplexes 50 Subscribe streams (of different devices) per HTTP/2
/// connection where a real device opens one or two (default limit 8).
pub(crate) fn raise_limits(config: &mut Config) {
    config.key_packages.claims_per_minute = 1_000_000;
    config.groups.max_members = 100_000;
    config.limits.subscribe_streams_per_connection = 50;
}

/// Stops the server gracefully and drops its database. A server that does not
/// stop within a while is dropped instead, which aborts it.
pub(crate) async fn stop(server: TestHomeserver) {
    if tokio::time::timeout(STOP_TIMEOUT, server.stop())
        .await
        .is_err()
    {
        eprintln!("  the homeserver did not stop within {STOP_TIMEOUT:?}; aborted it");
    }
}

/// The name used in tables.
pub(crate) fn database_name(database: DatabaseChoice) -> &'static str {
    match database {
        DatabaseChoice::Sqlite => "SQLite",
        DatabaseChoice::Postgres => "PostgreSQL",
    }
}

/// Where the homeserver of a part runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Placement {
    /// In the benchmark's process, beside its clients (the default).
    InProcess,
    /// In a child process of its own (this binary again, `--serve`), so that
    /// its memory and CPU can be told apart from the clients'.
    OwnProcess,
}

/// How long a child homeserver may take to create its database and listen.
const CHILD_START_TIMEOUT: Duration = Duration::from_secs(60);

/// A homeserver under test, in this process or in a child process.
pub(crate) enum Homeserver {
    // Both boxed: a TestHomeserver (with its configuration) is four times the
    // size of the child's handle, itself a few hundred bytes.
    InProcess(Box<TestHomeserver>),
    OwnProcess(Box<ChildHomeserver>),
}

/// A homeserver in a child process: the benchmark binary run with `--serve`,
/// which answers with its client URL and database URL on stdout and stops
/// gracefully (dropping its database) when its stdin closes.
pub(crate) struct ChildHomeserver {
    child: tokio::process::Child,
    client_url: String,
    database_url: String,
    /// Holds the child's stdin and stdout.
    heap: Arc<HeapProbe>,
}

impl Homeserver {
    pub(crate) async fn start(
        database: DatabaseChoice,
        placement: Placement,
    ) -> anyhow::Result<Homeserver> {
        match placement {
            Placement::InProcess => Ok(Homeserver::InProcess(Box::new(start(database).await))),
            Placement::OwnProcess => Ok(Homeserver::OwnProcess(Box::new(
                start_child(database).await?,
            ))),
        }
    }

    pub(crate) fn client_url(&self) -> String {
        match self {
            Homeserver::InProcess(server) => server.client_url(),
            Homeserver::OwnProcess(child) => child.client_url.clone(),
        }
    }

    pub(crate) fn database_url(&self) -> String {
        match self {
            Homeserver::InProcess(server) => server.config().database.url.clone(),
            Homeserver::OwnProcess(child) => child.database_url.clone(),
        }
    }

    /// The homeserver's own process, when it has one: in this process its
    /// memory cannot be told apart from the clients'.
    pub(crate) fn own_process(&self) -> Option<ProcessMemory> {
        match self {
            Homeserver::InProcess(_) => None,
            Homeserver::OwnProcess(child) => child.child.id().map(ProcessMemory::of),
        }
    }

    /// The live heap of the homeserver's own process, when it has one.
    pub(crate) fn heap_probe(&self) -> Option<Arc<HeapProbe>> {
        match self {
            Homeserver::InProcess(_) => None,
            Homeserver::OwnProcess(child) => Some(child.heap.clone()),
        }
    }

    pub(crate) async fn stop(self) {
        match self {
            Homeserver::InProcess(server) => stop(*server).await,
            Homeserver::OwnProcess(child) => stop_child(*child).await,
        }
    }
}

async fn start_child(database: DatabaseChoice) -> anyhow::Result<ChildHomeserver> {
    use anyhow::Context as _;
    use tokio::io::AsyncBufReadExt as _;
    let executable = std::env::current_exe().context("finding the benchmark's executable")?;
    let mut child = tokio::process::Command::new(executable)
        .args(["--serve", serve_argument(database)])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("starting the homeserver's process")?;
    let stdout = child.stdout.take().context("the child has no stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let client_url = next_line(&mut lines).await?;
    let database_url = next_line(&mut lines).await?;
    let stdin = child.stdin.take().context("the child has no stdin")?;
    eprintln!(
        "  homeserver in process {} at {client_url}",
        child.id().unwrap_or_default()
    );
    Ok(ChildHomeserver {
        child,
        client_url,
        database_url,
        heap: Arc::new(HeapProbe::new(stdin, lines)),
    })
}

/// The next line the child writes on stdout, within [`CHILD_START_TIMEOUT`].
async fn next_line(
    lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
) -> anyhow::Result<String> {
    use anyhow::Context as _;
    tokio::time::timeout(CHILD_START_TIMEOUT, lines.next_line())
        .await
        .context("the homeserver's process did not say where it listens in time")?
        .context("reading the homeserver's process's stdout")?
        .context("the homeserver's process exited before it listened")
}

/// Closing the child's stdin asks it to stop; one that does not stop in time
/// is killed (its database is then left behind).
async fn stop_child(mut child: ChildHomeserver) {
    child.heap.close().await;
    match tokio::time::timeout(STOP_TIMEOUT, child.child.wait()).await {
        Ok(Ok(status)) if status.success() => {}
        Ok(Ok(status)) => eprintln!("  the homeserver's process ended with {status}"),
        Ok(Err(error)) => eprintln!("  waiting for the homeserver's process: {error}"),
        Err(_) => {
            eprintln!("  the homeserver's process did not stop within {STOP_TIMEOUT:?}; killed it");
            let _ = child.child.kill().await;
        }
    }
}

/// The value of `--serve` that starts a homeserver on this kind of database.
fn serve_argument(database: DatabaseChoice) -> &'static str {
    match database {
        DatabaseChoice::Sqlite => "sqlite",
        DatabaseChoice::Postgres => "postgres",
    }
}

/// The child's side (`--serve`): starts the homeserver, says where it listens
/// and which database it uses (one line each on stdout), and runs until stdin
/// closes (the parent stopped it, or died).
pub(crate) async fn serve(database: DatabaseChoice) -> anyhow::Result<()> {
    use std::io::Write as _;
    let server = start(database).await;
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{}", server.client_url())?;
        writeln!(stdout, "{}", server.config().database.url)?;
        stdout.flush()?;
    }
    // The parent asks for the live heap on stdin; this returns when stdin
    // closes. Blocking reads on a thread of their own (tokio's stdin is not
    // enabled in this workspace).
    tokio::task::spawn_blocking(|| -> anyhow::Result<()> {
        use std::io::BufRead as _;
        for line in std::io::stdin().lock().lines() {
            let line = line?;
            anyhow::ensure!(line == HEAP_REQUEST, "unknown request {line:?} on stdin");
            let mut stdout = std::io::stdout().lock();
            writeln!(stdout, "{}", crate::ALLOCATOR.allocated())?;
            stdout.flush()?;
        }
        Ok(())
    })
    .await??;
    stop(server).await;
    Ok(())
}
