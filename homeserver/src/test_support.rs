//! An in-process homeserver for tests, in this crate and in others (the client
//! library's end-to-end tests start one). Each server gets a database of its own:
//! an SQLite file in a temporary directory, or a fresh PostgreSQL database on the
//! server named by `CONCLAVE_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`). A test that asks for PostgreSQL
//! fails loudly when it cannot reach it; it never skips.
//!
//! For federation tests, [`TestOptions`] takes the domain and a [`TestFederation`]
//! (the `[federation]` settings and a listener bound in advance, so that every
//! peer's address is known before any server starts).

use crate::config::{Config, FederationConfig, RegistrationPolicy};
use crate::service::{Clock, SystemClock};
use crate::store::Store;
use crate::{Listeners, ServerError, store};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The PostgreSQL server tests use, unless `CONCLAVE_TEST_POSTGRES_URL` says otherwise.
pub const DEFAULT_TEST_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Which database a test server runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseChoice {
    Sqlite,
    Postgres,
}

impl DatabaseChoice {
    /// Both, for tests that must pass on each.
    pub const ALL: [DatabaseChoice; 2] = [DatabaseChoice::Sqlite, DatabaseChoice::Postgres];
}

/// A database that exists for one test and is removed afterwards.
pub struct TestDatabase {
    url: String,
    /// Keeps the SQLite file's directory alive.
    _directory: tempfile::TempDir,
    /// For PostgreSQL: the admin URL and the database's name, to drop it.
    postgres: Option<(String, String)>,
}

impl TestDatabase {
    pub async fn create(choice: DatabaseChoice) -> TestDatabase {
        let directory = tempfile::tempdir().expect("cannot create a temporary directory");
        match choice {
            DatabaseChoice::Sqlite => TestDatabase {
                url: format!(
                    "sqlite://{}?mode=rwc",
                    directory.path().join("conclave.sqlite").display()
                ),
                _directory: directory,
                postgres: None,
            },
            DatabaseChoice::Postgres => {
                let admin_url = std::env::var("CONCLAVE_TEST_POSTGRES_URL")
                    .unwrap_or_else(|_| DEFAULT_TEST_POSTGRES_URL.to_owned());
                let name = format!(
                    "conclave_test_{}",
                    hex::encode(crate::service::secrets::random_bytes_8())
                );
                let url = store::create_postgres_database(&admin_url, &name)
                    .await
                    .unwrap_or_else(|error| {
                        panic!(
                            "this test needs PostgreSQL at {admin_url} (set CONCLAVE_TEST_POSTGRES_URL, or start it; see README.md): {error}"
                        )
                    });
                TestDatabase {
                    url,
                    _directory: directory,
                    postgres: Some((admin_url, name)),
                }
            }
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some((admin_url, name)) = self.postgres.take() else {
            return;
        };
        // Drop runs outside async, maybe inside a runtime: use a thread of its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime
                .block_on(store::drop_postgres_database(&admin_url, &name))
                .ok()
        })
        .join();
        if !matches!(dropped, Ok(Some(()))) {
            eprintln!("warning: could not drop a test database");
        }
    }
}

/// A clock that tests can move forward.
#[derive(Debug, Default)]
pub struct AdjustableClock {
    offset_ms: AtomicI64,
}

impl AdjustableClock {
    pub fn advance(&self, by: Duration) {
        let by_ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.offset_ms.fetch_add(by_ms, Ordering::SeqCst);
    }
}

impl Clock for AdjustableClock {
    fn now_ms(&self) -> i64 {
        SystemClock.now_ms() + self.offset_ms.load(Ordering::SeqCst)
    }
}

/// How to start a test server.
pub struct TestOptions {
    pub database: DatabaseChoice,
    pub registration_policy: RegistrationPolicy,
    pub clock: Arc<dyn Clock>,
    /// The homeserver's domain (default `localhost`).
    pub domain: String,
    /// Federation on, with these settings; off when `None`.
    pub federation: Option<TestFederation>,
    /// Applied to the configuration last, for anything else a test needs.
    pub configure: Box<dyn FnOnce(&mut Config) + Send>,
}

impl Default for TestOptions {
    fn default() -> Self {
        TestOptions {
            database: DatabaseChoice::Sqlite,
            registration_policy: RegistrationPolicy::Open,
            clock: Arc::new(SystemClock),
            domain: "localhost".to_owned(),
            federation: None,
            configure: Box::new(|_| {}),
        }
    }
}

/// The federation side of a test server.
pub struct TestFederation {
    /// The federation API's listener, bound before the server starts (e.g. on
    /// `127.0.0.2:0`) so its address can go into the peers' settings first;
    /// `settings.listen` is set to its address.
    pub listener: TcpListener,
    /// The `[federation]` section: certificate, key, trust roots, peers, limits.
    pub settings: FederationConfig,
}

/// A homeserver running in this process: the client API and HTTP endpoint on
/// 127.0.0.1 ports chosen by the OS (the same again after a restart with
/// [`TestHomeserver::start_on`]), the federation API (if on) on its own
/// listener. Stopped when dropped (or with [`TestHomeserver::stop`]).
pub struct TestHomeserver {
    client_address: SocketAddr,
    http_address: SocketAddr,
    federation_address: Option<SocketAddr>,
    config: Config,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ServerError>>>,
    database: TestDatabase,
}

impl TestHomeserver {
    /// Open registration, SQLite, the system clock.
    pub async fn start() -> TestHomeserver {
        Self::start_with(TestOptions::default()).await
    }

    pub async fn start_with(options: TestOptions) -> TestHomeserver {
        let database = TestDatabase::create(options.database).await;
        let mut config = Config::default();
        config.database.url = database.url().to_owned();
        // Ports chosen by the OS, unless `configure` says otherwise.
        config.client_api.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        config.http.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        config.registration.policy = options.registration_policy;
        config.domain = options.domain;
        let federation_listener = options.federation.map(|federation| {
            config.federation = federation.settings;
            federation.listener
        });
        (options.configure)(&mut config);
        Self::start_on_listener(config, database, options.clock, federation_listener).await
    }

    /// Starts a server on an existing database, e.g. to restart one with the
    /// configuration of its previous run: the client API and the HTTP endpoint
    /// are bound at `config.client_api.listen` and `config.http.listen` (port 0:
    /// 127.0.0.1 on a port chosen by the OS), and with federation on, its
    /// listener at `config.federation.listen`; so clients and peers find the
    /// restarted server where they found the previous one.
    pub async fn start_on(
        config: Config,
        database: TestDatabase,
        clock: Arc<dyn Clock>,
    ) -> TestHomeserver {
        Self::start_on_listener(config, database, clock, None).await
    }

    async fn start_on_listener(
        mut config: Config,
        database: TestDatabase,
        clock: Arc<dyn Clock>,
        federation_listener: Option<TcpListener>,
    ) -> TestHomeserver {
        let federation = match federation_listener {
            Some(listener) => Some(listener),
            None if config.federation.enabled() => Some(
                TcpListener::bind(config.federation.listen)
                    .await
                    .expect("cannot bind the federation listener"),
            ),
            None => None,
        };
        let listeners = Listeners {
            client_api: bind_or_any(config.client_api.listen).await,
            http: bind_or_any(config.http.listen).await,
            federation,
        };
        let client_address = listeners.client_api.local_addr().expect("bound socket");
        let http_address = listeners.http.local_addr().expect("bound socket");
        let federation_address = listeners
            .federation
            .as_ref()
            .map(|listener| listener.local_addr().expect("bound socket"));
        config.client_api.listen = client_address;
        config.http.listen = http_address;
        if let Some(address) = federation_address {
            config.federation.listen = address;
        }
        config.validate().expect("the test configuration is valid");
        let (shutdown, stop) = oneshot::channel::<()>();
        let task = tokio::spawn(crate::run(config.clone(), listeners, clock, async move {
            let _ = stop.await;
        }));
        let server = TestHomeserver {
            client_address,
            http_address,
            federation_address,
            config,
            shutdown: Some(shutdown),
            task: Some(task),
            database,
        };
        server.wait_until_ready().await;
        server
    }

    /// Waits until `/readyz` answers 200, i.e. migrations ran and the API is up.
    async fn wait_until_ready(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if tokio::time::Instant::now() > deadline {
                panic!("the test homeserver did not become ready within 30 seconds");
            }
            if let Some(task) = &self.task
                && task.is_finished()
            {
                panic!("the test homeserver stopped while starting; see its log");
            }
            if readyz_ok(self.http_address).await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `http://127.0.0.1:PORT`, for `conclave --server` and the client library.
    pub fn client_url(&self) -> String {
        format!("http://{}", self.client_address)
    }

    pub fn client_address(&self) -> SocketAddr {
        self.client_address
    }

    pub fn http_address(&self) -> SocketAddr {
        self.http_address
    }

    /// Where the federation API listens, when federation is on.
    pub fn federation_address(&self) -> Option<SocketAddr> {
        self.federation_address
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// What this homeserver's database holds of a group (hosted here, or a
    /// follower's copy), read directly; `None` if it knows no such group. For
    /// tests that check what a refused or repeated request left behind.
    pub async fn stored_group(&self, mls_group_id: &[u8]) -> Option<StoredGroup> {
        let store = Store::connect(&self.config.database.url, 1)
            .await
            .expect("cannot open the test homeserver's database");
        let connection = &store;
        let group_id = crate::rules::ids::GroupId::from(mls_group_id);
        let header = store::find_group_header(connection, &group_id)
            .await
            .expect("cannot read a group");
        let stored = match header {
            Some(header) => Some(StoredGroup {
                hub_domain: header.hub_domain,
                epoch: header.epoch.get(),
                last_seq: header.last_seq.get(),
                member_devices: store::member_count(connection, header.key)
                    .await
                    .expect("cannot count a group's members"),
            }),
            None => None,
        };
        store.close().await.expect("cannot close the database");
        stored
    }

    /// Stops the server gracefully and hands back its database, e.g. to restart.
    pub async fn stop(mut self) -> TestDatabase {
        self.shutdown_and_wait().await;
        std::mem::replace(&mut self.database, placeholder_database())
    }

    async fn shutdown_and_wait(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(task) = self.task.take() {
            task.await
                .expect("the test homeserver panicked")
                .expect("the test homeserver failed");
        }
    }
}

/// A group as a test homeserver stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredGroup {
    /// The hub's domain for a follower's copy; `None` if hosted here.
    pub hub_domain: Option<String>,
    pub epoch: u64,
    /// The newest sequence number of the group's log (or of this copy of it).
    pub last_seq: u64,
    /// Current member devices of the group here (for a follower's copy, this
    /// domain's devices only).
    pub member_devices: u64,
}

/// Binds `address`, or 127.0.0.1 on a port chosen by the OS if its port is 0.
async fn bind_or_any(address: SocketAddr) -> TcpListener {
    let address = if address.port() == 0 {
        SocketAddr::from(([127, 0, 0, 1], 0))
    } else {
        address
    };
    TcpListener::bind(address)
        .await
        .unwrap_or_else(|error| panic!("cannot bind {address}: {error}"))
}

/// An empty stand-in, left behind when [`TestHomeserver::stop`] moves the real
/// database out.
fn placeholder_database() -> TestDatabase {
    TestDatabase {
        url: String::new(),
        _directory: tempfile::tempdir().expect("cannot create a temporary directory"),
        postgres: None,
    }
}

impl Drop for TestHomeserver {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// A minimal HTTP/1.1 GET of /readyz, so tests need no HTTP client library.
async fn readyz_ok(address: SocketAddr) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(address).await else {
        return false;
    };
    let request = "GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response).await;
    response.starts_with("HTTP/1.1 200")
}
