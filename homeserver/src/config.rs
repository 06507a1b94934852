//! The homeserver's configuration: one TOML file, every key overridable by a
//! `CONCLAVE_*` environment variable, validated as a whole before any port is bound.
//!
//! `conclave-homeserver.example.toml` at the repository root documents every key.
//! Environment variables name a key by its path with `__` between levels:
//! `CONCLAVE_DOMAIN`, `CONCLAVE_DATABASE__URL`, `CONCLAVE_CLIENT_API__LISTEN`;
//! any other `CONCLAVE_*` variable is refused (but for the client's and the
//! tests', [`NON_CONFIGURATION_VARIABLES`]), naming the nearest key.

use crate::config_messages;
pub use crate::config_messages::NON_CONFIGURATION_VARIABLES;
use crate::rules::cipher_suites::SuitePolicy;
use crate::rules::limits::{MAX_DELIVERED_EVENTS, MAX_MEMBERSHIP_CHANGES};
use conclave_core::ids::Domain;
use conclave_core::mls::{ALL_CIPHER_SUITES, CipherSuite};
use conclave_federation::peers::{PeerRegistry, PeerSettings};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Prefix of the environment variables that override file settings.
pub const ENV_PREFIX: &str = "CONCLAVE";

/// Everything the homeserver can be told. Every field has a default, so running
/// with no file at all gives a working single-machine server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The domain this homeserver is the authority for: users are `name@domain`.
    pub domain: String,
    pub database: DatabaseConfig,
    pub client_api: ClientApiConfig,
    pub http: HttpConfig,
    pub registration: RegistrationConfig,
    pub key_packages: KeyPackageConfig,
    pub groups: GroupConfig,
    pub federation: FederationConfig,
    pub tls: TlsConfig,
    pub limits: LimitsConfig,
    pub leases: LeasesConfig,
    pub shutdown: ShutdownConfig,
    pub redis: RedisConfig,
    pub telemetry: TelemetryConfig,
    pub log: LogConfig,
    pub admin: AdminConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://PATH?mode=rwc` (embedded; the directory is created) or
    /// `postgres://USER@HOST/DB`.
    pub url: String,
    /// Size of the connection pool.
    pub max_connections: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientApiConfig {
    /// Address of the client gRPC API.
    pub listen: SocketAddr,
    /// PEM certificate chain; with `tls_private_key`, turns on TLS. Without TLS the
    /// listen address must be a loopback address, unless `behind_tls_proxy`.
    pub tls_certificate: Option<PathBuf>,
    /// PEM private key of `tls_certificate`.
    pub tls_private_key: Option<PathBuf>,
    /// TLS for clients ends at a proxy in front of this server (an Ingress, a
    /// load balancer, a service mesh sidecar), so the client API may listen
    /// without TLS on a non-loopback address. The plaintext port must then be
    /// reachable only through that proxy. Contradicts `tls_certificate`.
    pub behind_tls_proxy: bool,
    /// Largest request message accepted, in bytes; bigger ones get RESOURCE_EXHAUSTED.
    pub max_message_bytes: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address of the HTTP endpoint (`/healthz`, `/readyz`).
    pub listen: SocketAddr,
}

/// Administering the domain: the admin API (`conclave.admin.v1`, on the
/// client API's port) and the web console (`/admin` on the HTTP listener),
/// for accounts with the admin role (`conclave-homeserver admin grant`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Serve the admin API and the console. When false, every admin RPC
    /// answers UNIMPLEMENTED and `/admin` is not mounted; the
    /// `conclave-homeserver admin` command line works either way.
    pub enabled: bool,
    /// An admin session ends after this many minutes without a call (1 to 1440).
    pub session_idle_minutes: u32,
    /// An admin session ends this many hours after its login, however busy
    /// (1 to 168).
    pub session_max_hours: u32,
    /// TLS for the console ends at a proxy in front of the HTTP listener:
    /// the console's cookies are then marked `Secure` (the browser sends them
    /// over HTTPS only).
    pub behind_tls_proxy: bool,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            enabled: true,
            session_idle_minutes: 30,
            session_max_hours: 12,
            behind_tls_proxy: false,
        }
    }
}

/// Who may create an account (a rule, so it lives in `rules::registration`).
pub use crate::rules::registration::RegistrationPolicy;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrationConfig {
    pub policy: RegistrationPolicy,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeyPackageConfig {
    /// Longest lifetime a KeyPackage may declare, in days (RFC 9420 §16.8 advises
    /// bounding it, because a package's keys are exposed for its whole lifetime).
    pub max_lifetime_days: u64,
    /// Most KeyPackages in one upload.
    pub max_per_upload: usize,
    /// Claims (one per target user) a device may make per minute.
    pub claims_per_minute: u32,
    /// A device with fewer unclaimed, unexpired ordinary KeyPackages than this
    /// is low on them (`conclave_devices_low_on_key_packages`). The client
    /// library replenishes below the same number (its default policy).
    pub low_stock_threshold: u32,
    /// Only devices seen (authenticated) within this many days count as low
    /// on KeyPackages: a lost or long-offline device cannot replenish, and
    /// would otherwise stay low for good.
    pub low_stock_active_days: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GroupConfig {
    /// Application messages may be for the current epoch or up to this many epochs
    /// before it (messages sent just before a commit are still delivered).
    pub past_epoch_window: u64,
    /// Most member devices in one group.
    pub max_members: u64,
    /// Events older than this many days may be pruned even if some device has
    /// not acknowledged them (it then rejoins by external commit).
    pub retention_days: u64,
    /// The MLS cipher suites this homeserver offers, by short name: `classic`
    /// (0x0001) and `pq` (0x004F, post-quantum). Its directory takes key packages,
    /// and its hub new groups, of these suites only; peers learn them from
    /// GetServerInfo. See docs/cipher-suites.md.
    pub cipher_suites: Vec<String>,
    /// Refuse to create new groups in a suite that is not post-quantum (groups
    /// created before keep their suite). Needs `pq` among `cipher_suites`.
    pub require_post_quantum: bool,
}

impl GroupConfig {
    /// The offered suites, parsed (validation refused unknown names), in the
    /// order Conclave lists them.
    pub fn offered_cipher_suites(&self) -> Vec<CipherSuite> {
        ALL_CIPHER_SUITES
            .into_iter()
            .filter(|suite| {
                self.cipher_suites
                    .iter()
                    .any(|name| name == suite.short_name())
            })
            .collect()
    }

    /// The suite settings, as the rules take them.
    pub(crate) fn suite_policy(&self) -> SuitePolicy {
        SuitePolicy {
            offered: self.offered_cipher_suites(),
            require_post_quantum: self.require_post_quantum,
        }
    }
}

/// Federation with the homeservers of other domains (`conclave.federation.v1`),
/// over mutual TLS on a port of its own. Off unless `certificate`, `private_key`
/// and `trust_roots` are all set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FederationConfig {
    /// Address of the federation API. Always TLS, so any address is allowed.
    pub listen: SocketAddr,
    /// PEM certificate chain for this homeserver's domain (a SAN dNSName equal to
    /// `domain`, allowed for server and client authentication): presented to
    /// peers calling in, and as client certificate when calling them.
    pub certificate: Option<PathBuf>,
    /// PEM private key of `certificate`.
    pub private_key: Option<PathBuf>,
    /// PEM bundle of the CA certificates that certify peers (an enterprise CA
    /// bundle, or the development CA of `conclave-homeserver dev-certs`).
    pub trust_roots: Option<PathBuf>,
    /// Largest federation request message accepted, in bytes; bigger ones get
    /// RESOURCE_EXHAUSTED. Also the largest answer accepted from a peer.
    pub max_message_bytes: usize,
    /// Requests one peer domain may make per minute; more get RESOURCE_EXHAUSTED.
    pub peer_requests_per_minute: u32,
    /// Deadline of each call to a peer, in seconds (connecting included).
    pub call_timeout_seconds: u64,
    /// Most events per batch delivered to a follower domain (the federation
    /// message size limits a batch too).
    pub outbox_batch_size: u64,
    /// The peers, by domain. Requests for and from other domains are refused.
    pub peers: BTreeMap<String, FederationPeerConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederationPeerConfig {
    /// `https://HOST[:PORT]` of the peer's federation API. The peer is
    /// authenticated by its domain, whatever the host.
    pub endpoint: String,
    /// If set, the SHA-256 of the DER certificate the peer must present (64 hex
    /// digits, `:` separators allowed), on top of the trust roots.
    pub pinned_sha256: Option<String>,
}

impl ClientApiConfig {
    /// Whether the client API serves plaintext on an address beyond this
    /// machine: allowed only `behind_tls_proxy`, and then worth a warning.
    pub fn serves_plaintext_beyond_loopback(&self) -> bool {
        self.tls_certificate.is_none() && !self.listen.ip().is_loopback()
    }
}

impl FederationConfig {
    /// True when certificate, key and trust roots are all set.
    pub fn enabled(&self) -> bool {
        self.certificate.is_some() && self.private_key.is_some() && self.trust_roots.is_some()
    }

    /// The configured peers, checked.
    pub fn peer_registry(&self, own_domain: Domain) -> Result<PeerRegistry, String> {
        let settings = self.peers.iter().map(|(domain, peer)| PeerSettings {
            domain,
            endpoint: &peer.endpoint,
            pinned_sha256: peer.pinned_sha256.as_deref(),
        });
        PeerRegistry::new(own_domain, settings).map_err(|error| error.to_string())
    }
}

/// What one caller may cost the server, on both gRPC listeners (the client API
/// and the federation API): Register and Login attempts per source address (an
/// IPv4 address, or an IPv6 /64; the source is the TCP peer, so behind a load
/// balancer it is the balancer unless it preserves client addresses at the IP
/// level: PROXY protocol is not supported, and `X-Forwarded-For` is not
/// trusted), and the time, streams and connections a caller may hold.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Register and Login attempts one source address may make per minute,
    /// sustained; more get RESOURCE_EXHAUSTED with the delay to wait.
    pub auth_attempts_per_minute: u32,
    /// Attempts an address that was idle may make at once before the
    /// per-minute rate applies.
    pub auth_attempt_burst: u32,
    /// Failed logins in a row to one account from one address that cost no
    /// wait; after them each attempt waits, doubling from
    /// `login_backoff_initial_seconds`, until a login succeeds.
    pub login_failures_before_backoff: u32,
    /// The first wait after the free failures, in seconds.
    pub login_backoff_initial_seconds: u64,
    /// The longest wait, in seconds.
    pub login_backoff_max_seconds: u64,
    /// Deadline of every call, in seconds: a call not answered by then ends
    /// with DEADLINE_EXCEEDED (a caller's shorter `grpc-timeout` wins). A
    /// Subscribe stream is bound by it only until it starts streaming.
    pub call_deadline_seconds: u64,
    /// Subscribe streams one device may hold open at once (on this server
    /// process); a newer one closes the device's oldest with RESOURCE_EXHAUSTED.
    pub subscribe_streams_per_device: usize,
    /// Subscribe streams one HTTP/2 connection may carry at once; one more is
    /// refused with RESOURCE_EXHAUSTED. Below `http2_max_concurrent_streams`, so
    /// a connection full of streams can still make calls.
    pub subscribe_streams_per_connection: usize,
    /// HTTP/2 streams (calls in progress) one connection may have open at once
    /// (SETTINGS_MAX_CONCURRENT_STREAMS); a client waits for a free one.
    pub http2_max_concurrent_streams: u32,
    /// Largest header list (metadata) of one request, in bytes
    /// (SETTINGS_MAX_HEADER_LIST_SIZE); a larger one is refused.
    pub http2_max_header_list_size: u32,
    /// Seconds between HTTP/2 PINGs on every connection, and how long an answer
    /// may take before the connection is closed: a peer that went away without
    /// closing is noticed, and its streams end.
    pub http2_keepalive_interval_seconds: u64,
    pub http2_keepalive_timeout_seconds: u64,
    /// Seconds a connection may be silent before the kernel sends TCP keepalive
    /// probes (SO_KEEPALIVE), for dead peers behind HTTP/2-unaware middleboxes.
    pub tcp_keepalive_seconds: u64,
}

impl LimitsConfig {
    /// The limits as the rules take them.
    pub(crate) fn attempt_policy(&self) -> crate::rules::attempt_limits::AttemptPolicy {
        crate::rules::attempt_limits::AttemptPolicy {
            attempts_per_minute: self.auth_attempts_per_minute,
            attempt_burst: self.auth_attempt_burst,
            free_login_failures: self.login_failures_before_backoff,
            login_backoff_initial_ms: self.login_backoff_initial_seconds.saturating_mul(1000),
            login_backoff_max_ms: self.login_backoff_max_seconds.saturating_mul(1000),
        }
    }
}

/// Leases on the background work that runs on one replica at a time (each
/// peer's outbox, the janitor; see `service::leases`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LeasesConfig {
    /// How long a lease lasts without renewal, in milliseconds: after a replica
    /// dies, another takes its work over within this time.
    pub ttl_ms: u64,
    /// How often the holder renews, and how often other replicas try to take
    /// the lease, in milliseconds; at most a third of `ttl_ms`.
    pub renew_interval_ms: u64,
}

/// Stopping on SIGTERM or Ctrl-C (a replica being stopped or restarted): the
/// server stops accepting connections, `/readyz` answers 503, open Subscribe
/// streams end with UNAVAILABLE (clients reconnect, to another replica), calls
/// in progress finish, background work stops; then the process exits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// Longest the stop may take, in seconds; past it the process exits anyway,
    /// logging what it cut short. Below Kubernetes' default
    /// terminationGracePeriodSeconds (30), which ends in SIGKILL.
    pub deadline_seconds: u64,
}

/// The TLS files of both listeners (`[client_api] tls_certificate` and
/// `tls_private_key`; `[federation] certificate`, `private_key` and
/// `trust_roots`) are read at start and then looked at again periodically:
/// renewed files are used for new connections without a restart.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// How often the files are read again, in seconds. Files that changed and
    /// make a usable certificate replace the old one; files that do not are
    /// reported (log and metric) and the old certificate stays.
    pub reload_interval_seconds: u64,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            reload_interval_seconds: 60,
        }
    }
}

/// Cluster mode: several replicas of this domain's homeserver on one
/// PostgreSQL database, waking each other and sharing their limits through
/// Redis. Off (one process, as on the embedded default) unless `url` is set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `redis://[:PASSWORD@]HOST[:PORT][/DB]`, or `rediss://` for TLS. The
    /// connection always speaks RESP3 (pub/sub messages arrive on it).
    pub url: Option<String>,
    /// Prefix of every key and channel this domain uses, so several domains
    /// (or test runs) can share one Redis. All replicas of a domain must use
    /// the same prefix.
    pub key_prefix: String,
    /// How often, in milliseconds, live delivery and background work re-read
    /// the database without a wake-up (with or without `url`): the longest a
    /// lost wake-up, a Redis outage, or replicas run without Redis can delay
    /// delivery, and the longest a change made by another process (a replica,
    /// the `admin` commands) leaves a revoked or suspended device calling.
    pub poll_interval_ms: u64,
}

/// What the server tells operators beyond its logs: Prometheus metrics and
/// OpenTelemetry traces. The standard `OTEL_*` variables win over the tracing
/// settings here (see `crate::telemetry`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Serve Prometheus metrics on the HTTP listener's `/metrics` (on by
    /// default); when off, `/metrics` answers 404.
    pub metrics: bool,
    /// How often the metrics read from the database (devices low on key
    /// packages, the federation outbox backlogs) are refreshed, in
    /// milliseconds.
    pub refresh_interval_ms: u64,
    /// OTLP/gRPC collector to export spans to (`http://otel-collector:4317`);
    /// unset, and without `OTEL_EXPORTER_OTLP_ENDPOINT`, nothing is exported.
    /// No credentials in it (`Config` is printed with `Debug`): they go in
    /// `OTEL_EXPORTER_OTLP_HEADERS`.
    pub otlp_endpoint: Option<String>,
    /// Share of new traces recorded and exported, 0.0 to 1.0; a trace a peer
    /// started follows the peer's decision.
    pub sampling_ratio: f64,
    /// The `service.name` resource attribute.
    pub service_name: String,
    /// The `service.instance.id` resource attribute; default: the host name
    /// (in Kubernetes, the pod's name).
    pub replica: Option<String>,
    /// Extra resource attributes (`deployment.environment = "production"`);
    /// not those the server sets (`service.name`, `service.version`,
    /// `service.instance.id`, `conclave.domain`).
    pub resource_attributes: BTreeMap<String, String>,
    /// Whether a client API request continues the trace its client sent in
    /// `traceparent`. The sampling decision is this server's all the same.
    pub trust_client_trace_context: bool,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            metrics: true,
            refresh_interval_ms: 30_000,
            otlp_endpoint: None,
            sampling_ratio: 1.0,
            service_name: "conclave-homeserver".to_owned(),
            replica: None,
            resource_attributes: BTreeMap::new(),
            trust_client_trace_context: true,
        }
    }
}

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing filter such as `info` or `conclave_homeserver=debug,info`; the
    /// `RUST_LOG` environment variable wins when set.
    pub filter: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            domain: "localhost".to_owned(),
            database: DatabaseConfig::default(),
            client_api: ClientApiConfig::default(),
            http: HttpConfig::default(),
            registration: RegistrationConfig::default(),
            key_packages: KeyPackageConfig::default(),
            groups: GroupConfig::default(),
            federation: FederationConfig::default(),
            tls: TlsConfig::default(),
            limits: LimitsConfig::default(),
            leases: LeasesConfig::default(),
            shutdown: ShutdownConfig::default(),
            redis: RedisConfig::default(),
            telemetry: TelemetryConfig::default(),
            log: LogConfig::default(),
            admin: AdminConfig::default(),
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: "sqlite://conclave-data/conclave.sqlite?mode=rwc".to_owned(),
            max_connections: 10,
        }
    }
}

impl Default for ClientApiConfig {
    fn default() -> Self {
        ClientApiConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7400)),
            tls_certificate: None,
            tls_private_key: None,
            behind_tls_proxy: false,
            max_message_bytes: 4 * 1024 * 1024,
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7480)),
        }
    }
}

impl Default for RegistrationConfig {
    fn default() -> Self {
        RegistrationConfig {
            policy: RegistrationPolicy::Open,
        }
    }
}

impl Default for KeyPackageConfig {
    fn default() -> Self {
        KeyPackageConfig {
            max_lifetime_days: 90,
            max_per_upload: 100,
            claims_per_minute: 60,
            low_stock_threshold: 10,
            low_stock_active_days: 14,
        }
    }
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            past_epoch_window: 5,
            max_members: 10_000,
            retention_days: 30,
            cipher_suites: ALL_CIPHER_SUITES
                .iter()
                .map(|suite| suite.short_name().to_owned())
                .collect(),
            require_post_quantum: false,
        }
    }
}

impl Default for FederationConfig {
    fn default() -> Self {
        FederationConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 7401)),
            certificate: None,
            private_key: None,
            trust_roots: None,
            max_message_bytes: 4 * 1024 * 1024,
            peer_requests_per_minute: 6000,
            call_timeout_seconds: 10,
            outbox_batch_size: 100,
            peers: BTreeMap::new(),
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            auth_attempts_per_minute: 10,
            auth_attempt_burst: 20,
            login_failures_before_backoff: 5,
            login_backoff_initial_seconds: 1,
            login_backoff_max_seconds: 900,
            call_deadline_seconds: 30,
            subscribe_streams_per_device: 4,
            subscribe_streams_per_connection: 8,
            http2_max_concurrent_streams: 100,
            http2_max_header_list_size: 8192,
            http2_keepalive_interval_seconds: 30,
            http2_keepalive_timeout_seconds: 10,
            tcp_keepalive_seconds: 60,
        }
    }
}

impl Default for LeasesConfig {
    fn default() -> Self {
        LeasesConfig {
            ttl_ms: 6000,
            renew_interval_ms: 2000,
        }
    }
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            deadline_seconds: 20,
        }
    }
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: None,
            key_prefix: "conclave".to_owned(),
            poll_interval_ms: 1000,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Human,
            filter: "info".to_owned(),
        }
    }
}

/// A configuration that could not be loaded or makes no sense. Its message names
/// the key and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file is missing, unreadable or not TOML, a key of the file or a
    /// `CONCLAVE_*` variable is unknown, or a value has the wrong type: the
    /// message names the file or variable, the key, what was wrong and what
    /// is allowed.
    #[error("{0}")]
    Load(String),
    /// A value has the right type but is not allowed.
    #[error("{key}: {reason}")]
    Invalid { key: &'static str, reason: String },
}

impl From<config::ConfigError> for ConfigError {
    fn from(error: config::ConfigError) -> Self {
        ConfigError::Load(config_messages::describe(&error, None))
    }
}

/// The validation of one part of the configuration, on its own.
type SectionCheck = fn(&Config) -> Result<(), ConfigError>;

/// What kind of database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseKind {
    Sqlite,
    Postgres,
}

impl Config {
    /// Reads the optional file, applies `CONCLAVE_*` overrides and validates.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let config = Config::parse(file)?;
        config.validate()?;
        Ok(config)
    }

    /// [`Config::load`] without the validation: the file and the
    /// environment read into a configuration, whose values may still be
    /// refused (see [`Config::problems`]).
    pub fn parse(file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut builder = config::Config::builder();
        if let Some(path) = file {
            builder = builder.add_source(
                config::File::from(path)
                    .format(config::FileFormat::Toml)
                    .required(true),
            );
        }
        let variables = configuration_variables(std::env::vars());
        check_variables(&variables)?;
        builder
            .add_source(environment(variables))
            .build()
            .and_then(config::Config::try_deserialize)
            .map_err(|error| ConfigError::Load(config_messages::describe(&error, file)))
    }

    /// Parses TOML text as a configuration file, without the environment and
    /// unvalidated: the part of [`Config::load`] that reads a file's contents
    /// (for the configuration fuzzer, `crate::fuzzing::config`).
    pub(crate) fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let source = config::File::from_str(text, config::FileFormat::Toml);
        let config = config::Config::builder()
            .add_source(source)
            .build()?
            .try_deserialize()?;
        Ok(config)
    }

    /// Whether this server is one replica of a cluster (`[redis] url` is set).
    pub fn cluster_mode(&self) -> bool {
        self.redis.url.is_some()
    }

    /// The domain, already known to be valid by [`Config::validate`].
    pub fn domain(&self) -> Domain {
        self.domain
            .parse()
            .expect("the domain is checked by Config::validate")
    }

    /// Checks every value that serde's types cannot express; the first
    /// problem found is the error. The files the configuration names are
    /// checked apart, by [`crate::preflight`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self.problems().into_iter().next() {
            Some(problem) => Err(problem),
            None => Ok(()),
        }
    }

    /// Every problem [`Config::validate`] would refuse, section by section
    /// (each section is judged on its own, so one bad value does not hide
    /// another's), for `check-config` to show them all at once.
    pub fn problems(&self) -> Vec<ConfigError> {
        let sections: [SectionCheck; 14] = [
            Config::validate_domain_and_database,
            Config::validate_client_api,
            Config::validate_key_packages,
            Config::validate_groups,
            Config::validate_federation,
            Config::validate_tls,
            Config::validate_attempt_limits,
            Config::validate_connection_limits,
            Config::validate_leases,
            Config::validate_shutdown,
            Config::validate_redis,
            Config::validate_telemetry,
            Config::validate_log,
            Config::validate_admin,
        ];
        sections
            .iter()
            .filter_map(|section| section(self).err())
            .collect()
    }

    fn validate_domain_and_database(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: String| Err(ConfigError::Invalid { key, reason });
        if let Err(error) = self.domain.parse::<Domain>() {
            return invalid("domain", error.to_string());
        }
        if let Err(reason) = database_kind(&self.database.url) {
            return invalid("database.url", reason);
        }
        if self.database.max_connections == 0 {
            return invalid("database.max_connections", "must be at least 1".to_owned());
        }
        Ok(())
    }

    /// The `[client_api]` section: TLS here, or at a proxy in front, or a
    /// loopback address.
    fn validate_client_api(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: String| Err(ConfigError::Invalid { key, reason });
        let client_api = &self.client_api;
        match (&client_api.tls_certificate, &client_api.tls_private_key) {
            (Some(_), Some(_)) if client_api.behind_tls_proxy => {
                return invalid(
                    "client_api.behind_tls_proxy",
                    "is true, which says TLS ends at a proxy in front of this server, but tls_certificate and tls_private_key turn on TLS here: set behind_tls_proxy = false to serve TLS here, or remove the certificate and key when the proxy ends TLS".to_owned(),
                );
            }
            (Some(_), Some(_)) => {}
            (None, None)
                if !client_api.listen.ip().is_loopback() && !client_api.behind_tls_proxy =>
            {
                return invalid(
                    "client_api.listen",
                    format!(
                        "{} is not a loopback address, so the client API needs TLS: set client_api.tls_certificate and client_api.tls_private_key, or, when TLS for clients ends at a proxy in front of this server, client_api.behind_tls_proxy = true",
                        client_api.listen
                    ),
                );
            }
            (None, None) => {}
            _ => {
                return invalid(
                    "client_api.tls_certificate",
                    "set both tls_certificate and tls_private_key, or neither".to_owned(),
                );
            }
        }
        if !(1024..=64 * 1024 * 1024).contains(&client_api.max_message_bytes) {
            return invalid(
                "client_api.max_message_bytes",
                "must be between 1024 and 67108864".to_owned(),
            );
        }
        Ok(())
    }

    fn validate_key_packages(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: String| Err(ConfigError::Invalid { key, reason });
        let key_packages = &self.key_packages;
        if !(1..=365).contains(&key_packages.max_lifetime_days) {
            return invalid(
                "key_packages.max_lifetime_days",
                "must be between 1 and 365".to_owned(),
            );
        }
        if !(1..=1000).contains(&key_packages.max_per_upload) {
            return invalid(
                "key_packages.max_per_upload",
                "must be between 1 and 1000".to_owned(),
            );
        }
        if key_packages.claims_per_minute == 0 {
            return invalid(
                "key_packages.claims_per_minute",
                "must be at least 1".to_owned(),
            );
        }
        if key_packages.low_stock_threshold > 1000 {
            return invalid(
                "key_packages.low_stock_threshold",
                "must be at most 1000".to_owned(),
            );
        }
        if !(1..=365).contains(&key_packages.low_stock_active_days) {
            return invalid(
                "key_packages.low_stock_active_days",
                "must be between 1 and 365".to_owned(),
            );
        }
        Ok(())
    }

    fn validate_groups(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: String| Err(ConfigError::Invalid { key, reason });
        let groups = &self.groups;
        if groups.past_epoch_window > 100 {
            return invalid("groups.past_epoch_window", "must be at most 100".to_owned());
        }
        // At most what a follower accepts as one commit's membership changes.
        if !(2..=MAX_MEMBERSHIP_CHANGES as u64).contains(&groups.max_members) {
            return invalid(
                "groups.max_members",
                format!("must be between 2 and {MAX_MEMBERSHIP_CHANGES}"),
            );
        }
        if !(1..=3650).contains(&groups.retention_days) {
            return invalid(
                "groups.retention_days",
                "must be between 1 and 3650".to_owned(),
            );
        }
        if groups.cipher_suites.is_empty() {
            return invalid(
                "groups.cipher_suites",
                "must name at least one suite: classic, pq".to_owned(),
            );
        }
        for name in &groups.cipher_suites {
            if let Err(error) = name.parse::<CipherSuite>() {
                return invalid("groups.cipher_suites", error.to_string());
            }
        }
        if groups.require_post_quantum
            && !groups
                .offered_cipher_suites()
                .iter()
                .any(|suite| suite.is_post_quantum())
        {
            return invalid(
                "groups.require_post_quantum",
                "is true but groups.cipher_suites offers no post-quantum suite: add \"pq\""
                    .to_owned(),
            );
        }
        Ok(())
    }

    /// The `[tls]` section: how often certificate files are read again.
    fn validate_tls(&self) -> Result<(), ConfigError> {
        if !(1..=86_400).contains(&self.tls.reload_interval_seconds) {
            return Err(ConfigError::Invalid {
                key: "tls.reload_interval_seconds",
                reason: "must be between 1 and 86400 (a day)".to_owned(),
            });
        }
        Ok(())
    }

    fn validate_shutdown(&self) -> Result<(), ConfigError> {
        if !(1..=600).contains(&self.shutdown.deadline_seconds) {
            return Err(ConfigError::Invalid {
                key: "shutdown.deadline_seconds",
                reason: "must be between 1 and 600".to_owned(),
            });
        }
        Ok(())
    }

    fn validate_admin(&self) -> Result<(), ConfigError> {
        let admin = &self.admin;
        if !(1..=1440).contains(&admin.session_idle_minutes) {
            return Err(ConfigError::Invalid {
                key: "admin.session_idle_minutes",
                reason: "must be between 1 and 1440 (a day)".to_owned(),
            });
        }
        if !(1..=168).contains(&admin.session_max_hours) {
            return Err(ConfigError::Invalid {
                key: "admin.session_max_hours",
                reason: "must be between 1 and 168 (a week)".to_owned(),
            });
        }
        Ok(())
    }

    fn validate_log(&self) -> Result<(), ConfigError> {
        if let Err(error) = tracing_subscriber::EnvFilter::try_new(&self.log.filter) {
            return Err(ConfigError::Invalid {
                key: "log.filter",
                reason: error.to_string(),
            });
        }
        Ok(())
    }
}

/// The resource attributes the server sets itself, which
/// `[telemetry.resource_attributes]` may not name.
const SERVER_RESOURCE_ATTRIBUTES: [&str; 4] = [
    "service.name",
    "service.version",
    "service.instance.id",
    "conclave.domain",
];

/// Whether an OTLP endpoint may carry credentials: it contains `@` anywhere.
/// Not only in the authority as URL grammar has it: a password often holds a
/// `/` (base64), which would end a parsed authority early and hide the `@`
/// behind it; and an OTLP/gRPC endpoint never needs an `@`.
fn url_has_userinfo(url: &str) -> bool {
    url.contains('@')
}

impl Config {
    /// The `[telemetry]` section's tracing settings.
    fn validate_telemetry(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: String| Err(ConfigError::Invalid { key, reason });
        let telemetry = &self.telemetry;
        if !(100..=3_600_000).contains(&telemetry.refresh_interval_ms) {
            return invalid(
                "telemetry.refresh_interval_ms",
                "must be between 100 and 3600000 (an hour)".to_owned(),
            );
        }
        if let Some(endpoint) = &telemetry.otlp_endpoint {
            // Checked first, and the value not repeated: the message must not
            // show the password (and `Config` is printed with `Debug`).
            if url_has_userinfo(endpoint) {
                return invalid(
                    "telemetry.otlp_endpoint",
                    "must not contain credentials (user:password@); give the collector's \
                     credentials in OTEL_EXPORTER_OTLP_HEADERS instead"
                        .to_owned(),
                );
            }
            let scheme_ok = endpoint.starts_with("http://") || endpoint.starts_with("https://");
            if !scheme_ok || endpoint.parse::<http::Uri>().is_err() {
                // Not repeated either: a malformed value may still hold a
                // secret in a form the check above does not recognise.
                return invalid(
                    "telemetry.otlp_endpoint",
                    "is not an http:// or https:// URL of an OTLP/gRPC collector (such as \"http://otel-collector:4317\")"
                        .to_owned(),
                );
            }
        }
        let ratio = telemetry.sampling_ratio;
        if !(0.0..=1.0).contains(&ratio) {
            return invalid(
                "telemetry.sampling_ratio",
                format!("{ratio} is not between 0.0 (no trace) and 1.0 (every trace)"),
            );
        }
        if telemetry.service_name.trim().is_empty() {
            return invalid("telemetry.service_name", "must not be empty".to_owned());
        }
        if telemetry
            .replica
            .as_ref()
            .is_some_and(|replica| replica.trim().is_empty())
        {
            return invalid(
                "telemetry.replica",
                "must not be empty (leave it unset for the host name)".to_owned(),
            );
        }
        if telemetry
            .resource_attributes
            .keys()
            .any(|key| key.trim().is_empty())
        {
            return invalid(
                "telemetry.resource_attributes",
                "an attribute name must not be empty".to_owned(),
            );
        }
        if let Some(key) = telemetry
            .resource_attributes
            .keys()
            .find(|key| SERVER_RESOURCE_ATTRIBUTES.contains(&key.as_str()))
        {
            return invalid(
                "telemetry.resource_attributes",
                format!(
                    "{key:?} is set by the server (from service_name, its version, replica \
                     and the domain); set those settings instead"
                ),
            );
        }
        Ok(())
    }

    /// The `[redis]` section: cluster mode needs a database every replica
    /// shares, so PostgreSQL.
    fn validate_redis(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: String| Err(ConfigError::Invalid { key, reason });
        let redis = &self.redis;
        if let Some(url) = &redis.url {
            if let Err(reason) = crate::cluster::check_redis_url(url) {
                return invalid("redis.url", reason);
            }
            if database_kind(&self.database.url) == Ok(DatabaseKind::Sqlite) {
                return invalid(
                    "redis.url",
                    "cluster mode (Redis) needs a database all replicas share: set database.url to a postgres:// URL, or remove [redis] to run a single server on SQLite".to_owned(),
                );
            }
        }
        let prefix_allowed = |c: char| c.is_ascii_alphanumeric() || "-_.:".contains(c);
        if redis.key_prefix.is_empty()
            || redis.key_prefix.len() > 64
            || !redis.key_prefix.chars().all(prefix_allowed)
        {
            return invalid(
                "redis.key_prefix",
                "must be 1 to 64 characters of letters, digits, '-', '_', '.' and ':'".to_owned(),
            );
        }
        if !(50..=60_000).contains(&redis.poll_interval_ms) {
            return invalid(
                "redis.poll_interval_ms",
                "must be between 50 and 60000".to_owned(),
            );
        }
        Ok(())
    }

    /// The `[limits]` section's attempt limits.
    fn validate_attempt_limits(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: &str| {
            Err(ConfigError::Invalid {
                key,
                reason: reason.to_owned(),
            })
        };
        let limits = &self.limits;
        // At most one a millisecond: the bucket counts in whole milliseconds.
        if !(1..=60_000).contains(&limits.auth_attempts_per_minute) {
            return invalid(
                "limits.auth_attempts_per_minute",
                "must be between 1 and 60000",
            );
        }
        if !(1..=10_000).contains(&limits.auth_attempt_burst) {
            return invalid("limits.auth_attempt_burst", "must be between 1 and 10000");
        }
        if limits.login_failures_before_backoff > 1000 {
            return invalid(
                "limits.login_failures_before_backoff",
                "must be at most 1000",
            );
        }
        if !(1..=3600).contains(&limits.login_backoff_initial_seconds) {
            return invalid(
                "limits.login_backoff_initial_seconds",
                "must be between 1 and 3600",
            );
        }
        if !(limits.login_backoff_initial_seconds..=86_400)
            .contains(&limits.login_backoff_max_seconds)
        {
            return invalid(
                "limits.login_backoff_max_seconds",
                "must be between login_backoff_initial_seconds and 86400",
            );
        }
        Ok(())
    }

    /// The `[federation]` section: off entirely, or on with well-formed peers.
    /// The files are checked by [`crate::preflight`].
    fn validate_federation(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: String| Err(ConfigError::Invalid { key, reason });
        let federation = &self.federation;
        if !(1024..=64 * 1024 * 1024).contains(&federation.max_message_bytes) {
            return invalid(
                "federation.max_message_bytes",
                "must be between 1024 and 67108864".to_owned(),
            );
        }
        if federation.peer_requests_per_minute == 0 {
            return invalid(
                "federation.peer_requests_per_minute",
                "must be at least 1".to_owned(),
            );
        }
        if !(1..=300).contains(&federation.call_timeout_seconds) {
            return invalid(
                "federation.call_timeout_seconds",
                "must be between 1 and 300".to_owned(),
            );
        }
        // At most what a follower accepts in one DeliverEvents.
        if !(1..=MAX_DELIVERED_EVENTS as u64).contains(&federation.outbox_batch_size) {
            return invalid(
                "federation.outbox_batch_size",
                format!("must be between 1 and {MAX_DELIVERED_EVENTS}"),
            );
        }
        if !federation.enabled() {
            if federation.certificate.is_some()
                || federation.private_key.is_some()
                || federation.trust_roots.is_some()
            {
                return invalid(
                    "federation.certificate",
                    "set certificate, private_key and trust_roots together (federation on), or none of them (off)".to_owned(),
                );
            }
            if !federation.peers.is_empty() {
                return invalid(
                    "federation.peers",
                    "peers are configured but federation is off: set federation.certificate, private_key and trust_roots".to_owned(),
                );
            }
            return Ok(());
        }
        // An invalid domain is its own section's problem; the peers are
        // judged against a valid one only.
        if let Ok(domain) = self.domain.parse::<Domain>()
            && let Err(reason) = federation.peer_registry(domain)
        {
            return invalid("federation.peers", reason);
        }
        Ok(())
    }
}

impl Config {
    /// The `[limits]` section's call and connection limits: every value in a
    /// range where the server still works, and room on a connection for calls
    /// beside its Subscribe streams.
    fn validate_connection_limits(&self) -> Result<(), ConfigError> {
        let limits = &self.limits;
        let ranges: [(&'static str, u64, u64, u64); 7] = [
            (
                "limits.call_deadline_seconds",
                limits.call_deadline_seconds,
                1,
                3600,
            ),
            (
                "limits.subscribe_streams_per_device",
                limits.subscribe_streams_per_device as u64,
                1,
                64,
            ),
            (
                "limits.http2_max_concurrent_streams",
                u64::from(limits.http2_max_concurrent_streams),
                2,
                10_000,
            ),
            // gRPC needs a few hundred bytes of headers; 1 MiB is plenty for
            // any metadata a client has reason to send.
            (
                "limits.http2_max_header_list_size",
                u64::from(limits.http2_max_header_list_size),
                1024,
                1024 * 1024,
            ),
            (
                "limits.http2_keepalive_interval_seconds",
                limits.http2_keepalive_interval_seconds,
                1,
                3600,
            ),
            (
                "limits.http2_keepalive_timeout_seconds",
                limits.http2_keepalive_timeout_seconds,
                1,
                600,
            ),
            (
                "limits.tcp_keepalive_seconds",
                limits.tcp_keepalive_seconds,
                1,
                7200,
            ),
        ];
        for (key, value, least, most) in ranges {
            if !(least..=most).contains(&value) {
                return Err(ConfigError::Invalid {
                    key,
                    reason: format!("must be between {least} and {most}"),
                });
            }
        }
        let most_per_connection = limits.http2_max_concurrent_streams as usize - 1;
        if !(1..=most_per_connection).contains(&limits.subscribe_streams_per_connection) {
            return Err(ConfigError::Invalid {
                key: "limits.subscribe_streams_per_connection",
                reason: format!(
                    "must be between 1 and {most_per_connection} (below limits.http2_max_concurrent_streams, so calls still fit beside the streams)"
                ),
            });
        }
        Ok(())
    }
}

impl Config {
    /// The `[leases]` section: the holder's renewals must fit well inside the
    /// lease (see `service::leases` for the margin this leaves).
    fn validate_leases(&self) -> Result<(), ConfigError> {
        let leases = &self.leases;
        if !(100..=60_000).contains(&leases.renew_interval_ms) {
            return Err(ConfigError::Invalid {
                key: "leases.renew_interval_ms",
                reason: "must be between 100 and 60000".to_owned(),
            });
        }
        let least = leases.renew_interval_ms.saturating_mul(3);
        if !(least..=600_000).contains(&leases.ttl_ms) {
            return Err(ConfigError::Invalid {
                key: "leases.ttl_ms",
                reason: format!(
                    "must be between {least} (three times leases.renew_interval_ms) and 600000"
                ),
            });
        }
        Ok(())
    }
}

/// The `CONCLAVE_*` variables that are meant for the homeserver: all but
/// [`NON_CONFIGURATION_VARIABLES`] (the client's, the tests' and the
/// scripts') and Kubernetes's service links, each of which must name a
/// configuration key.
fn configuration_variables(
    variables: impl Iterator<Item = (String, String)>,
) -> std::collections::HashMap<String, String> {
    variables
        .filter(|(name, _)| {
            name.starts_with(&format!("{ENV_PREFIX}_"))
                && !NON_CONFIGURATION_VARIABLES.contains(&name.as_str())
                && !config_messages::is_kubernetes_service_link(name)
        })
        .collect()
}

/// The `config` source reading `variables` as keys: `__` between levels.
fn environment(variables: std::collections::HashMap<String, String>) -> config::Environment {
    config::Environment::with_prefix(ENV_PREFIX)
        .prefix_separator("_")
        .separator("__")
        .try_parsing(true)
        .source(Some(variables))
}

/// Refuses a variable that names no configuration key (a typo would
/// otherwise leave the setting at its default, silently), naming the
/// nearest key. Each variable is read alone, by the same deserialisation as
/// the whole configuration, so the configuration's own types decide what a
/// key is; a value of the wrong type is left for the whole load to report.
fn check_variables(
    variables: &std::collections::HashMap<String, String>,
) -> Result<(), ConfigError> {
    let mut names: Vec<&String> = variables.keys().collect();
    names.sort();
    for name in names {
        let alone = std::collections::HashMap::from([(name.clone(), variables[name].clone())]);
        let result = config::Config::builder()
            .add_source(environment(alone))
            .build()
            .and_then(config::Config::try_deserialize::<Config>);
        if let Err(error) = result
            && let Some(message) = config_messages::unknown_variable(name, &error)
        {
            return Err(ConfigError::Load(message));
        }
    }
    Ok(())
}

/// Tells SQLite from PostgreSQL by the URL's scheme, or says why the URL is neither.
pub fn database_kind(url: &str) -> Result<DatabaseKind, String> {
    if url.starts_with("sqlite:") {
        Ok(DatabaseKind::Sqlite)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(DatabaseKind::Postgres)
    } else {
        // The scheme only: the rest of a URL may carry a password, and this
        // message is printed and logged.
        let scheme = url.split_once(':').map_or("", |(scheme, _)| scheme);
        Err(format!(
            "the scheme {scheme:?} is neither sqlite: nor postgres://"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(toml: &str, expected_error: Option<&str>) {
        let result = config::Config::builder()
            .add_source(config::File::from_str(toml, config::FileFormat::Toml))
            .build()
            .and_then(|built| built.try_deserialize::<Config>())
            .map_err(ConfigError::from)
            .and_then(|config| config.validate());
        match (result, expected_error) {
            (Ok(()), None) => {}
            (Ok(()), Some(expected)) => panic!("{toml:?} was accepted, expected {expected:?}"),
            (Err(error), None) => panic!("{toml:?} was refused: {error}"),
            (Err(error), Some(expected)) => assert!(
                error.to_string().contains(expected),
                "{toml:?} gave {error}, expected it to mention {expected:?}"
            ),
        }
    }

    #[test]
    fn defaults_are_valid() {
        check("", None);
        let config = Config::default();
        assert_eq!(config.domain().as_str(), "localhost");
        assert_eq!(config.client_api.listen.port(), 7400);
        assert_eq!(config.http.listen.port(), 7480);
        assert_eq!(config.registration.policy, RegistrationPolicy::Open);
    }

    #[test]
    fn a_refused_database_url_is_not_repeated_in_the_error() {
        let error = database_kind("mysql://root:hunter2@db.internal/conclave").unwrap_err();
        assert!(error.contains("\"mysql\""), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
    }

    #[test]
    fn values_are_validated() {
        for (toml, error) in [
            ("domain = 'a.example'", None),
            ("domain = 'A.example'", Some("domain")),
            ("domain = ''", Some("domain")),
            (
                "unknown_key = 1",
                Some("`unknown_key` is not a configuration key at the top level"),
            ),
            ("[database]\nurl = 'mysql://x'", Some("database.url")),
            ("[database]\nurl = 'postgres://root@127.0.0.1/test'", None),
            ("[database]\nmax_connections = 0", Some("max_connections")),
            ("[client_api]\nlisten = '0.0.0.0:7400'", Some("needs TLS")),
            (
                "[client_api]\nlisten = '0.0.0.0:7400'",
                Some(
                    "or, when TLS for clients ends at a proxy in front of this server, client_api.behind_tls_proxy = true",
                ),
            ),
            (
                "[client_api]\nlisten = '0.0.0.0:7400'\nbehind_tls_proxy = true",
                None,
            ),
            (
                "[client_api]\nlisten = '[::]:7400'\nbehind_tls_proxy = true",
                None,
            ),
            ("[client_api]\nbehind_tls_proxy = true", None),
            (
                "[client_api]\nbehind_tls_proxy = 'maybe'",
                Some("behind_tls_proxy"),
            ),
            (
                "[client_api]\nlisten = '0.0.0.0:7400'\nbehind_tls_proxy = true\ntls_certificate = '/c.pem'\ntls_private_key = '/k.pem'",
                Some(
                    "client_api.behind_tls_proxy: is true, which says TLS ends at a proxy in front of this server, but tls_certificate and tls_private_key turn on TLS here",
                ),
            ),
            (
                "[client_api]\nbehind_tls_proxy = true\ntls_certificate = '/c.pem'\ntls_private_key = '/k.pem'",
                Some("client_api.behind_tls_proxy"),
            ),
            (
                "[client_api]\nlisten = '0.0.0.0:7400'\nbehind_tls_proxy = true\ntls_certificate = '/c.pem'",
                Some("set both tls_certificate and tls_private_key, or neither"),
            ),
            (
                "[client_api]\nlisten = '0.0.0.0:7400'\ntls_certificate = '/c.pem'\ntls_private_key = '/k.pem'",
                None,
            ),
            ("[client_api]\nlisten = 'not an address'", Some("listen")),
            (
                "[client_api]\ntls_certificate = '/nonexistent.pem'",
                Some("both"),
            ),
            (
                "[client_api]\nmax_message_bytes = 10",
                Some("max_message_bytes"),
            ),
            ("[registration]\npolicy = 'token'", None),
            (
                "[redis]\nurl = 'redis://127.0.0.1:6379'",
                Some("redis.url: cluster mode (Redis) needs a database all replicas share"),
            ),
            (
                "[database]\nurl = 'postgres://root@127.0.0.1/test'\n[redis]\nurl = 'redis://127.0.0.1:6379'",
                None,
            ),
            (
                "[database]\nurl = 'postgres://root@127.0.0.1/test'\n[redis]\nurl = 'http://127.0.0.1:6379'",
                Some("redis.url"),
            ),
            ("[redis]\nkey_prefix = 'a b'", Some("redis.key_prefix")),
            (
                "[redis]\npoll_interval_ms = 1",
                Some("redis.poll_interval_ms"),
            ),
            (
                "[registration]\npolicy = 'maybe'",
                Some("registration.policy"),
            ),
            (
                "[key_packages]\nmax_lifetime_days = 0",
                Some("max_lifetime_days"),
            ),
            ("[key_packages]\nmax_per_upload = 0", Some("max_per_upload")),
            (
                "[key_packages]\nclaims_per_minute = 0",
                Some("claims_per_minute"),
            ),
            (
                "[key_packages]\nlow_stock_threshold = 1001",
                Some("low_stock_threshold"),
            ),
            ("[key_packages]\nlow_stock_threshold = 0", None),
            (
                "[key_packages]\nlow_stock_active_days = 0",
                Some("low_stock_active_days"),
            ),
            (
                "[key_packages]\nlow_stock_active_days = 366",
                Some("low_stock_active_days"),
            ),
            ("[key_packages]\nlow_stock_active_days = 365", None),
            (
                "[telemetry]\nrefresh_interval_ms = 99",
                Some("refresh_interval_ms"),
            ),
            (
                "[telemetry]\nrefresh_interval_ms = 3600001",
                Some("refresh_interval_ms"),
            ),
            ("[telemetry]\nrefresh_interval_ms = 100", None),
            (
                "[groups]\npast_epoch_window = 101",
                Some("past_epoch_window"),
            ),
            ("[groups]\nmax_members = 1", Some("max_members")),
            ("[groups]\nretention_days = 0", Some("retention_days")),
            ("[groups]\ncipher_suites = []", Some("groups.cipher_suites")),
            (
                "[groups]\ncipher_suites = ['classic', 'quantum']",
                Some("unknown cipher suite \"quantum\""),
            ),
            ("[groups]\ncipher_suites = ['pq']", None),
            (
                "[groups]\ncipher_suites = ['classic']\nrequire_post_quantum = true",
                Some("groups.require_post_quantum"),
            ),
            (
                "[groups]\ncipher_suites = ['classic', 'pq']\nrequire_post_quantum = true",
                None,
            ),
            ("[leases]\nttl_ms = 3000\nrenew_interval_ms = 1000", None),
            (
                "[leases]\nttl_ms = 2999\nrenew_interval_ms = 1000",
                Some("leases.ttl_ms"),
            ),
            (
                "[leases]\nrenew_interval_ms = 99",
                Some("leases.renew_interval_ms"),
            ),
            ("[leases]\nttl_ms = 600001", Some("leases.ttl_ms")),
            (
                "[shutdown]\ndeadline_seconds = 0",
                Some("shutdown.deadline_seconds"),
            ),
            ("[shutdown]\ndeadline_seconds = 600", None),
            (
                "[tls]\nreload_interval_seconds = 0",
                Some("tls.reload_interval_seconds: must be between 1 and 86400"),
            ),
            ("[tls]\nreload_interval_seconds = 86400", None),
            (
                "[tls]\nreload_interval_seconds = 86401",
                Some("tls.reload_interval_seconds"),
            ),
            ("[federation]\nlisten = '0.0.0.0:7401'", None),
            (
                "[federation]\ncertificate = '/nonexistent.pem'",
                Some("set certificate, private_key and trust_roots together"),
            ),
            // The files are the preflight's to read.
            (
                "[federation]\ncertificate = '/nonexistent.pem'\nprivate_key = '/nonexistent.key'\ntrust_roots = '/nonexistent-ca.pem'",
                None,
            ),
            (
                "[federation.peers.'b.example']\nendpoint = 'https://b.example'",
                Some("federation.peers: peers are configured but federation is off"),
            ),
            (
                "[federation.peers.'b.example']\nendpoint = 'https://b.example'\nport = 1",
                Some(
                    "`port` is not a configuration key in [federation.peers.b.example]; the keys there are endpoint, pinned_sha256",
                ),
            ),
            (
                "[federation]\nmax_message_bytes = 10",
                Some("federation.max_message_bytes"),
            ),
            (
                "[federation]\npeer_requests_per_minute = 0",
                Some("federation.peer_requests_per_minute"),
            ),
            (
                "[federation]\ncall_timeout_seconds = 0",
                Some("federation.call_timeout_seconds"),
            ),
            (
                "[limits]\nauth_attempts_per_minute = 0",
                Some("limits.auth_attempts_per_minute"),
            ),
            (
                "[limits]\nauth_attempt_burst = 0",
                Some("limits.auth_attempt_burst"),
            ),
            (
                "[limits]\nlogin_failures_before_backoff = 1001",
                Some("limits.login_failures_before_backoff"),
            ),
            (
                "[limits]\nlogin_backoff_initial_seconds = 0",
                Some("limits.login_backoff_initial_seconds"),
            ),
            (
                "[limits]\nlogin_backoff_initial_seconds = 60\nlogin_backoff_max_seconds = 30",
                Some("limits.login_backoff_max_seconds"),
            ),
            ("[limits]\nlogin_failures_before_backoff = 0", None),
            (
                "[limits]\ncall_deadline_seconds = 0",
                Some("limits.call_deadline_seconds"),
            ),
            (
                "[limits]\nsubscribe_streams_per_device = 0",
                Some("limits.subscribe_streams_per_device: must be between 1 and 64"),
            ),
            (
                "[limits]\nhttp2_max_concurrent_streams = 10\nsubscribe_streams_per_connection = 10",
                Some("limits.subscribe_streams_per_connection: must be between 1 and 9"),
            ),
            (
                "[limits]\nhttp2_max_concurrent_streams = 10\nsubscribe_streams_per_connection = 9",
                None,
            ),
            (
                "[limits]\nhttp2_max_header_list_size = 100",
                Some("limits.http2_max_header_list_size"),
            ),
            (
                "[limits]\nhttp2_keepalive_timeout_seconds = 0",
                Some("limits.http2_keepalive_timeout_seconds"),
            ),
            (
                "[limits]\ntcp_keepalive_seconds = 0",
                Some("limits.tcp_keepalive_seconds"),
            ),
            ("[log]\nformat = 'json'", None),
            ("[log]\nformat = 'xml'", Some("log.format")),
        ] {
            check(toml, error);
        }
    }

    /// The peers are judged against the domain; the files are not read here
    /// (`preflight` reads them), so these paths need not exist.
    #[test]
    fn federation_peers_are_checked() {
        let federation = |domain: &str, peers: &str| {
            format!(
                "domain = '{domain}'\n[federation]\ncertificate = '/nonexistent/a.pem'\nprivate_key = '/nonexistent/a.key.pem'\ntrust_roots = '/nonexistent/ca.pem'\n{peers}"
            )
        };
        let b_peer = "[federation.peers.'b.example']\nendpoint = 'https://127.0.0.2:7401'";
        let pin = "ab".repeat(32);
        for (toml, error) in [
            (federation("a.example", b_peer), None),
            (federation("a.example", ""), None),
            (
                federation("a.example", &format!("{b_peer}\npinned_sha256 = '{pin}'")),
                None,
            ),
            (
                federation(
                    "a.example",
                    "[federation.peers.'b.example']\nendpoint = 'http://127.0.0.2:7401'",
                ),
                Some(
                    "federation.peers: peer \"b.example\": endpoint \"http://127.0.0.2:7401\" must be an https:// URL",
                ),
            ),
            (
                federation(
                    "a.example",
                    "[federation.peers.'a.example']\nendpoint = 'https://127.0.0.1:7401'",
                ),
                Some("is this homeserver's own domain"),
            ),
            (
                federation(
                    "a.example",
                    "[federation.peers.'B.example']\nendpoint = 'https://127.0.0.2:7401'",
                ),
                Some("federation.peers: peer \"B.example\""),
            ),
            (
                federation("a.example", &format!("{b_peer}\npinned_sha256 = 'abcd'")),
                Some("pinned_sha256"),
            ),
            // The domain's own problem, not the peers'.
            (federation("A.example", b_peer), Some("domain: ")),
        ] {
            check(&toml, error);
        }
    }

    /// `problems` judges each section on its own and lists every refusal,
    /// in the order `validate` meets them; `validate` gives the first.
    #[test]
    fn every_problem_is_listed_and_validate_gives_the_first() {
        let toml = "domain = 'A.example'\n[client_api]\nlisten = '0.0.0.0:7400'\n\
                    [federation.peers.'b.example']\nendpoint = 'https://b.example'\n\
                    [shutdown]\ndeadline_seconds = 0\n[log]\nformat = 'json'\nfilter = 'a=b=c'";
        let config = Config::from_toml(toml).unwrap();
        let keys: Vec<&str> = config
            .problems()
            .iter()
            .map(|problem| match problem {
                ConfigError::Invalid { key, .. } => *key,
                ConfigError::Load(error) => panic!("{error}"),
            })
            .collect();
        assert_eq!(
            keys,
            [
                "domain",
                "client_api.listen",
                "federation.peers",
                "shutdown.deadline_seconds",
                "log.filter"
            ]
        );
        let first = config.validate().unwrap_err().to_string();
        assert!(first.starts_with("domain: "), "{first}");
        assert!(Config::default().problems().is_empty());
    }

    #[test]
    fn only_configuration_variables_are_read_from_the_environment() {
        let variables = [
            ("CONCLAVE_DOMAIN", "a.example"),
            ("CONCLAVE_DATABASE__URL", "postgres://x/y"),
            ("CONCLAVE_PASSWORD", "secret"),
            ("CONCLAVE_SERVER", "http://127.0.0.1:7400"),
            ("CONCLAVE_TEST_POSTGRES_URL", "postgres://x/y"),
            ("CONCLAVE_DOMAINS", "x"),
            ("HOME", "/root"),
        ]
        .map(|(name, value)| (name.to_owned(), value.to_owned()));
        let kept = configuration_variables(variables.into_iter());
        let mut names: Vec<&String> = kept.keys().collect();
        names.sort();
        assert_eq!(
            names,
            [
                "CONCLAVE_DATABASE__URL",
                "CONCLAVE_DOMAIN",
                "CONCLAVE_DOMAINS"
            ]
        );
        let error = check_variables(&kept).unwrap_err().to_string();
        assert!(
            error.starts_with(
                "environment variable CONCLAVE_DOMAINS names no configuration key; did you mean CONCLAVE_DOMAIN?"
            ),
            "{error}"
        );
    }

    /// Unknown variables are refused with the nearest key, at every level;
    /// every section of the example file (which documents every key) can be
    /// set from the environment.
    #[test]
    fn unknown_variables_are_refused_naming_the_nearest_key() {
        let refusal = |name: &str, value: &str| {
            let variables = std::collections::HashMap::from([(name.to_owned(), value.to_owned())]);
            check_variables(&variables)
                .err()
                .map(|error| error.to_string())
        };
        let error = refusal("CONCLAVE_CLIENT_API__LISTN", "127.0.0.1:1").unwrap();
        assert!(
            error.contains("CONCLAVE_CLIENT_API__LISTN names no configuration key; did you mean CONCLAVE_CLIENT_API__LISTEN?"),
            "{error}"
        );
        let error = refusal("CONCLAVE_REDIS_URL", "redis://x").unwrap();
        assert!(
            error.contains("did you mean CONCLAVE_REDIS__URL?"),
            "{error}"
        );
        let error = refusal("CONCLAVE_LIMITS__NOTHING_LIKE_IT", "1").unwrap();
        assert!(
            error.contains("the variables there are CONCLAVE_LIMITS__"),
            "{error}"
        );
        // A known key with a bad value is the whole load's to report.
        assert_eq!(refusal("CONCLAVE_CLIENT_API__LISTEN", "nowhere"), None);
        assert_eq!(
            refusal("CONCLAVE_REDIS__URL", "redis://127.0.0.1:6379"),
            None
        );
        assert_eq!(refusal("CONCLAVE_SHUTDOWN__DEADLINE_SECONDS", "5"), None);
        assert_eq!(refusal("CONCLAVE_LEASES__TTL_MS", "9000"), None);
        let example = include_str!("../../conclave-homeserver.example.toml");
        for section in example
            .lines()
            .filter_map(|line| line.strip_prefix('[')?.strip_suffix(']'))
            .filter(|section| !section.contains('.'))
        {
            let name = format!("CONCLAVE_{}", section.to_ascii_uppercase());
            let error =
                refusal(&name, "1").map(|error| error.contains("names no configuration key"));
            assert_ne!(error, Some(true), "{name}");
        }
    }

    /// Errors name the file, the key, what was wrong and what is allowed.
    #[test]
    fn load_errors_say_where_what_and_what_is_allowed() {
        let directory = tempfile::tempdir().unwrap();
        let file = directory.path().join("conclave.toml");
        let load = |text: &str| {
            std::fs::write(&file, text).unwrap();
            Config::parse(Some(&file)).unwrap_err().to_string()
        };
        let name = file.display().to_string();
        let cases = [
            (
                "[client_api]\nlistn = '127.0.0.1:7400'",
                "client_api.listn: `listn` is not a configuration key in [client_api] (did you mean `listen`?); the keys there are listen, ",
            ),
            (
                "domian = 'a.example'",
                "domian: `domian` is not a configuration key at the top level (did you mean `domain`?)",
            ),
            (
                "[database]\nmax_connections = 'ten'",
                "database.max_connections: string \"ten\" is not allowed; it must be a whole number",
            ),
            (
                "[registration]\npolicy = 'opne'",
                "registration.policy: `opne` is not allowed (did you mean `open`?); it must be one of open, token, closed",
            ),
            (
                "[client_api]\nlisten = 'localhost'",
                "client_api.listen: not a socket address; it must be IP:PORT",
            ),
            (
                "domain = ",
                "not valid TOML: line 1, column 10: string values must be quoted",
            ),
        ];
        for (text, expected) in cases {
            let error = load(text);
            assert!(error.starts_with(&name), "{text:?}: {error}");
            assert!(error.contains(expected), "{text:?}: {error}");
            assert!(!error.contains('\n'), "{text:?}: {error}");
        }
    }

    #[test]
    fn admin_settings_are_checked() {
        let defaults = Config::default().admin;
        assert!(defaults.enabled);
        assert_eq!(
            (defaults.session_idle_minutes, defaults.session_max_hours),
            (30, 12)
        );
        assert!(!defaults.behind_tls_proxy);
        check(
            "[admin]\nenabled = false\nsession_idle_minutes = 1440\nsession_max_hours = 168\n\
             behind_tls_proxy = true",
            None,
        );
        check("[admin]\nsession_idle_minutes = 1", None);
        check(
            "[admin]\nsession_idle_minutes = 0",
            Some("admin.session_idle_minutes: must be between 1 and 1440"),
        );
        check(
            "[admin]\nsession_idle_minutes = 1441",
            Some("admin.session_idle_minutes"),
        );
        check(
            "[admin]\nsession_max_hours = 0",
            Some("admin.session_max_hours: must be between 1 and 168"),
        );
        check(
            "[admin]\nsession_max_hours = 169",
            Some("admin.session_max_hours"),
        );
        check("[admin]\nsessions = 3", Some("sessions"));
        let variables = [("CONCLAVE_ADMIN__ENABLED", "false")]
            .map(|(name, value)| (name.to_owned(), value.to_owned()));
        assert_eq!(configuration_variables(variables.into_iter()).len(), 1);
    }

    #[test]
    fn telemetry_settings_are_checked() {
        check(
            "[telemetry]\notlp_endpoint = 'http://otel-collector:4317'\nsampling_ratio = 0.25\n\
             service_name = 'chat'\nreplica = 'pod-1'\n\
             [telemetry.resource_attributes]\n'deployment.environment' = 'staging'",
            None,
        );
        check(
            "[telemetry]\nsampling_ratio = 1.5",
            Some("telemetry.sampling_ratio: 1.5 is not between 0.0 (no trace) and 1.0"),
        );
        check(
            "[telemetry]\nsampling_ratio = -0.1",
            Some("telemetry.sampling_ratio"),
        );
        check(
            "[telemetry]\notlp_endpoint = 'otel-collector:4317'",
            Some("telemetry.otlp_endpoint: is not an http:// or https:// URL"),
        );
        check(
            "[telemetry]\nservice_name = ' '",
            Some("telemetry.service_name: must not be empty"),
        );
        check("[telemetry]\nreplica = ''", Some("telemetry.replica"));
        check(
            "[telemetry.resource_attributes]\n'' = 'x'",
            Some("telemetry.resource_attributes"),
        );
        for endpoint in [
            "http://user:hunter2@otel-collector:4317",
            "https://hunter2@otel-collector:4317/v1",
            "user:hunter2@otel-collector:4317",
            // A `/` in the password would end a parsed authority before the `@`.
            "http://user:hun/ter2@otel-collector:4317",
            "http://otel-collector:4317/a@b",
        ] {
            let toml = format!("[telemetry]\notlp_endpoint = '{endpoint}'");
            let error = config::Config::builder()
                .add_source(config::File::from_str(&toml, config::FileFormat::Toml))
                .build()
                .and_then(|built| built.try_deserialize::<Config>())
                .map_err(ConfigError::from)
                .and_then(|config| config.validate())
                .expect_err(endpoint)
                .to_string();
            assert!(
                error.contains(
                    "telemetry.otlp_endpoint: must not contain credentials (user:password@); \
                     give the collector's credentials in OTEL_EXPORTER_OTLP_HEADERS"
                ),
                "{endpoint}: {error}"
            );
            assert!(!error.contains("hun"), "{error}");
        }
        for key in [
            "service.name",
            "service.version",
            "service.instance.id",
            "conclave.domain",
        ] {
            check(
                &format!("[telemetry.resource_attributes]\n'{key}' = 'x'"),
                Some(&format!(
                    "telemetry.resource_attributes: \"{key}\" is set by the server"
                )),
            );
        }
    }

    #[test]
    fn example_file_is_the_default_configuration() {
        let example = include_str!("../../conclave-homeserver.example.toml");
        let config: Config = config::Config::builder()
            .add_source(config::File::from_str(example, config::FileFormat::Toml))
            .build()
            .and_then(|built| built.try_deserialize())
            .expect("the example file parses");
        config.validate().expect("the example file is valid");
        let default = Config::default();
        assert_eq!(format!("{config:?}"), format!("{default:?}"));
    }
}
