//! Use cases, one file each, named after what the user does: take validated
//! input, open a transaction, load, ask `rules` for a decision, write what it
//! says, commit, then wake subscribers. This layer knows neither tonic nor
//! sea-orm (the `tidy` tests check); its errors are one enum per concern,
//! mapped to gRPC statuses in `grpc/status.rs` only.
//!
//! # Layout
//! - `accounts`: enrolment challenges, register, log in and out, authenticate a
//!   bearer token, devices.
//! - `admin/`: administering the domain (the admin API, the console and
//!   `conclave-homeserver admin`): admin sessions, the role, the overview and
//!   the audit log, and the other helpers' areas.
//! - `attempt_limiter`: where the brute-force limits on Register and Login keep
//!   their state (in-process, or shared through Redis in a cluster).
//! - `rate_limiter`: where the per-key rate limits (key-package claims, and a
//!   cluster's federation requests per peer) keep their state.
//! - `key_packages`: upload, stock and claim of KeyPackages (local, forwarded to
//!   other domains, and for peers).
//! - `verify_credential`: the credential checks peers of other domains ask for.
//! - `secrets`: access tokens, registration tokens' secrets and password
//!   hashes.
//! - `groups/`: the hub: create, commit, propose, send, group info, list.
//! - `routing`: a submission goes to the hub here or is relayed to the group's
//!   hub; `remote_leaves`: other domains vouch for their devices' leaves.
//! - `departures/`: a deleted device leaves its groups: departure notices in
//!   hosted groups' logs, announcements to other domains' hubs.
//! - `delivery/`: fetch, stream and acknowledge what a device should receive.
//! - `outbox/`: the hub's delivery to follower domains, and FetchEvents.
//! - `follower/`: applying a hub's events to this homeserver's copy.
//! - `idempotency`: retried submissions return their first result.
//! - `janitor`: hourly clean-up.
//! - `leases`: background work (outboxes, janitor) on one replica at a time.
//! - `resync`: in a cluster, the periodic look at the database that bounds
//!   the delay of a lost wake-up.

pub(crate) mod accounts;
pub(crate) mod admin;
pub(crate) mod attempt_limiter;
pub(crate) mod delivery;
pub(crate) mod departures;
pub(crate) mod follower;
pub(crate) mod groups;
pub(crate) mod idempotency;
pub(crate) mod janitor;
pub(crate) mod key_packages;
pub(crate) mod leases;
pub(crate) mod outbox;
pub(crate) mod rate_limiter;
pub(crate) mod remote_leaves;
pub(crate) mod resync;
pub(crate) mod routing;
pub(crate) mod secrets;
pub(crate) mod verify_credential;

use crate::cluster::{RedisLink, SharedAttemptLimiter, SharedRateLimiter};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::notify::{LocalNotifier, Notifier};
use crate::rules::enrolment::ChallengeKey;
use crate::rules::rate::Rate;
use crate::rules::streams::StreamLimits;
use crate::store::{Store, StoreError};
use attempt_limiter::{AttemptLimiter, LocalAttemptLimiter};
use conclave_core::ids::Domain;
use conclave_federation::client::FederationClient;
use rate_limiter::{KeyedRateLimiter, LocalRateLimiter};
use std::sync::Arc;

/// The source of "now", so tests can move time (e.g. to expire a KeyPackage).
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX) // tidy: saturating (year 292 million)
    }
}

/// What every use case needs: the database, the settings and the clock.
pub(crate) struct Context {
    pub(crate) store: Store,
    pub(crate) config: Config,
    pub(crate) domain: Domain,
    pub(crate) clock: Arc<dyn Clock>,
    /// Per-claimer limit on key-package claims, keyed by credential identity: a
    /// local device, or a device of a peer domain claiming through its
    /// homeserver. In-process when this server runs alone; shared through
    /// Redis by a cluster's replicas.
    pub(crate) claim_limiter: Arc<dyn KeyedRateLimiter>,
    /// Wakes subscribers when their groups' logs or their inboxes grow.
    pub(crate) notifier: Arc<dyn Notifier>,
    /// Calls the homeservers of other domains; `None` when federation is off.
    pub(crate) federation: Option<Arc<FederationClient>>,
    /// The connection to Redis in cluster mode (`[redis]`); `None` when this
    /// server runs alone.
    pub(crate) redis: Option<Arc<RedisLink>>,
    /// Other domains' recent answers about their devices' credentials.
    pub(crate) credential_cache: remote_leaves::CredentialCache,
    /// Argon2id for Register and Login: a bounded number at once, reusing memory.
    pub(crate) password_hasher: secrets::PasswordHasher,
    /// Brute-force limits on Register and Login, checked before any hashing.
    pub(crate) attempt_limiter: Arc<dyn AttemptLimiter>,
    /// The domain's enrolment-challenge secret, read from the database (or made
    /// there) on first use; see `accounts::enrolment`.
    pub(crate) challenge_key: tokio::sync::OnceCell<ChallengeKey>,
    /// The Subscribe streams open now, per device and per connection.
    pub(crate) subscribe_streams: delivery::SubscribeStreams,
    /// The newest events of the groups that streams read, shared by them.
    pub(crate) group_tails: delivery::GroupTails,
    /// The streams' database reads, as many at once as the pool has connections.
    pub(crate) stream_reads: delivery::StreamReads,
    /// This replica's id and its leases on background work.
    pub(crate) leases: leases::Leases,
    /// Calls of both gRPC listeners being answered now (counted by grpc/),
    /// logged when a shutdown's deadline cuts them short.
    pub(crate) calls_in_flight: Arc<std::sync::atomic::AtomicUsize>,
    /// This server's Prometheus metrics (`/metrics`).
    pub(crate) metrics: Arc<Metrics>,
    /// The parsed public state of hosted groups, kept between commits.
    pub(crate) hub_states: Arc<groups::HubStates>,
    /// The ratchet trees of recent Welcomes, exported once per commit.
    pub(crate) welcome_trees: Arc<delivery::WelcomeTrees>,
    /// Application messages waiting for their group's next shared transaction.
    pub(crate) message_batcher: groups::MessageBatcher,
    /// Recent callers' sessions, dropped when their device's access may end.
    pub(crate) sessions: accounts::SessionCache,
}

impl Context {
    pub(crate) fn new(store: Store, config: Config, clock: Arc<dyn Clock>) -> Context {
        let stream_limits = StreamLimits {
            per_device: config.limits.subscribe_streams_per_device,
            per_connection: config.limits.subscribe_streams_per_connection,
        };
        let attempt_policy = config.limits.attempt_policy();
        let claim_rate = claim_rate(&config);
        let metrics = Arc::new(Metrics::new());
        let message_batcher = groups::MessageBatcher::new(&store);
        // As many as the pool really has: tests make small pools whatever
        // the configuration says.
        let pool_size = store.pool_connections().max;
        let stream_reads =
            delivery::StreamReads::new(usize::try_from(pool_size).unwrap_or(usize::MAX)); // tidy: saturating (a pool of u32 connections)
        Context {
            leases: leases::Leases::new(store.clone(), clock.clone(), &config.leases),
            store,
            domain: config.domain(),
            config,
            clock,
            claim_limiter: Arc::new(LocalRateLimiter::new(claim_rate)),
            notifier: Arc::new(LocalNotifier::default()),
            federation: None,
            redis: None,
            credential_cache: remote_leaves::CredentialCache::default(),
            password_hasher: secrets::PasswordHasher::new(),
            attempt_limiter: Arc::new(LocalAttemptLimiter::new(attempt_policy)),
            challenge_key: tokio::sync::OnceCell::new(),
            subscribe_streams: delivery::SubscribeStreams::new(
                stream_limits,
                metrics.subscribe_streams.clone(),
            ),
            group_tails: delivery::GroupTails::default(),
            stream_reads,
            calls_in_flight: Arc::default(),
            metrics,
            hub_states: Arc::default(),
            welcome_trees: Arc::default(),
            message_batcher,
            sessions: accounts::SessionCache::default(),
        }
    }

    /// The same context, calling peers through `federation`.
    pub(crate) fn with_federation(self, federation: Arc<FederationClient>) -> Context {
        Context {
            federation: Some(federation),
            ..self
        }
    }

    /// The same context, waking subscribers through `notifier`.
    pub(crate) fn with_notifier(self, notifier: Arc<dyn Notifier>) -> Context {
        Context { notifier, ..self }
    }

    /// The same context, one replica of a cluster sharing `redis`.
    pub(crate) fn with_redis(self, redis: Arc<RedisLink>) -> Context {
        // The limits count once for all replicas, in Redis (each replica
        // falls back to its own count while Redis is unreachable).
        let attempt_policy = self.config.limits.attempt_policy();
        let attempt_limiter = Arc::new(SharedAttemptLimiter::new(redis.clone(), attempt_policy));
        let claim_limiter = Arc::new(SharedRateLimiter::new(
            redis.clone(),
            "claims",
            claim_rate(&self.config),
        ));
        Context {
            redis: Some(redis),
            attempt_limiter,
            claim_limiter,
            ..self
        }
    }

    pub(crate) fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// The current request's W3C `traceparent`, to keep with an event that the
    /// outbox may deliver to other domains; `None` without federation.
    pub(crate) fn trace_parent_for_outbox(&self) -> Option<String> {
        self.federation
            .as_ref()
            .and_then(|_| conclave_federation::trace_context::current_traceparent())
    }
}

/// Claims per claimer: `claims_per_minute` at once, then that many a minute.
fn claim_rate(config: &Config) -> Rate {
    let per_minute = config.key_packages.claims_per_minute;
    Rate::per_minute(per_minute, per_minute)
}

/// A failure that is the server's, not the client's.
#[derive(Debug, thiserror::Error)]
pub(crate) enum InternalError {
    /// The database failed, or holds a value that does not fit its type.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored value breaks a rule it was checked against when stored.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}
