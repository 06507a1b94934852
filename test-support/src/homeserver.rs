//! One homeserver running in the test's process, on a [`TestDatabase`] of its
//! own. Its client API and HTTP endpoint listen on 127.0.0.1 ports chosen by
//! the OS (the same again after a restart with [`TestHomeserver::start_on`]).
//!
//! For federation, [`TestOptions`] takes the domain and a [`TestFederation`]
//! (the `[federation]` settings and a listener bound in advance, so that every
//! peer's address is known before any server starts); [`crate::network`] does
//! that for a whole network of domains.

use crate::database::{DatabaseChoice, TestDatabase};
use crate::wait::eventually;
use conclave_homeserver::config::{Config, FederationConfig, RegistrationPolicy};
use conclave_homeserver::{Clock, Listeners, ServerError, SystemClock};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Longest a test homeserver may take to become ready (migrations included).
const READY_TIMEOUT: Duration = Duration::from_secs(30);

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

impl TestOptions {
    /// Every option at its default but the database.
    pub fn on(database: DatabaseChoice) -> TestOptions {
        TestOptions {
            database,
            ..TestOptions::default()
        }
    }

    pub fn clock(self, clock: Arc<dyn Clock>) -> TestOptions {
        TestOptions { clock, ..self }
    }

    pub fn registration(self, registration_policy: RegistrationPolicy) -> TestOptions {
        TestOptions {
            registration_policy,
            ..self
        }
    }

    /// Changes the configuration last, for anything else a test needs.
    pub fn configure(self, configure: impl FnOnce(&mut Config) + Send + 'static) -> TestOptions {
        TestOptions {
            configure: Box::new(configure),
            ..self
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
/// 127.0.0.1, the federation API (if on) on its own listener. Stopped when
/// dropped (or with [`TestHomeserver::stop`]).
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
        // Every test client connects from 127.0.0.1, and tests register and log
        // in far more devices (and fail far more logins, checking that refusals
        // change nothing) than one address may by default: the attempt limits
        // are as loose as the configuration allows, unless `configure` says
        // otherwise (as the tests of the limits do).
        config.limits.auth_attempts_per_minute = 60_000;
        config.limits.auth_attempt_burst = 10_000;
        config.limits.login_failures_before_backoff = 1000;
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
        let task = tokio::spawn(conclave_homeserver::run(
            config.clone(),
            listeners,
            clock,
            async move {
                let _ = stop.await;
            },
        ));
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
        eventually(
            READY_TIMEOUT,
            "the test homeserver becoming ready",
            || async {
                if let Some(task) = &self.task
                    && task.is_finished()
                {
                    panic!("the test homeserver stopped while starting; see its log");
                }
                readyz_ok(self.http_address).await.then_some(())
            },
        )
        .await;
    }

    /// Starts another server on this one's database with this one's
    /// configuration changed by `configure`, on ports of its own: a replica of
    /// a cluster (with `[redis]` set), in this process. Stop it before this one,
    /// which owns the database.
    pub async fn start_replica(&self, configure: impl FnOnce(&mut Config)) -> TestHomeserver {
        let mut config = self.config.clone();
        config.client_api.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        config.http.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        config.federation.listen.set_port(0);
        configure(&mut config);
        Self::start_on(config, self.database.share(), Arc::new(SystemClock)).await
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
    /// follower's copy); `None` if it knows no such group. For tests that check
    /// what a refused or repeated request left behind.
    pub async fn stored_group(&self, mls_group_id: &[u8]) -> Option<StoredGroup> {
        stored_group(&self.config, mls_group_id).await
    }

    /// Stops the server gracefully and starts it again on the same ports and
    /// database (with the system clock), its configuration changed by `change`
    /// (e.g. another TLS certificate): what a client connected to it sees as a
    /// restart.
    pub async fn restart_with(self, change: impl FnOnce(&mut Config)) -> TestHomeserver {
        let mut config = self.config.clone();
        let client_address = self.client_address;
        let database = self.stop().await;
        change(&mut config);
        let server = TestHomeserver::start_again(config, database).await;
        assert_eq!(server.client_address(), client_address, "the same port");
        server
    }

    /// Starts a stopped server again with its configuration (its ports
    /// included) and the database [`TestHomeserver::stop`] handed back, with
    /// the system clock.
    pub async fn start_again(config: Config, database: TestDatabase) -> TestHomeserver {
        TestHomeserver::start_on(config, database, Arc::new(SystemClock)).await
    }

    /// Stops the server gracefully and hands back its database, e.g. to restart.
    pub async fn stop(mut self) -> TestDatabase {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(task) = self.task.take() {
            task.await
                .expect("the test homeserver panicked")
                .expect("the test homeserver failed");
        }
        std::mem::replace(&mut self.database, TestDatabase::placeholder())
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

/// A group as a test homeserver stores it.
pub type StoredGroup = conclave_homeserver::admin::GroupOverview;

/// What the database of the homeserver configured by `config` holds of a
/// group, read directly (the server may be running or stopped).
pub(crate) async fn stored_group(config: &Config, mls_group_id: &[u8]) -> Option<StoredGroup> {
    // Boxed: opening and migrating a store is a large future, which would
    // otherwise be part of every test's future (and stack).
    Box::pin(conclave_homeserver::admin::group_overview(
        config.clone(),
        mls_group_id,
    ))
    .await
    .unwrap_or_else(|error| panic!("cannot read a group of {}: {error}", config.domain))
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

/// A minimal HTTP/1.1 GET of /readyz, so tests need no HTTP client library.
pub(crate) async fn readyz_ok(address: SocketAddr) -> bool {
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
