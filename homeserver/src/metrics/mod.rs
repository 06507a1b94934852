//! The numbers an operator alerts on, served on `GET /metrics` (the HTTP
//! listener) as OpenMetrics or classic Prometheus text with `prometheus-client`.
//!
//! One [`Metrics`] per homeserver, with a registry of its own, so that several
//! homeservers in one process (tests, the benchmark) keep separate numbers.
//! Every metric is documented in `docs/metrics.md`; the names are fixed there
//! (dashboards and alert rules depend on them), and a test here fails when a
//! family is missing from it.
//!
//! `exposition` picks the text format a scraper asks for (OpenMetrics, or the
//! classic Prometheus text); `process`, `database_pool` and `redis_up` are the
//! collectors read at scrape time; `peer_reachability` renders each peer's
//! recent outcome and `peer_certificates` reads a peer's certificates only
//! when they change.
//!
//! No label ever carries a user, device or group id: the labels are the gRPC
//! service and method, status codes, message kinds, peer domains (a fixed,
//! configured set), certificate roles, listener and limit names.
//!
//! The use cases count through the fields here; values that are cheaper to
//! read than to count (pool connections, Redis reachability) are read when
//! Prometheus scrapes.

mod certificates;
mod database_pool;
mod exposition;
mod federation;
mod peer_certificates;
mod peer_reachability;
mod process;
mod redis_up;

pub(crate) use certificates::not_after_unix_seconds;
pub(crate) use exposition::Format;
pub(crate) use federation::FederationCallCounters;

use crate::store::{EventKind, Store};
pub(crate) use peer_certificates::CertificateRole;
use peer_certificates::PeerCertificates;
use peer_reachability::PeerReachability;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;

/// The `Content-Type` of [`Metrics::render`]'s text.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A limit that refuses requests, as `conclave_ratelimit_rejections_total`
/// names it: a fixed set, documented in `docs/metrics.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RateLimit {
    /// A Register refused by its source address's attempt bucket.
    RegisterAttempts,
    /// A Login refused by its source address's attempt bucket.
    LoginAttempts,
    /// A Login refused while its (account, source address) backs off after
    /// failed logins.
    LoginBackoff,
    /// A key-package claim over its claimer's rate.
    KeyPackageClaims,
    /// A Subscribe stream closed because a newer one of its device went over
    /// `limits.subscribe_streams_per_device`.
    SubscribeStreamsPerDevice,
    /// A Subscribe refused over `limits.subscribe_streams_per_connection`.
    SubscribeStreamsPerConnection,
    /// A federation request over its peer domain's rate.
    FederationPeerRequests,
}

impl RateLimit {
    /// Every limit, in the order `docs/metrics.md` lists them.
    #[cfg(test)]
    pub(crate) const ALL: [RateLimit; 7] = [
        RateLimit::RegisterAttempts,
        RateLimit::LoginAttempts,
        RateLimit::LoginBackoff,
        RateLimit::KeyPackageClaims,
        RateLimit::SubscribeStreamsPerDevice,
        RateLimit::SubscribeStreamsPerConnection,
        RateLimit::FederationPeerRequests,
    ];

    /// The `limit` label's value.
    pub(crate) fn name(self) -> &'static str {
        match self {
            RateLimit::RegisterAttempts => "register_attempts",
            RateLimit::LoginAttempts => "login_attempts",
            RateLimit::LoginBackoff => "login_backoff",
            RateLimit::KeyPackageClaims => "key_package_claims",
            RateLimit::SubscribeStreamsPerDevice => "subscribe_streams_per_device",
            RateLimit::SubscribeStreamsPerConnection => "subscribe_streams_per_connection",
            RateLimit::FederationPeerRequests => "federation_peer_requests",
        }
    }
}

/// A gRPC call, as `conclave_grpc_requests_total` counts it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct GrpcCallLabels {
    /// The fully qualified service, `conclave.client.v1.GroupService`.
    pub(crate) service: String,
    /// The method, `SubmitCommit`.
    pub(crate) method: String,
    /// The gRPC status code's name, `OK`, `ABORTED`, ...
    pub(crate) code: String,
}

/// A gRPC method, as `conclave_grpc_request_duration_seconds` times it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct GrpcMethodLabels {
    pub(crate) service: String,
    pub(crate) method: String,
}

/// What kind of entry the hub appended: `application`, `commit`, `proposal`, or
/// `departure` (a departure notice the hub wrote).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct MessageKindLabels {
    pub(crate) kind: &'static str,
}

/// A peer domain (one of the configured peers, never anything a request names).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct PeerLabels {
    pub(crate) peer: String,
}

/// A federation call: to the peer (`outbound`) or from it (`inbound`), and its
/// gRPC status code's name.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct FederationRequestLabels {
    pub(crate) peer: String,
    pub(crate) direction: &'static str,
    pub(crate) code: String,
}

/// One of this server's TLS listeners: `client_api` or `federation`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ListenerLabels {
    pub(crate) listener: &'static str,
}

/// A limit that refused a request (`login_attempts`, `key_package_claims`, ...).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct LimitLabels {
    pub(crate) limit: &'static str,
}

/// The release that runs.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct BuildLabels {
    pub(crate) version: &'static str,
}

/// A histogram made with fixed buckets, for the families of histograms.
pub(crate) type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Buckets for request durations and delivery lag: 1 ms to about 33 s.
fn latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.001, 2.0, 16)
}

fn latency_histogram() -> Histogram {
    Histogram::new(latency_buckets())
}

/// Every metric of one homeserver, and the registry that renders them.
pub(crate) struct Metrics {
    registry: Registry,
    /// `conclave_grpc_requests_total{service,method,code}`: client and
    /// federation API calls answered.
    pub(crate) grpc_requests: Family<GrpcCallLabels, Counter>,
    /// `conclave_grpc_request_duration_seconds{service,method}`: from the
    /// request's arrival to its response's headers (for Subscribe, the stream's
    /// start).
    pub(crate) grpc_request_duration: HistogramFamily<GrpcMethodLabels>,
    /// `conclave_messages_accepted_total{kind}`: messages the hub appended to a
    /// group's log.
    pub(crate) messages_accepted: Family<MessageKindLabels, Counter>,
    /// `conclave_commit_conflicts_total`: commits refused because another commit
    /// for the same epoch won.
    pub(crate) commit_conflicts: Counter,
    /// `conclave_subscribe_streams`: Subscribe streams open now.
    pub(crate) subscribe_streams: Gauge,
    /// `conclave_delivery_lag_seconds`: from a live event's storing by this
    /// domain to its being written to a Subscribe stream (replays at a
    /// stream's start are not observed).
    pub(crate) delivery_lag: Histogram,
    /// `conclave_federation_outbox_pending{peer}`: events of groups hosted here
    /// the peer has not confirmed.
    pub(crate) federation_outbox_pending: Family<PeerLabels, Gauge>,
    /// `conclave_federation_outbox_oldest_age_seconds{peer}`: the age of the
    /// oldest of them (0 when none).
    pub(crate) federation_outbox_oldest_age: Family<PeerLabels, Gauge<f64, AtomicU64>>,
    /// `conclave_federation_requests_total{peer,direction,code}`.
    pub(crate) federation_requests: Family<FederationRequestLabels, Counter>,
    /// `conclave_federation_peer_up{peer}`: 1 when this replica's last recent
    /// call to the peer reached it; 0 when it did not.
    pub(crate) federation_peer_up: PeerReachability,
    /// `conclave_tls_certificate_expiry_timestamp_seconds{listener}`: when this
    /// server's own certificates expire (Unix time).
    pub(crate) tls_certificate_expiry: Family<ListenerLabels, Gauge>,
    /// `conclave_tls_certificate_loaded_timestamp_seconds{listener}`: when the
    /// certificate served now was loaded, at start or by a reload (Unix time).
    pub(crate) tls_certificate_loaded: Family<ListenerLabels, Gauge>,
    /// `conclave_tls_reload_failures_total{listener}`: renewed TLS files that
    /// could not be used (the previous certificate stayed).
    pub(crate) tls_reload_failures: Family<ListenerLabels, Counter>,
    /// `conclave_federation_peer_certificate_expiry_timestamp_seconds{peer,role}`:
    /// when the certificate a peer last presented in each role expires (Unix time).
    pub(crate) peer_certificate_expiry: PeerCertificates,
    /// `conclave_devices_low_on_key_packages`: this domain's devices whose
    /// stock of ordinary key packages is below the low-water mark.
    pub(crate) devices_low_on_key_packages: Gauge,
    /// `conclave_ratelimit_rejections_total{limit}`.
    pub(crate) ratelimit_rejections: Family<LimitLabels, Counter>,
}

impl Metrics {
    /// Every metric at zero, registered under its documented name.
    pub(crate) fn new() -> Metrics {
        let mut registry = Registry::default();
        let grpc_requests = Family::<GrpcCallLabels, Counter>::default();
        registry.register(
            "conclave_grpc_requests",
            "Client and federation API calls answered, by gRPC status code",
            grpc_requests.clone(),
        );
        let grpc_request_duration: HistogramFamily<GrpcMethodLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register_with_unit(
            "conclave_grpc_request_duration",
            "Time to answer a client or federation API call (to the response's headers)",
            Unit::Seconds,
            grpc_request_duration.clone(),
        );
        let messages_accepted = Family::<MessageKindLabels, Counter>::default();
        registry.register(
            "conclave_messages_accepted",
            "Messages the hub appended to a group's log, by kind",
            messages_accepted.clone(),
        );
        let commit_conflicts = Counter::default();
        registry.register(
            "conclave_commit_conflicts",
            "Commits refused because another commit for the same epoch won",
            commit_conflicts.clone(),
        );
        let subscribe_streams = Gauge::default();
        registry.register(
            "conclave_subscribe_streams",
            "Subscribe streams open now",
            subscribe_streams.clone(),
        );
        let delivery_lag = latency_histogram();
        registry.register_with_unit(
            "conclave_delivery_lag",
            "From a live event's storing by this domain (the hub's acceptance, or a follower's copy) to its being written to a Subscribe stream; replays at a stream's start are not observed",
            Unit::Seconds,
            delivery_lag.clone(),
        );
        let federation_outbox_pending = Family::<PeerLabels, Gauge>::default();
        registry.register(
            "conclave_federation_outbox_pending",
            "Events of groups hosted here that the peer domain has not confirmed",
            federation_outbox_pending.clone(),
        );
        let federation_outbox_oldest_age = Family::<PeerLabels, Gauge<f64, AtomicU64>>::default();
        registry.register_with_unit(
            "conclave_federation_outbox_oldest_age",
            "Age of the oldest event the peer domain has not confirmed (0 when none)",
            Unit::Seconds,
            federation_outbox_oldest_age.clone(),
        );
        let federation_requests = Family::<FederationRequestLabels, Counter>::default();
        registry.register(
            "conclave_federation_requests",
            "Federation API calls to (outbound) and from (inbound) each peer domain, by gRPC status code",
            federation_requests.clone(),
        );
        let federation_peer_up = PeerReachability::default();
        registry.register_collector(Box::new(federation_peer_up.clone()));
        let tls_certificate_expiry = Family::<ListenerLabels, Gauge>::default();
        registry.register(
            "conclave_tls_certificate_expiry_timestamp_seconds",
            "When this server's own TLS certificate expires (Unix time), per listener",
            tls_certificate_expiry.clone(),
        );
        let tls_certificate_loaded = Family::<ListenerLabels, Gauge>::default();
        registry.register(
            "conclave_tls_certificate_loaded_timestamp_seconds",
            "When the TLS certificate served now was loaded, at start or by a reload (Unix time), per listener",
            tls_certificate_loaded.clone(),
        );
        let tls_reload_failures = Family::<ListenerLabels, Counter>::default();
        registry.register(
            "conclave_tls_reload_failures",
            "Renewed TLS files that could not be used (the previous certificate stayed in use), per listener",
            tls_reload_failures.clone(),
        );
        let peer_certificate_expiry = PeerCertificates::default();
        registry.register(
            "conclave_federation_peer_certificate_expiry_timestamp_seconds",
            "When the TLS certificate a peer domain last presented expires (Unix time), by role: its server certificate (outbound calls) or its client certificate (inbound calls)",
            peer_certificate_expiry.family(),
        );
        let devices_low_on_key_packages = Gauge::default();
        registry.register(
            "conclave_devices_low_on_key_packages",
            "Devices of this domain whose stock of key packages is low",
            devices_low_on_key_packages.clone(),
        );
        let ratelimit_rejections = Family::<LimitLabels, Counter>::default();
        registry.register(
            "conclave_ratelimit_rejections",
            "Requests refused by a rate or attempt limit, by limit",
            ratelimit_rejections.clone(),
        );
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register(
            "conclave_build_info",
            "The release that runs (always 1)",
            build_info,
        );
        Metrics {
            registry,
            grpc_requests,
            grpc_request_duration,
            messages_accepted,
            commit_conflicts,
            subscribe_streams,
            delivery_lag,
            federation_outbox_pending,
            federation_outbox_oldest_age,
            federation_requests,
            federation_peer_up,
            tls_certificate_expiry,
            tls_certificate_loaded,
            tls_reload_failures,
            peer_certificate_expiry,
            devices_low_on_key_packages,
            ratelimit_rejections,
        }
    }

    /// One more message of `kind` appended to a group's log (after its
    /// transaction committed; a retried submission answered from its first
    /// result is not counted again).
    pub(crate) fn count_accepted(&self, kind: EventKind) {
        let kind = match kind {
            EventKind::Application => "application",
            EventKind::Commit => "commit",
            EventKind::Proposal => "proposal",
            EventKind::Departure => "departure",
        };
        self.messages_accepted
            .get_or_create(&MessageKindLabels { kind })
            .inc();
    }

    /// Registers the collectors read at scrape time: the process's numbers,
    /// the database pool's, and in cluster mode whether Redis answers
    /// (`redis_is_up`, the link's `watch_up()`).
    pub(crate) fn register_collectors(
        &mut self,
        store: Store,
        redis_is_up: Option<tokio::sync::watch::Receiver<bool>>,
    ) {
        self.registry
            .register_collector(Box::new(process::ProcessCollector));
        self.registry
            .register_collector(Box::new(database_pool::DatabasePoolCollector { store }));
        if let Some(up) = redis_is_up {
            self.registry
                .register_collector(Box::new(redis_up::RedisUpCollector { up }));
        }
    }

    /// One request refused (or, for a device's Subscribe streams, one stream
    /// closed) by `limit`.
    pub(crate) fn count_rejection(&self, limit: RateLimit) {
        self.ratelimit_rejections
            .get_or_create(&LimitLabels {
                limit: limit.name(),
            })
            .inc();
    }

    /// How many rejections `limit` counted (for tests).
    #[cfg(test)]
    pub(crate) fn rejections(&self, limit: RateLimit) -> u64 {
        self.ratelimit_rejections
            .get_or_create(&LimitLabels {
                limit: limit.name(),
            })
            .get()
    }

    /// Every metric as OpenMetrics text (for tests; the server renders in the
    /// format the scraper asks for).
    #[cfg(test)]
    pub(crate) fn render(&self) -> String {
        self.render_as(Format::OpenMetrics)
    }

    /// Every metric as text in `format` (whose `content_type()` to send it with).
    pub(crate) fn render_as(&self, format: Format) -> String {
        let mut text = String::new();
        let encoded = match format {
            Format::OpenMetrics => {
                prometheus_client::encoding::text::encode(&mut text, &self.registry)
            }
            Format::PrometheusText => {
                prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)
            }
        };
        // Writing to a String cannot fail; a collector that fails is a bug,
        // and its metric is cut off rather than the whole page lost.
        if let Err(error) = encoded {
            tracing::error!(%error, "a metric could not be rendered");
        }
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Metrics").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fixed_name_is_rendered() {
        let metrics = Metrics::new();
        metrics.commit_conflicts.inc();
        metrics
            .messages_accepted
            .get_or_create(&MessageKindLabels {
                kind: "application",
            })
            .inc();
        metrics
            .grpc_request_duration
            .get_or_create(&GrpcMethodLabels {
                service: "conclave.client.v1.GroupService".to_owned(),
                method: "SendMessage".to_owned(),
            })
            .observe(0.002);
        let text = metrics.render();
        for line in [
            "conclave_commit_conflicts_total 1",
            "conclave_messages_accepted_total{kind=\"application\"} 1",
            "conclave_build_info{version=\"",
            "conclave_grpc_request_duration_seconds_count{service=\"conclave.client.v1.GroupService\",method=\"SendMessage\"} 1",
            "# TYPE conclave_subscribe_streams gauge",
            "# TYPE conclave_delivery_lag_seconds histogram",
            "# EOF",
        ] {
            assert!(text.contains(line), "{line:?} missing from:\n{text}");
        }
    }

    /// Every family of a homeserver in cluster mode, collectors included.
    async fn metrics_with_collectors(database: &conclave_test_support::TestDatabase) -> Metrics {
        let store = Store::connect(database.url(), 2).await.unwrap();
        let (_up_sender, up) = tokio::sync::watch::channel(true);
        let mut metrics = Metrics::new();
        metrics.register_collectors(store, Some(up));
        metrics
    }

    /// The names in the `# TYPE` lines of the classic text: counters with
    /// their `_total`, as Prometheus stores them.
    fn family_names(text: &str) -> Vec<&str> {
        text.lines()
            .filter_map(|line| line.strip_prefix("# TYPE "))
            .filter_map(|rest| rest.split(' ').next())
            .collect()
    }

    /// Families read at scrape time rather than registered in `Metrics::new`.
    fn is_collected(name: &str) -> bool {
        name.starts_with("process_")
            || [
                "conclave_db_pool_connections",
                "conclave_db_pool_max_connections",
                "conclave_redis_up",
                "conclave_federation_peer_up",
            ]
            .contains(&name)
    }

    /// One sample in every family registered in `Metrics::new` (an empty
    /// family renders nothing, not even its `# TYPE` line).
    fn make_every_family_non_empty(metrics: &Metrics) {
        let grpc = GrpcMethodLabels {
            service: "conclave.client.v1.GroupService".to_owned(),
            method: "SendMessage".to_owned(),
        };
        metrics
            .grpc_requests
            .get_or_create(&GrpcCallLabels {
                service: grpc.service.clone(),
                method: grpc.method.clone(),
                code: "OK".to_owned(),
            })
            .inc();
        metrics
            .grpc_request_duration
            .get_or_create(&grpc)
            .observe(0.01);
        metrics.count_accepted(EventKind::Commit);
        metrics.commit_conflicts.inc();
        metrics.subscribe_streams.inc();
        metrics.delivery_lag.observe(0.01);
        let peer = PeerLabels {
            peer: "b.example".to_owned(),
        };
        metrics
            .federation_outbox_pending
            .get_or_create(&peer)
            .set(1);
        metrics
            .federation_outbox_oldest_age
            .get_or_create(&peer)
            .set(1.5);
        metrics
            .federation_requests
            .get_or_create(&FederationRequestLabels {
                peer: peer.peer.clone(),
                direction: "outbound",
                code: "OK".to_owned(),
            })
            .inc();
        metrics.federation_peer_up.record(&peer.peer, true);
        metrics
            .tls_certificate_expiry
            .get_or_create(&ListenerLabels {
                listener: "client_api",
            })
            .set(2_000_000_000);
        metrics
            .tls_certificate_loaded
            .get_or_create(&ListenerLabels {
                listener: "client_api",
            })
            .set(1_900_000_000);
        metrics.count_tls_reload_failure("client_api");
        metrics
            .peer_certificate_expiry
            .family()
            .get_or_create(&peer_certificates::PeerCertificateLabels {
                peer: peer.peer.clone(),
                role: "server",
            })
            .set(2_000_000_000);
        metrics.devices_low_on_key_packages.set(1);
        metrics.count_rejection(RateLimit::LoginBackoff);
    }

    #[tokio::test]
    async fn every_family_and_limit_is_documented() {
        let database = conclave_test_support::TestDatabase::create(
            conclave_test_support::DatabaseChoice::Sqlite,
        )
        .await;
        let metrics = metrics_with_collectors(&database).await;
        make_every_family_non_empty(&metrics);
        let text = metrics.render_as(Format::PrometheusText);
        let names = family_names(&text);
        // The registry does not list its families; its debug form shows one
        // descriptor per registered family. A family added to `Metrics::new`
        // must get a sample above, or it would escape this check.
        let registered = format!("{:?}", metrics.registry)
            .matches("Descriptor {")
            .count();
        let rendered = names.iter().filter(|name| !is_collected(name)).count();
        assert_eq!(
            rendered, registered,
            "a family registered in Metrics::new is empty here; give it a sample in make_every_family_non_empty:\n{text}"
        );
        for expected in [
            "conclave_db_pool_connections",
            "conclave_db_pool_max_connections",
            "conclave_redis_up",
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_virtual_memory_bytes",
            "process_open_fds",
            "process_max_fds",
            "process_start_time_seconds",
        ] {
            assert!(
                names.contains(&expected),
                "{expected} is not rendered:\n{text}"
            );
        }
        let documentation = include_str!("../../../docs/metrics.md");
        let undocumented: Vec<_> = names
            .iter()
            .filter(|name| !documentation.contains(&format!("`{name}`")))
            .collect();
        assert!(
            undocumented.is_empty(),
            "docs/metrics.md does not document {undocumented:?}"
        );
        for limit in RateLimit::ALL {
            let name = limit.name();
            assert!(
                documentation.contains(&format!("| `{name}` |")),
                "docs/metrics.md does not document the limit {name}"
            );
        }
    }

    /// Label names whose values come from fixed sets or the configuration
    /// (see `docs/metrics.md`); `le` is a histogram's bucket bound.
    const BOUNDED_LABELS: [&str; 12] = [
        "service",
        "method",
        "code",
        "kind",
        "peer",
        "direction",
        "listener",
        "limit",
        "version",
        "state",
        "role",
        "le",
    ];

    #[tokio::test]
    async fn every_label_is_one_of_the_bounded_ones() {
        let database = conclave_test_support::TestDatabase::create(
            conclave_test_support::DatabaseChoice::Sqlite,
        )
        .await;
        let metrics = metrics_with_collectors(&database).await;
        make_every_family_non_empty(&metrics);
        let text = metrics.render_as(Format::PrometheusText);
        let mut labelled_samples = 0;
        for line in text.lines().filter(|line| !line.starts_with('#')) {
            let Some((_, rest)) = line.split_once('{') else {
                continue;
            };
            let (labels, _) = rest.split_once('}').expect("a closed label set");
            labelled_samples += 1;
            for pair in labels.split(',') {
                let (name, _) = pair.split_once('=').expect("name=value");
                assert!(
                    BOUNDED_LABELS.contains(&name),
                    "the label {name:?} of {line:?} is not one of the bounded labels; \
                     a label must never carry an id or a value a request chooses"
                );
            }
        }
        assert!(labelled_samples > 10, "{text}");
    }

    #[tokio::test]
    async fn the_classic_text_names_counters_with_their_total() {
        let database = conclave_test_support::TestDatabase::create(
            conclave_test_support::DatabaseChoice::Sqlite,
        )
        .await;
        let metrics = metrics_with_collectors(&database).await;
        metrics.commit_conflicts.inc();
        metrics.count_rejection(RateLimit::KeyPackageClaims);
        let text = metrics.render_as(Format::PrometheusText);
        for line in [
            "# HELP conclave_commit_conflicts_total ",
            "# TYPE conclave_commit_conflicts_total counter",
            "conclave_commit_conflicts_total 1",
            "# TYPE conclave_ratelimit_rejections_total counter",
            "conclave_ratelimit_rejections_total{limit=\"key_package_claims\"} 1",
            "# TYPE conclave_delivery_lag_seconds histogram",
            "# TYPE conclave_redis_up gauge",
            "conclave_redis_up 1",
            "conclave_db_pool_max_connections 2",
            "# TYPE process_cpu_seconds_total counter",
        ] {
            assert!(text.contains(line), "{line:?} missing from:\n{text}");
        }
        for absent in [
            "# EOF",
            "# UNIT",
            "# TYPE conclave_commit_conflicts counter",
        ] {
            assert!(!text.contains(absent), "{absent:?} in:\n{text}");
        }
        let openmetrics = metrics.render_as(Format::OpenMetrics);
        assert!(openmetrics.contains("# TYPE conclave_commit_conflicts counter"));
        assert!(openmetrics.ends_with("# EOF\n"), "{openmetrics}");
    }

    #[tokio::test]
    async fn the_pool_is_read_at_each_scrape() {
        let database = conclave_test_support::TestDatabase::create(
            conclave_test_support::DatabaseChoice::Sqlite,
        )
        .await;
        let store = Store::connect(database.url(), 3).await.unwrap();
        store.migrate().await.unwrap();
        let mut metrics = Metrics::new();
        metrics.register_collectors(store.clone(), None);
        let sample = |series: &str| {
            let text = metrics.render_as(Format::PrometheusText);
            conclave_test_support::metrics::sample(&text, series)
                .unwrap_or_else(|| panic!("{series} missing from:\n{text}"))
        };
        let in_use_is = |expected: f64| {
            let sample = &sample;
            move || {
                let in_use = sample("conclave_db_pool_connections{state=\"in_use\"}");
                std::future::ready((in_use == expected).then_some(()))
            }
        };
        let within = std::time::Duration::from_secs(10);
        let transaction = store.begin().await.unwrap();
        // Connections the migration used come back to the pool on their own
        // time; the transaction's stays out.
        conclave_test_support::eventually(within, "one connection in use", in_use_is(1.0)).await;
        assert_eq!(sample("conclave_db_pool_max_connections"), 3.0);
        drop(transaction);
        conclave_test_support::eventually(within, "none in use", in_use_is(0.0)).await;
        let text = metrics.render_as(Format::PrometheusText);
        // Without `[redis]` there is no Redis to be up.
        assert!(!text.contains("conclave_redis_up"), "{text}");
    }
}
