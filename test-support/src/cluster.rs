//! A cluster of one domain: several replicas of the homeserver, each a separate
//! process of the real `conclave-homeserver` binary (`run`, with a TOML file
//! this harness writes), all on one fresh PostgreSQL database and, when asked,
//! a private `redis-server` ([`TestRedis`](crate::TestRedis)).
//!
//! Separate processes, not tasks in the test's process, because what a cluster
//! must survive happens to processes: SIGKILL ([`TestCluster::kill`]), SIGTERM
//! ([`TestCluster::terminate`]), a restart on the same addresses
//! ([`TestCluster::restart`]).
//!
//! Every cluster takes a loopback prefix of its own, `127.R.S.0/24` with `R`
//! and `S` random; replica `i` listens on `127.R.S.(i+1)`, its client API and
//! HTTP endpoint on ports chosen once (bound and released before the first
//! start) and kept across restarts, so that the clients of a replica find it
//! where they did. Plain-text gRPC is fine there: all of 127.0.0.0/8 is
//! loopback, for the homeserver and for the client library alike.
//!
//! Each replica's standard output and error go to files in the cluster's
//! temporary directory (appended across restarts, each run opened by a marker
//! line). When a replica exits that was not stopped on purpose, the last lines
//! of its log are printed at once, and the cluster panics when dropped (failing
//! the test); when a test fails (panics) with a cluster alive, the cluster
//! prints the last lines of every replica's log as it is dropped. Dropping the
//! cluster kills the processes it started (by their handles, never by name).
//!
//! [`TestCluster::start_processes`] runs replicas the test describes itself
//! (arguments, whole environment, working directory, readiness path), as the
//! chart harness ([`crate::rendered_deployment`]) does from a rendered pod,
//! with the same watching, logs and clean-up.
//!
//! The binary is found beside the running test executable
//! (`target/<profile>/conclave-homeserver`, the test being
//! `target/<profile>/deps/<name>-<hash>`), or at `CONCLAVE_HOMESERVER_BINARY`.
//! `cargo test --workspace` builds it (it is a target of the homeserver
//! package, whose own tests need it); `cargo test -p` of another package does
//! not, so the harness refuses a missing binary, or one older than a source
//! it was built from (by cargo's dep-info beside it), with the command that
//! builds it.

use crate::database::{DatabaseChoice, TestDatabase};
use crate::redis_server::TestRedis;
use crate::wait::{Backoff, within};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

/// Longest a replica may take from its start to a ready `/readyz` (its first
/// start runs the migrations; two cores are shared by many test processes).
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Longest a replica may take to exit after SIGTERM, in [`TestCluster::terminate`],
/// or after SIGKILL.
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

/// How many lines of a log are printed when a replica dies or a test fails.
pub(crate) const LOG_TAIL_LINES: usize = 60;

/// How often the watcher looks for replicas that exited on their own.
const WATCH_INTERVAL: Duration = Duration::from_millis(100);

/// Environment variable naming the homeserver binary, to use another than the
/// one beside the test executable.
pub const BINARY_VARIABLE: &str = "CONCLAVE_HOMESERVER_BINARY";

/// How to start a [`TestCluster`].
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// How many replicas (at least 1, at most 254).
    pub replicas: usize,
    /// Whether to start a private `redis-server` and pass it to every
    /// replica in `[redis]` (`url`, and a `key_prefix` of the cluster's own),
    /// which makes the replicas a cluster.
    pub redis: bool,
    /// The cluster's domain (default `localhost`).
    pub domain: String,
    /// TOML merged over what the harness writes (tables key by key; a value
    /// given here wins), e.g. `"[groups]\npast_epoch_window = 3"`.
    pub extra_toml: String,
    /// Environment variables of every replica (e.g. `RUST_LOG`, which the
    /// replicas otherwise take from the test's environment).
    pub env: Vec<(String, String)>,
}

impl ClusterOptions {
    /// `replicas` replicas of `localhost`, without Redis.
    pub fn replicas(replicas: usize) -> ClusterOptions {
        ClusterOptions {
            replicas,
            redis: false,
            domain: "localhost".to_owned(),
            extra_toml: String::new(),
            env: Vec::new(),
        }
    }

    /// With a private Redis.
    pub fn with_redis(self) -> ClusterOptions {
        ClusterOptions {
            redis: true,
            ..self
        }
    }

    pub fn domain(self, domain: &str) -> ClusterOptions {
        ClusterOptions {
            domain: domain.to_owned(),
            ..self
        }
    }

    /// Sets `name` to `value` in every replica's environment.
    pub fn env(mut self, name: &str, value: &str) -> ClusterOptions {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Adds TOML to merge over the harness's configuration (see
    /// [`ClusterOptions::extra_toml`]); may be called more than once.
    pub fn config(mut self, toml: &str) -> ClusterOptions {
        self.extra_toml.push('\n');
        self.extra_toml.push_str(toml);
        self
    }
}

/// How to run one replica's process when the test describes it itself (as
/// the chart harness does from a rendered pod) rather than from
/// [`ClusterOptions`]: see [`TestCluster::start_processes`].
#[derive(Debug, Clone)]
pub struct ReplicaProcess {
    /// The arguments of the homeserver binary (e.g. `--config FILE run`).
    pub args: Vec<OsString>,
    /// The process's whole environment: nothing of the test's is inherited,
    /// as nothing of a node's reaches a container.
    pub env: Vec<(String, String)>,
    /// The working directory.
    pub current_dir: PathBuf,
    /// Where its client API listens (for [`TestCluster::client_url`]).
    pub client_address: SocketAddr,
    /// Where its readiness endpoint listens, and its path (`/readyz`).
    pub http_address: SocketAddr,
    pub ready_path: String,
    /// Its configuration file (for [`TestCluster::config_path`]).
    pub config_path: PathBuf,
}

/// Replicas of one domain, each a process of the real binary, on one
/// PostgreSQL database (and a private Redis when asked). Everything it started
/// is stopped when it is dropped.
pub struct TestCluster {
    /// Shared with the watcher thread.
    replicas: Arc<Mutex<Vec<Replica>>>,
    /// Tells the watcher to stop.
    watching: Arc<AtomicBool>,
    watcher: Option<JoinHandle<()>>,
    redis: Option<TestRedis>,
    binary: PathBuf,
    /// Set in every replica's environment ([`ClusterOptions::env`]).
    env: Vec<(String, String)>,
    /// Declared after the replicas, so dropped after them: the database goes
    /// when no replica uses it any more.
    database: TestDatabase,
    /// Configuration files and logs (kept until the cluster is dropped).
    directory: tempfile::TempDir,
}

/// One replica: its addresses and files, and its process while it runs.
struct Replica {
    index: usize,
    client_address: SocketAddr,
    http_address: SocketAddr,
    config_path: PathBuf,
    /// The binary's arguments: `--config FILE run` for the harness's own
    /// configurations.
    args: Vec<OsString>,
    /// `Some`: the whole environment ([`ReplicaProcess::env`]); `None`: the
    /// test's, without its `CONCLAVE_*` variables, plus the cluster's
    /// [`ClusterOptions::env`].
    env: Option<Vec<(String, String)>>,
    current_dir: Option<PathBuf>,
    /// The readiness endpoint's path on `http_address`.
    ready_path: String,
    log_path: PathBuf,
    /// The running process, `None` once it exited and was reaped.
    child: Option<Child>,
    /// How many times it was started, for the log's markers.
    runs: usize,
    /// Set when the harness stops the replica on purpose, so that its exit is
    /// expected; cleared when it starts again.
    stopping: bool,
    /// How it exited on its own, if it did (reported when the cluster drops).
    died: Option<ExitStatus>,
}

impl TestCluster {
    /// Creates the database (and Redis), writes each replica's configuration,
    /// starts the first replica and waits until it is ready (it migrates the
    /// database), then starts the others side by side and waits for them.
    pub async fn start(options: ClusterOptions) -> TestCluster {
        assert!(
            (1..=254).contains(&options.replicas),
            "a cluster has 1 to 254 replicas"
        );
        let binary = homeserver_binary();
        let directory = tempfile::Builder::new()
            .prefix("conclave-cluster-")
            .tempdir()
            .expect("cannot create a temporary directory");
        let database = TestDatabase::create(DatabaseChoice::Postgres).await;
        let redis = if options.redis {
            Some(TestRedis::start().await)
        } else {
            None
        };
        let extra: toml::Table = options.extra_toml.parse().unwrap_or_else(|error| {
            panic!(
                "the cluster's extra TOML does not parse: {error}\n{}",
                options.extra_toml
            )
        });
        // Random per cluster, so that clusters of tests running side by side
        // (and anything else on 127.0.0.x) never want the same address.
        let prefix = random_bytes::<2>();
        let prefix = [prefix[0] % 100 + 100, prefix[1]];
        // Its own keys and channels, should a test point replicas of two
        // clusters at one Redis.
        let key_prefix = format!("conclave-test-{}", hex::encode(random_bytes::<6>()));
        let mut replicas = Vec::with_capacity(options.replicas);
        for index in 0..options.replicas {
            let host = Ipv4Addr::new(
                127,
                prefix[0],
                prefix[1],
                u8::try_from(index + 1).expect("at most 254 replicas"),
            );
            let client_address = free_address(host);
            let http_address = free_address(host);
            let mut config = toml::Table::new();
            config.insert("domain".into(), options.domain.clone().into());
            config.insert(
                "database".into(),
                table([
                    ("url", database.url().into()),
                    // Several replicas share the server with other tests.
                    ("max_connections", 5.into()),
                ]),
            );
            config.insert(
                "client_api".into(),
                table([("listen", client_address.to_string().into())]),
            );
            config.insert(
                "http".into(),
                table([("listen", http_address.to_string().into())]),
            );
            // Every client of a test connects from 127.0.0.1, and tests enrol
            // many more devices than one address may by default (as in
            // `TestHomeserver`): the attempt limits are as loose as allowed.
            config.insert(
                "limits".into(),
                table([
                    ("auth_attempts_per_minute", 60_000.into()),
                    ("auth_attempt_burst", 10_000.into()),
                    ("login_failures_before_backoff", 1000.into()),
                ]),
            );
            if let Some(redis) = &redis {
                config.insert(
                    "redis".into(),
                    table([
                        ("url", redis.url().into()),
                        ("key_prefix", key_prefix.clone().into()),
                    ]),
                );
            }
            merge(&mut config, &extra);
            let config_path = directory.path().join(format!("replica-{index}.toml"));
            std::fs::write(&config_path, config.to_string())
                .unwrap_or_else(|error| panic!("cannot write {}: {error}", config_path.display()));
            replicas.push(Replica {
                index,
                client_address,
                http_address,
                args: vec!["--config".into(), config_path.clone().into(), "run".into()],
                config_path,
                env: None,
                current_dir: None,
                ready_path: "/readyz".to_owned(),
                log_path: directory.path().join(format!("replica-{index}.log")),
                child: None,
                runs: 0,
                stopping: false,
                died: None,
            });
        }
        let cluster =
            TestCluster::watched(replicas, redis, binary, options.env, database, directory);
        // The first replica alone, so that it migrates the empty database
        // before the others look at it.
        cluster.spawn(0);
        cluster.wait_until_ready(0).await;
        for index in 1..options.replicas {
            cluster.spawn(index);
        }
        for index in 1..options.replicas {
            cluster.wait_until_ready(index).await;
        }
        cluster
    }

    /// Starts one replica per `processes` entry, all side by side (the
    /// database was migrated beforehand, as a Helm hook does before a
    /// Deployment's pods start), and waits until each is ready. `database`
    /// and `redis` are what the processes' environments name; the cluster
    /// keeps them until it is dropped, after its replicas.
    pub async fn start_processes(
        processes: Vec<ReplicaProcess>,
        database: TestDatabase,
        redis: Option<TestRedis>,
    ) -> TestCluster {
        assert!(
            (1..=254).contains(&processes.len()),
            "a cluster has 1 to 254 replicas"
        );
        let binary = homeserver_binary();
        let directory = tempfile::Builder::new()
            .prefix("conclave-cluster-")
            .tempdir()
            .expect("cannot create a temporary directory");
        let replicas: Vec<Replica> = processes
            .into_iter()
            .enumerate()
            .map(|(index, process)| Replica {
                index,
                client_address: process.client_address,
                http_address: process.http_address,
                config_path: process.config_path,
                args: process.args,
                env: Some(process.env),
                current_dir: Some(process.current_dir),
                ready_path: process.ready_path,
                log_path: directory.path().join(format!("replica-{index}.log")),
                child: None,
                runs: 0,
                stopping: false,
                died: None,
            })
            .collect();
        let count = replicas.len();
        let cluster =
            TestCluster::watched(replicas, redis, binary, Vec::new(), database, directory);
        for index in 0..count {
            cluster.spawn(index);
        }
        for index in 0..count {
            cluster.wait_until_ready(index).await;
        }
        cluster
    }

    /// The cluster of `replicas` (none started yet), with the thread that
    /// watches them for a replica exiting on its own.
    fn watched(
        replicas: Vec<Replica>,
        redis: Option<TestRedis>,
        binary: PathBuf,
        env: Vec<(String, String)>,
        database: TestDatabase,
        directory: tempfile::TempDir,
    ) -> TestCluster {
        let replicas = Arc::new(Mutex::new(replicas));
        let watching = Arc::new(AtomicBool::new(true));
        let watcher = {
            let (replicas, watching) = (Arc::clone(&replicas), Arc::clone(&watching));
            std::thread::spawn(move || watch(&replicas, &watching))
        };
        TestCluster {
            replicas,
            watching,
            watcher: Some(watcher),
            redis,
            binary,
            env,
            database,
            directory,
        }
    }

    /// How many replicas the cluster has (running or not).
    pub fn replicas(&self) -> usize {
        self.lock().len()
    }

    /// `http://ADDRESS:PORT` of replica `index`'s client API, for the client
    /// library and `conclave --server`.
    pub fn client_url(&self, index: usize) -> String {
        format!("http://{}", self.client_address(index))
    }

    pub fn client_address(&self, index: usize) -> SocketAddr {
        self.replica(index, |replica| replica.client_address)
    }

    /// `http://ADDRESS:PORT` of replica `index`'s HTTP endpoint (`/healthz`,
    /// `/readyz`).
    pub fn http_url(&self, index: usize) -> String {
        format!("http://{}", self.http_address(index))
    }

    pub fn http_address(&self, index: usize) -> SocketAddr {
        self.replica(index, |replica| replica.http_address)
    }

    /// The configuration file replica `index` runs with.
    pub fn config_path(&self, index: usize) -> PathBuf {
        self.replica(index, |replica| replica.config_path.clone())
    }

    /// The file replica `index`'s standard output and error go to.
    pub fn log_path(&self, index: usize) -> PathBuf {
        self.replica(index, |replica| replica.log_path.clone())
    }

    /// The process id of replica `index`, while it runs.
    pub fn pid(&self, index: usize) -> Option<u32> {
        self.replica(index, |replica| replica.child.as_ref().map(Child::id))
    }

    /// The URL of the cluster's database (PostgreSQL), e.g. to read what the
    /// replicas stored.
    pub fn database_url(&self) -> &str {
        self.database.url()
    }

    /// The private Redis; panics if the cluster was started without one.
    pub fn redis(&mut self) -> &mut TestRedis {
        self.redis
            .as_mut()
            .expect("this cluster was started without Redis (ClusterOptions::with_redis)")
    }

    /// The directory of the configuration files and logs.
    pub fn directory(&self) -> &Path {
        self.directory.path()
    }

    /// Kills replica `index` with SIGKILL and waits until it is gone.
    pub async fn kill(&self, index: usize) {
        self.signal(index, Signal::SIGKILL);
        self.wait_for_exit(index, "SIGKILL").await;
    }

    /// Sends replica `index` SIGTERM and waits until it has exited (for at
    /// most [`EXIT_TIMEOUT`], then panics); returns how it exited.
    pub async fn terminate(&self, index: usize) -> ExitStatus {
        self.signal(index, Signal::SIGTERM);
        self.wait_for_exit(index, "SIGTERM").await
    }

    /// Starts replica `index` again (it must have been stopped with
    /// [`kill`](Self::kill) or [`terminate`](Self::terminate)), on the same
    /// addresses and configuration, and waits until it is ready.
    pub async fn restart(&self, index: usize) {
        assert!(
            self.pid(index).is_none(),
            "replica {index} is still running; kill or terminate it first"
        );
        self.spawn(index);
        self.wait_until_ready(index).await;
    }

    /// Whether replica `index`'s `/readyz` answers 200 now.
    pub async fn is_ready(&self, index: usize) -> bool {
        let path = self.replica(index, |replica| replica.ready_path.clone());
        http_get_ok(self.http_address(index), &path).await
    }

    /// The last lines of replica `index`'s log (all its runs).
    pub fn log_tail(&self, index: usize) -> String {
        tail(&self.log_path(index), LOG_TAIL_LINES)
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Replica>> {
        // A panic while the lock was held leaves the data usable.
        self.replicas
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn replica<T>(&self, index: usize, read: impl FnOnce(&Replica) -> T) -> T {
        let replicas = self.lock();
        let replica = replicas
            .get(index)
            .unwrap_or_else(|| panic!("the cluster has no replica {index}"));
        read(replica)
    }

    /// Starts replica `index`'s process, its output appended to its log.
    fn spawn(&self, index: usize) {
        let mut replicas = self.lock();
        let replica = &mut replicas[index];
        assert!(replica.child.is_none(), "replica {index} is running");
        replica.runs += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&replica.log_path)
            .unwrap_or_else(|error| panic!("cannot open {}: {error}", replica.log_path.display()));
        let args: Vec<String> = replica
            .args
            .iter()
            .map(|arg| arg.to_string_lossy().into_owned())
            .collect();
        writeln!(
            log,
            "===== replica {index}, run {}: {} {}",
            replica.runs,
            self.binary.display(),
            args.join(" ")
        )
        .expect("cannot write the replica's log");
        let stderr = log.try_clone().expect("cannot share the replica's log");
        let mut command = Command::new(&self.binary);
        command
            .args(&replica.args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(stderr));
        if let Some(directory) = &replica.current_dir {
            command.current_dir(directory);
        }
        match &replica.env {
            Some(env) => {
                command.env_clear();
                command.envs(env.iter().map(|(name, value)| (name, value)));
            }
            None => {
                // Plain log lines in the files, as they are printed on failure.
                command.env("NO_COLOR", "1");
                // The file is the whole configuration: CONCLAVE_* variables of the
                // test's environment would override it.
                for (name, _) in std::env::vars_os() {
                    if name.to_string_lossy().starts_with("CONCLAVE_") {
                        command.env_remove(name);
                    }
                }
                command.envs(self.env.iter().map(|(name, value)| (name, value)));
            }
        }
        let child = command
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {}: {error}", self.binary.display()));
        replica.child = Some(child);
        replica.stopping = false;
        replica.died = None;
    }

    /// Sends `signal` to replica `index`, marking its exit as expected.
    fn signal(&self, index: usize, signal: Signal) {
        let mut replicas = self.lock();
        let replica = &mut replicas[index];
        // Under the lock: the child cannot be reaped meanwhile, so the pid is
        // still the replica's.
        let child = replica.child.as_mut().unwrap_or_else(|| {
            panic!("replica {index} is not running");
        });
        if child.try_wait().ok().flatten().is_some() {
            panic!(
                "replica {index} had exited already; its log ends:\n{}",
                tail(&replica.log_path, LOG_TAIL_LINES)
            );
        }
        replica.stopping = true;
        let pid = Pid::from_raw(i32::try_from(child.id()).expect("a pid fits in i32"));
        kill(pid, signal).unwrap_or_else(|error| panic!("cannot send {signal} to {pid}: {error}"));
    }

    /// Waits until replica `index` has exited and reaps it.
    async fn wait_for_exit(&self, index: usize, after: &str) -> ExitStatus {
        let what = format!("replica {index} exiting after {after}");
        within(EXIT_TIMEOUT, &what, async {
            let mut backoff = Backoff::new();
            loop {
                {
                    let mut replicas = self.lock();
                    let replica = &mut replicas[index];
                    let Some(child) = replica.child.as_mut() else {
                        panic!("replica {index} is not running");
                    };
                    if let Some(status) = child.try_wait().expect("cannot wait for a replica") {
                        replica.child = None;
                        return status;
                    }
                }
                backoff.pause().await;
            }
        })
        .await
    }

    /// Waits until replica `index`'s `/readyz` answers 200; panics with its log
    /// if it exits first or takes longer than [`READY_TIMEOUT`].
    async fn wait_until_ready(&self, index: usize) {
        let address = self.http_address(index);
        let path = self.replica(index, |replica| replica.ready_path.clone());
        wait_until_answering(
            &format!("replica {index}"),
            &format!("become ready at http://{address}{path}"),
            READY_TIMEOUT,
            || self.exited(index),
            || self.log_tail(index),
            || http_get_ok(address, &path),
        )
        .await;
    }

    /// How replica `index` exited, if it did (without reaping an expected exit).
    fn exited(&self, index: usize) -> Option<ExitStatus> {
        let mut replicas = self.lock();
        let replica = &mut replicas[index];
        if let Some(status) = replica.died {
            return Some(status);
        }
        replica.child.as_mut()?.try_wait().ok().flatten()
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        self.watching.store(false, Ordering::Relaxed);
        if let Some(watcher) = self.watcher.take() {
            let _ = watcher.join();
        }
        let failing = std::thread::panicking();
        let mut died = Vec::new();
        let mut replicas = self.lock();
        for replica in replicas.iter_mut() {
            if let Some(mut child) = replica.child.take() {
                // Killed by its handle: std never signals a reaped child.
                let _ = child.kill();
                let _ = child.wait();
            }
            if failing {
                eprintln!(
                    "----- the test failed; replica {} ({}) log ends:\n{}",
                    replica.index,
                    replica.client_address,
                    tail(&replica.log_path, LOG_TAIL_LINES)
                );
            }
            if let Some(status) = replica.died {
                died.push(format!("replica {} ({status})", replica.index));
            }
        }
        drop(replicas);
        if !died.is_empty() && !failing {
            panic!(
                "{} exited on their own during the test (logs above, and in {})",
                died.join(", "),
                self.directory.path().display()
            );
        }
    }
}

/// The watcher thread: reaps replicas that exit on their own, printing the end
/// of their logs at once (the test may go on for a while, failing elsewhere).
fn watch(replicas: &Mutex<Vec<Replica>>, watching: &AtomicBool) {
    while watching.load(Ordering::Relaxed) {
        {
            let mut replicas = replicas
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for replica in replicas.iter_mut() {
                if replica.stopping {
                    continue;
                }
                let Some(child) = replica.child.as_mut() else {
                    continue;
                };
                if let Ok(Some(status)) = child.try_wait() {
                    replica.child = None;
                    replica.died = Some(status);
                    eprintln!(
                        "----- replica {} ({}) exited unexpectedly ({status}); its log ends:\n{}",
                        replica.index,
                        replica.client_address,
                        tail(&replica.log_path, LOG_TAIL_LINES)
                    );
                }
            }
        }
        std::thread::sleep(WATCH_INTERVAL);
    }
}

/// The `conclave-homeserver` binary to run: `CONCLAVE_HOMESERVER_BINARY`, or
/// the one beside the running test executable. Panics, with the command that
/// builds it, when it is missing or older than a source it was built from.
pub fn homeserver_binary() -> PathBuf {
    workspace_binary(
        "conclave-homeserver",
        BINARY_VARIABLE,
        "cargo build -p conclave-homeserver --bin conclave-homeserver (scripts/test and cargo test --workspace build it)",
    )
}

/// The `conclave` CLI to run, for tests outside its package (which cannot
/// use `CARGO_BIN_EXE_conclave`): `CONCLAVE_CLIENT_BINARY`, or the one beside
/// the running test executable, checked as [`homeserver_binary`] is.
pub fn client_binary() -> PathBuf {
    workspace_binary(
        "conclave",
        CLIENT_BINARY_VARIABLE,
        "cargo build -p conclave-client --bin conclave (scripts/test and cargo test --workspace build it)",
    )
}

/// Environment variable naming the `conclave` CLI, to use another than the
/// one beside the test executable.
pub const CLIENT_BINARY_VARIABLE: &str = "CONCLAVE_CLIENT_BINARY";

/// The binary `name` of this workspace: `$variable`, or the one beside the
/// running test executable; panics with `build` when it is missing or stale.
fn workspace_binary(name: &str, variable: &str, build: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(variable) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "{variable}={} is not a file",
            path.display()
        );
        return path;
    }
    let test_executable = std::env::current_exe().expect("cannot find the test executable");
    // target/<profile>/deps/<test>-<hash>: the binary is in target/<profile>.
    let profile_directory = test_executable
        .parent()
        .filter(|directory| directory.ends_with("deps"))
        .and_then(Path::parent)
        .unwrap_or_else(|| {
            panic!(
                "the test executable {} is not in target/<profile>/deps; set {variable}",
                test_executable.display()
            )
        });
    let binary = profile_directory.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    let built = std::fs::metadata(&binary)
        .and_then(|metadata| metadata.modified())
        .unwrap_or_else(|_| {
            panic!(
                "this test runs the real {name} binary, and {} is missing: build it with\n    {build}",
                binary.display()
            )
        });
    if let Some(newer) = newer_source(&binary, built) {
        panic!(
            "{} is older than {}: build it again with\n    {build}",
            binary.display(),
            newer.display()
        );
    }
    binary
}

/// A source file the binary was built from changed after `built`, if any:
/// the files its dep-info (`conclave-homeserver.d`, written by cargo beside
/// it) names, which is what cargo itself looks at to decide a rebuild.
fn newer_source(binary: &Path, built: SystemTime) -> Option<PathBuf> {
    let dep_info = std::fs::read_to_string(binary.with_extension("d")).ok()?;
    let (_, sources) = dep_info.lines().next()?.split_once(": ")?;
    // Paths are separated by spaces; a space inside a path is escaped.
    let sources = sources.replace("\\ ", "\0");
    sources
        .split(' ')
        .filter(|source| !source.is_empty())
        .map(|source| PathBuf::from(source.replace('\0', " ")))
        .find(|source| {
            std::fs::metadata(source)
                .and_then(|metadata| metadata.modified())
                .is_ok_and(|modified| modified > built)
        })
}

/// A loopback address with a port no one listens on now (bound and released:
/// the replica binds it itself, and keeps it across restarts).
pub fn free_address(host: Ipv4Addr) -> SocketAddr {
    let listener = TcpListener::bind((host, 0))
        .unwrap_or_else(|error| panic!("cannot bind {host}:0: {error}"));
    listener
        .local_addr()
        .expect("a bound socket has an address")
}

/// A TOML table of `entries`.
fn table<const N: usize>(entries: [(&str, toml::Value); N]) -> toml::Value {
    toml::Value::Table(
        entries
            .into_iter()
            .map(|(key, value)| (key.to_owned(), value))
            .collect(),
    )
}

/// Merges `extra` into `base`: tables key by key, any other value replaced.
fn merge(base: &mut toml::Table, extra: &toml::Table) {
    for (key, value) in extra {
        match (base.get_mut(key), value) {
            (Some(toml::Value::Table(base_table)), toml::Value::Table(extra_table)) => {
                merge(base_table, extra_table);
            }
            _ => {
                base.insert(key.clone(), value.clone());
            }
        }
    }
}

/// Waits until a service process this fixture started answers (`answers`
/// returns true), asking again with a back-off; panics naming `name` with the
/// end of its log at `log_path` if the process exits first, or if it does not
/// answer within `limit` (`what` says what was asked, "answer PING").
pub(crate) async fn wait_for_service<F: std::future::Future<Output = bool>>(
    name: &str,
    what: &str,
    child: &mut std::process::Child,
    log_path: &Path,
    limit: Duration,
    answers: impl FnMut() -> F,
) {
    wait_until_answering(
        name,
        what,
        limit,
        || child.try_wait().ok().flatten(),
        || tail(log_path, LOG_TAIL_LINES),
        answers,
    )
    .await;
}

/// Asks `answers` again with a back-off until it returns true; panics with
/// `log_tail()` if `exited()` reports the process gone first, or after `limit`.
async fn wait_until_answering<F: std::future::Future<Output = bool>>(
    name: &str,
    what: &str,
    limit: Duration,
    mut exited: impl FnMut() -> Option<ExitStatus>,
    log_tail: impl Fn() -> String,
    mut answers: impl FnMut() -> F,
) {
    let answered = tokio::time::timeout(limit, async {
        let mut backoff = crate::wait::Backoff::new();
        loop {
            if let Some(status) = exited() {
                panic!(
                    "{name} exited while starting ({status}); its log ends:\n{}",
                    log_tail()
                );
            }
            if answers().await {
                return;
            }
            backoff.pause().await;
        }
    })
    .await;
    if answered.is_err() {
        panic!(
            "{name} did not {what} within {} seconds; its log ends:\n{}",
            limit.as_secs(),
            log_tail()
        );
    }
}

/// The last `lines` lines of the file at `path` (its last 64 KiB at most).
pub(crate) fn tail(path: &Path, lines: usize) -> String {
    let Ok(mut file) = File::open(path) else {
        return format!("(no log at {})", path.display());
    };
    let length = file.metadata().map(|metadata| metadata.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(length.saturating_sub(64 * 1024)));
    let mut bytes = Vec::new();
    let _ = file.read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(lines);
    let mut tail = all[start..].join("\n");
    tail.push_str(&format!("\n(whole log: {})", path.display()));
    tail
}

/// A minimal HTTP/1.1 GET answered with 200, so tests need no HTTP client
/// library.
pub async fn http_get_ok(address: SocketAddr, path: &str) -> bool {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let Ok(mut stream) = tokio::net::TcpStream::connect(address).await else {
        return false;
    };
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response).await;
    response.starts_with("HTTP/1.1 200")
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).expect("the operating system's random number generator failed");
    bytes
}
