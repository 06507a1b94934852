//! The Conclave homeserver: its domain's MLS Authentication Service (accounts,
//! devices, credential binding) and key-package directory, behind the client gRPC
//! API, with an HTTP endpoint for health checks and, when configured, the
//! federation API for the homeservers of other domains (mutual TLS).
//!
//! [`run`] is the whole server; `main.rs` adds the command line, configuration
//! loading and logging, and tests call [`run`] directly (through the
//! `conclave-test-support` crate, which is no part of this one).
//!
//! # Layout
//! - [`config`]: the documented, validated configuration; `config_messages`:
//!   what a configuration that cannot be read is told as, and the check of
//!   `CONCLAVE_*` variables.
//! - `rules`: the homeserver's own pure rules (request shapes, registration,
//!   upload batches, stock and claims, the hub's MLS validation).
//! - `store`: sea-orm entities, migrations and queries; the only module that knows sea-orm.
//! - `service`: one file per use case, each a transaction over `store` guided by `rules`.
//! - `grpc`: tonic services (client API and federation API), authentication and
//!   the error -> status mapping.
//! - `http`: `/healthz`, `/readyz` and `/metrics`.
//! - `metrics`: the Prometheus metrics (`docs/metrics.md` documents each).
//! - `notify`: wake-ups for live delivery (in-process, and through Redis in a
//!   cluster).
//! - `cluster`: the connection to Redis of a replica in cluster mode.
//! - `tls`: the listeners' TLS files, read at start and reloaded when they
//!   change (renewed certificates without a restart).
//! - [`telemetry`]: logging, OpenTelemetry spans and their OTLP export
//!   (`telemetry::init`, for `main` and the benchmark).
//! - [`admin`]: operator commands run against the database (registration tokens,
//!   federation status, a group's overview).
//! - [`admin_cli`]: `conclave-homeserver admin ...`, the admin API's actions
//!   for the operator on the server's host, through `service::admin`.
//! - [`preflight`]: what a start checks of the files and services the
//!   configuration names, before binding a port; [`check_config`]: the
//!   `check-config` command, reporting those checks (and, with `--connect`,
//!   the database and Redis).
//! - `fuzzing` (hidden): one entry point per decoder of outside bytes, for the
//!   cargo-fuzz targets in `fuzz/` and the in-workspace smoke of them.

pub mod admin;
pub mod admin_cli;
pub mod check_config;
mod cluster;
pub mod config;
mod config_messages;
#[doc(hidden)]
pub mod fuzzing;
mod grpc;
mod http;
mod metrics;
mod notify;
pub mod preflight;
mod rules;
mod service;
mod store;
pub mod telemetry;
#[cfg(test)]
mod tidy;
mod tls;

pub use service::{Clock, SystemClock};
pub use store::{Store, StoreError};

use conclave_federation::client::{ClientOptions, FederationClient};
use conclave_federation::peers::PeerRegistry;
use conclave_federation::reloadable::ReloadableTls;
use conclave_federation::server::PeerGate;
use config::Config;
use service::Context;
use std::future::Future;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// HTTP/2 PING interval on connections to peers, and how long a PING may go
/// unanswered before the connection is dropped (and re-made on the next call).
const FEDERATION_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const FEDERATION_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a replica starting in cluster mode waits for Redis to answer
/// before it serves anyway (each replica counting its own limits until Redis
/// answers).
const REDIS_START_WAIT: Duration = Duration::from_secs(2);

/// The bound sockets the server will serve on. Binding is separate from running so
/// tests can bind port 0 and learn the address before the server starts.
pub struct Listeners {
    pub client_api: TcpListener,
    pub http: TcpListener,
    /// The federation API's listener: present exactly when federation is on.
    pub federation: Option<TcpListener>,
}

impl Listeners {
    /// Binds the addresses named in the configuration.
    pub async fn bind(config: &Config) -> std::io::Result<Listeners> {
        let bind = |key: &'static str, address: SocketAddr| async move {
            TcpListener::bind(address).await.map_err(|error| {
                let reason = if error.kind() == std::io::ErrorKind::AddrInUse {
                    "the address is in use (another homeserver, or another program, listens there)"
                        .to_owned()
                } else {
                    error.to_string()
                };
                std::io::Error::new(
                    error.kind(),
                    format!("cannot listen on {address} ({key}): {reason}"),
                )
            })
        };
        let federation = if config.federation.enabled() {
            Some(bind("federation.listen", config.federation.listen).await?)
        } else {
            None
        };
        Ok(Listeners {
            client_api: bind("client_api.listen", config.client_api.listen).await?,
            http: bind("http.listen", config.http.listen).await?,
            federation,
        })
    }
}

/// Why the server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The files or URLs the configuration names cannot start the server
    /// ([`preflight`]): every problem, `key: why`.
    #[error("invalid configuration: {}", .0.join("; "))]
    Preflight(Vec<String>),
    #[error("cannot read {path}: {error}")]
    ReadFile { path: String, error: std::io::Error },
    /// The client API's certificate or key cannot be used.
    #[error("client API TLS: {0}")]
    ClientApiTls(String),
    #[error("client API: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("HTTP endpoint: {0}")]
    Http(std::io::Error),
    /// The federation settings or files cannot be used, or the listener does not
    /// match them.
    #[error("federation: {0}")]
    FederationSetup(String),
    #[error("federation API: {0}")]
    FederationApi(tonic::transport::Error),
    /// The `[redis]` settings cannot be used.
    #[error("redis: {0}")]
    RedisSetup(String),
}

/// Connects to the database, applies migrations, and serves the client API and the
/// HTTP endpoint until `shutdown` resolves; then shuts down gracefully: stops
/// accepting connections (HTTP/2 GOAWAY on open ones), answers 503 on
/// `/readyz`, ends open Subscribe streams with UNAVAILABLE (their clients
/// reconnect, to another replica), lets calls in progress finish and stops
/// background work, and returns. Returns at the latest
/// `shutdown.deadline_seconds` after `shutdown` resolved, logging what was cut
/// short.
pub async fn run(
    config: Config,
    listeners: Listeners,
    clock: Arc<dyn Clock>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let deadline = Duration::from_secs(config.shutdown.deadline_seconds);
    let (begun_sender, begun) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        shutdown.await;
        let _ = begun_sender.send(());
    };
    let serving = Arc::new(std::sync::OnceLock::new());
    let deadline_passed = async {
        // A server that stops without being asked (an error) never gets here.
        if begun.await.is_err() {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(deadline).await;
    };
    tokio::select! {
        result = serve(config, listeners, clock, shutdown, serving.clone()) => result,
        () = deadline_passed => {
            // Dropping the serving future stops the listeners' accept loops;
            // connections still open end with the process.
            let context: Option<&Arc<Context>> = serving.get();
            tracing::warn!(
                deadline_seconds = deadline.as_secs(),
                calls_in_flight = context.map(|context| context.calls_in_flight.load(std::sync::atomic::Ordering::Relaxed)),
                subscribe_streams_open = context.map(|context| context.subscribe_streams.open_count()),
                "the shutdown deadline passed; stopping now, cutting short what is still running"
            );
            Ok(())
        }
    }
}

/// [`run`] without its deadline; `serving` gets the context once it is made,
/// for the deadline's log.
async fn serve(
    config: Config,
    listeners: Listeners,
    clock: Arc<dyn Clock>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    serving: Arc<std::sync::OnceLock<Arc<Context>>>,
) -> Result<(), ServerError> {
    // rustls needs one process-wide crypto provider; a second install (tests run
    // several servers in one process) is harmless, so its error is ignored.
    let _ = rustls::crypto::ring::default_provider().install_default();

    // By the system clock, as TLS handshakes judge certificates (not the
    // injected clock, which tests move for the server's own rules). The same
    // checks as `check-config`; the files are then loaded for serving.
    let preflight = preflight::check(&config, std::time::SystemTime::now());
    for warning in preflight.warnings() {
        tracing::warn!(setting = %warning.subject, "{}", warning.detail);
    }
    preflight.into_result().map_err(ServerError::Preflight)?;
    let tls = load_client_api_tls(&config).await?;
    let federation = match (prepare_federation(&config).await?, listeners.federation) {
        (Some(federation), Some(listener)) => Some((federation, listener)),
        (None, None) => None,
        (Some(_), None) => {
            return Err(ServerError::FederationSetup(
                "federation is configured but no federation listener was bound".to_owned(),
            ));
        }
        (None, Some(_)) => {
            return Err(ServerError::FederationSetup(
                "a federation listener was bound but federation is off".to_owned(),
            ));
        }
    };
    let store = Store::connect(&config.database.url, config.database.max_connections).await?;
    // Under the migration lock on PostgreSQL, so replicas started together
    // take turns; refused if a newer release migrated the database.
    let applied = store.migrate().await?;
    if !applied.is_empty() {
        tracing::info!(migrations = ?applied, "applied database migrations");
    }
    let federation_address = match &federation {
        Some((_, listener)) => listener
            .local_addr()
            .map_err(ServerError::Http)?
            .to_string(),
        None => "off".to_owned(),
    };
    tracing::info!(
        domain = %config.domain,
        client_api = %listeners.client_api.local_addr().map_err(ServerError::Http)?,
        http = %listeners.http.local_addr().map_err(ServerError::Http)?,
        federation = %federation_address,
        tls = tls.is_some(),
        "homeserver started"
    );

    let (stop_sender, stop_receiver) = tokio::sync::watch::channel(false);
    let stopping = stop_receiver.clone();
    let stopped = move || {
        let mut receiver = stop_receiver.clone();
        async move {
            let _ = receiver.wait_for(|stop| *stop).await;
        }
    };
    let config_is_cluster = config.cluster_mode();
    let mut context = Context::new(store.clone(), config, clock);
    let mut federation_peers = Vec::new();
    // The listeners whose TLS files the reload task watches.
    let mut watched_tls = Vec::new();
    let loaded_at = context.clock.now_ms();
    if let Some(tls) = &tls {
        context
            .metrics
            .record_tls_certificate_loaded("client_api", &tls.certificate, loaded_at);
        watched_tls.push(tls::Watched::new(tls.target.clone(), tls.digest));
    }
    if let Some((federation, _)) = &federation {
        context.metrics.record_tls_certificate_loaded(
            "federation",
            &federation.tls.certificate(),
            loaded_at,
        );
        watched_tls.push(tls::Watched::new(
            federation.reload_target.clone(),
            federation.digest,
        ));
        let client = federation.client(&context.metrics)?;
        context = context.with_federation(Arc::new(client));
        federation_peers = federation
            .gate
            .registry()
            .iter()
            .map(|peer| peer.domain.clone())
            .collect();
    }
    // In a cluster, wake-ups also go through Redis: the notifier publishes
    // them and takes the other replicas' from the link's push messages.
    let mut cluster_notifier = None;
    if config_is_cluster {
        let (link, pushes) =
            cluster::RedisLink::start(&context.config.redis).map_err(ServerError::RedisSetup)?;
        tracing::info!(key_prefix = %context.config.redis.key_prefix, "cluster mode: connecting to Redis");
        let notifier = Arc::new(notify::ClusterNotifier::new());
        context = context
            .with_redis(link.clone())
            .with_notifier(notifier.clone());
        cluster_notifier = Some((notifier, link, pushes));
    }
    if let Some(link) = &context.redis {
        // A reachable Redis answers within this, so the limits are shared from
        // the first request; an unreachable one delays the start no longer.
        let mut up = link.watch_up();
        if tokio::time::timeout(REDIS_START_WAIT, up.wait_for(|up| *up))
            .await
            .is_err()
        {
            tracing::warn!(wait = ?REDIS_START_WAIT, "Redis did not answer at start; serving with limits per replica until it does");
        }
    }
    // The registry takes its scrape-time collectors before the metrics are
    // shared; nothing has cloned this fresh `Arc` yet.
    match Arc::get_mut(&mut context.metrics) {
        Some(metrics) => metrics.register_collectors(
            store.clone(),
            context.redis.as_ref().map(|link| link.watch_up()),
        ),
        None => tracing::error!(
            "the metrics were shared before their collectors were registered; /metrics lacks the process, pool and Redis metrics"
        ),
    }
    let context = Arc::new(context);
    let _ = serving.set(context.clone());
    tracing::info!(replica = %context.leases.replica_id(), "replica id for background work leases");

    // The probes keep answering (503 on /readyz) until everything else stopped.
    let (http_stop_sender, http_stop) = tokio::sync::oneshot::channel::<()>();
    let health = http::Health {
        store: store.clone(),
        redis: context.redis.clone(),
        stopping,
        metrics: context
            .config
            .telemetry
            .metrics
            .then(|| context.metrics.clone()),
        console: http::console(&context),
    };
    let http_task = tokio::spawn(http::serve(health, listeners.http, async move {
        let _ = http_stop.await;
    }));
    // The notifier runs until the calls in progress at shutdown have finished
    // (it is stopped after the gRPC server returns), so their wake-ups still
    // reach the other replicas at once.
    let notifier_task = cluster_notifier.map(|(notifier, link, pushes)| {
        tokio::spawn(notifier.run(link, pushes, std::future::pending()))
    });
    // The bound on a lost wake-up's delay: in a cluster, on PostgreSQL even
    // without `[redis]` (replicas started without it still deliver, within the
    // interval), and on SQLite for the `conclave-homeserver admin` commands,
    // another process whose revocations and suspensions wake nobody here.
    let resync_task = Some({
        let interval = Duration::from_millis(context.config.redis.poll_interval_ms);
        tokio::spawn(service::resync::run(context.clone(), interval, stopped()))
    });
    let federation_task = federation.map(|(federation, listener)| {
        tokio::spawn(grpc::federation::serve(
            context.clone(),
            listener,
            federation.tls,
            peer_gate(federation.gate, &context),
            stopped(),
        ))
    });
    let janitor_task = tokio::spawn(service::janitor::run(context.clone(), stopped()));
    let tls_reload_task = (!watched_tls.is_empty()).then(|| {
        tokio::spawn(tls::run(
            watched_tls,
            Duration::from_secs(context.config.tls.reload_interval_seconds),
            context.metrics.clone(),
            context.clock.clone(),
            stopped(),
        ))
    });
    // Every replica reads the domain-wide number for its own `/metrics`.
    let low_stock_task = context.config.telemetry.metrics.then(|| {
        tokio::spawn(service::key_packages::low_stock::run(
            context.clone(),
            stopped(),
        ))
    });
    let catch_up_context = context.clone();
    let catch_up_task = tokio::spawn(async move {
        service::follower::catch_up_on_start(&catch_up_context).await;
    });
    let outbox_task = context.federation.clone().map(|client| {
        tokio::spawn(service::outbox::run(
            context.clone(),
            client,
            federation_peers.clone(),
            stopped(),
        ))
    });
    let stream_context = context.clone();
    let grpc_shutdown = async move {
        shutdown.await;
        // /readyz turns 503 and background work stops; the gRPC listeners stop
        // accepting and send GOAWAY once this future returns; Subscribe
        // streams end now, or their connections would never close.
        let _ = stop_sender.send(true);
        let streams = stream_context.subscribe_streams.close_all();
        tracing::info!(
            subscribe_streams = streams,
            "shutting down: refusing new connections, ending Subscribe streams, finishing calls in progress"
        );
    };
    let client_api_tls = tls.map(|tls| tls.target);
    let grpc_result =
        grpc::serve(context, listeners.client_api, client_api_tls, grpc_shutdown).await;
    let federation_result = match federation_task {
        Some(task) => task.await.unwrap_or(Ok(())),
        None => Ok(()),
    };
    catch_up_task.abort();
    for task in [notifier_task, resync_task, low_stock_task, tls_reload_task]
        .into_iter()
        .flatten()
    {
        task.abort();
    }
    // The janitor and the outboxes stop when `stopped` resolves and release
    // their leases, so another replica takes their work over at once: wait for
    // that (bounded; an unreleased lease still expires).
    for task in std::iter::once(janitor_task).chain(outbox_task) {
        finish_or_abort(task, BACKGROUND_STOP_TIMEOUT).await;
    }
    let _ = http_stop_sender.send(());
    let http_result = http_task.await.unwrap_or(Ok(()));
    store.close().await?;
    grpc_result?;
    http_result.map_err(ServerError::Http)?;
    federation_result.map_err(ServerError::FederationApi)?;
    tracing::info!("homeserver stopped");
    Ok(())
}

/// Longest the background tasks may take to stop and release their leases once
/// the server stops.
const BACKGROUND_STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Waits for `task` to end, at most `timeout`; then aborts it.
async fn finish_or_abort(mut task: tokio::task::JoinHandle<()>, timeout: Duration) {
    if tokio::time::timeout(timeout, &mut task).await.is_err() {
        tracing::warn!("a background task did not stop in time; aborted");
        task.abort();
    }
}

/// What serving and calling peers needs, made from the `[federation]` settings.
struct Federation {
    /// The material of the federation listener (client certificates required)
    /// and of calls to peers, replaced when its files are renewed.
    tls: Arc<ReloadableTls>,
    /// `tls` with its files, for the reload task.
    reload_target: Arc<tls::FederationTls>,
    /// Digest of the files `tls` was made of.
    digest: [u8; 32],
    gate: PeerGate,
    registry: PeerRegistry,
    client_options: ClientOptions,
}

impl Federation {
    /// The client for calling peers, reporting each call to `metrics`.
    fn client(&self, metrics: &metrics::Metrics) -> Result<FederationClient, ServerError> {
        metrics.set_peer_up_freshness(rules::federation::peer_up_freshness(
            self.client_options.call_timeout,
        ));
        FederationClient::observed(
            self.tls.clone(),
            &self.registry,
            &self.client_options,
            Arc::new(grpc::FederationCallObserver::new(
                metrics.federation_call_counters(),
            )),
        )
        .map_err(|error| ServerError::FederationSetup(error.to_string()))
    }
}

/// Reads the federation files and builds the peer registry, the gate and the
/// client's settings; `None` when federation is off.
async fn prepare_federation(config: &Config) -> Result<Option<Federation>, ServerError> {
    let settings = &config.federation;
    let (Some(certificate), Some(private_key), Some(trust_roots)) = (
        &settings.certificate,
        &settings.private_key,
        &settings.trust_roots,
    ) else {
        return Ok(None);
    };
    let setup = |error: &dyn std::fmt::Display| ServerError::FederationSetup(error.to_string());
    let domain = config.domain();
    let files = tls::FederationTls::files(
        certificate.clone(),
        private_key.clone(),
        trust_roots.clone(),
    );
    let contents = files.read().await.map_err(|error| setup(&error))?;
    let material =
        tls::FederationTls::material(&domain, &files, &contents).map_err(|error| setup(&error))?;
    let reloadable = Arc::new(ReloadableTls::new(material).map_err(|error| setup(&error))?);
    let registry = settings
        .peer_registry(domain.clone())
        .map_err(|error| setup(&error))?;
    let call_timeout = Duration::from_secs(settings.call_timeout_seconds);
    let options = ClientOptions {
        call_timeout,
        connect_timeout: call_timeout,
        keepalive_interval: FEDERATION_KEEPALIVE_INTERVAL,
        keepalive_timeout: FEDERATION_KEEPALIVE_TIMEOUT,
        max_message_bytes: settings.max_message_bytes,
    };
    let requests_per_minute =
        NonZeroU32::new(settings.peer_requests_per_minute).unwrap_or(NonZeroU32::MIN);
    tracing::info!(
        peers = ?registry.iter().map(|peer| peer.domain.to_string()).collect::<Vec<_>>(),
        certificate_sha256 = %reloadable.certificate_pin(),
        "federation on"
    );
    Ok(Some(Federation {
        reload_target: Arc::new(tls::FederationTls::new(domain, files, reloadable.clone())),
        tls: reloadable,
        digest: contents.digest(),
        gate: PeerGate::new(registry.clone(), requests_per_minute),
        registry,
        client_options: options,
    }))
}

/// The federation gate to serve with: in a cluster, one that counts each
/// peer's requests in Redis together with the other replicas (the gate's
/// registry and rate stay as configured); either way, each request refused
/// for its peer's rate is counted in the metrics.
fn peer_gate(gate: PeerGate, context: &Context) -> Arc<PeerGate> {
    let counters = context.metrics.clone();
    let count_refusal: conclave_federation::server::RateLimitObserver = Arc::new(move |_peer| {
        counters.count_rejection(metrics::RateLimit::FederationPeerRequests);
    });
    let Some(link) = &context.redis else {
        return Arc::new(gate.observing_rate_limits(count_refusal));
    };
    let per_minute = context.config.federation.peer_requests_per_minute;
    let shared = cluster::SharedRateLimiter::new(
        link.clone(),
        "peers",
        rules::rate::Rate::per_minute(per_minute, per_minute),
    );
    let limiter = service::rate_limiter::PeerRequestLimiter {
        limiter: Arc::new(shared),
        clock: context.clock.clone(),
    };
    Arc::new(
        PeerGate::with_rate_limiter(
            gate.registry().clone(),
            NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN),
            Arc::new(limiter),
        )
        .observing_rate_limits(count_refusal),
    )
}

/// The client API's TLS as loaded at start.
struct ClientApiTlsAtStart {
    target: Arc<tls::ClientApiTls>,
    /// The end-entity certificate, for the metrics.
    certificate: rustls_pki_types::CertificateDer<'static>,
    /// Digest of the files it was made of, for the reload task.
    digest: [u8; 32],
}

/// Reads the client API's certificate and key; `None` without TLS.
async fn load_client_api_tls(config: &Config) -> Result<Option<ClientApiTlsAtStart>, ServerError> {
    let client_api = &config.client_api;
    let (Some(certificate), Some(private_key)) =
        (&client_api.tls_certificate, &client_api.tls_private_key)
    else {
        return Ok(None);
    };
    let files = tls::ClientApiTls::files(certificate.clone(), private_key.clone());
    let contents = files
        .read()
        .await
        .map_err(|unreadable| ServerError::ReadFile {
            path: unreadable.path,
            error: unreadable.error,
        })?;
    let (target, certificate) =
        tls::ClientApiTls::new(certificate.clone(), private_key.clone(), &contents)
            .map_err(|error| ServerError::ClientApiTls(error.to_string()))?;
    Ok(Some(ClientApiTlsAtStart {
        target: Arc::new(target),
        certificate,
        digest: contents.digest(),
    }))
}
