// Until every metric is wired (this round, issue 12): the fields are in place
// for the use cases to count through.
#![allow(dead_code)]

//! The numbers an operator alerts on, served as OpenMetrics text on
//! `GET /metrics` (the HTTP listener) with `prometheus-client`.
//!
//! One [`Metrics`] per homeserver, with a registry of its own, so that several
//! homeservers in one process (tests, the benchmark) keep separate numbers.
//! Every metric is documented in `docs/metrics.md`; the names are fixed there
//! (dashboards and alert rules depend on them).
//!
//! No label ever carries a user, device or group id: the labels are the gRPC
//! service and method, status codes, message kinds, peer domains (a fixed,
//! configured set), listener and limit names.
//!
//! The use cases count through the fields here; values that are cheaper to
//! read than to count (pool connections, Redis reachability) are read when
//! Prometheus scrapes.

mod certificates;
mod federation;

use crate::store::EventKind;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;

/// The `Content-Type` of [`Metrics::render`]'s text.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

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

/// What kind of message the hub accepted: `application`, `commit` or `proposal`.
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
    /// `conclave_delivery_lag_seconds`: from a message's acceptance to its
    /// being written to a Subscribe stream.
    pub(crate) delivery_lag: Histogram,
    /// `conclave_federation_outbox_pending{peer}`: events of groups hosted here
    /// the peer has not confirmed.
    pub(crate) federation_outbox_pending: Family<PeerLabels, Gauge>,
    /// `conclave_federation_outbox_oldest_age_seconds{peer}`: the age of the
    /// oldest of them (0 when none).
    pub(crate) federation_outbox_oldest_age: Family<PeerLabels, Gauge<f64, AtomicU64>>,
    /// `conclave_federation_requests_total{peer,direction,code}`.
    pub(crate) federation_requests: Family<FederationRequestLabels, Counter>,
    /// `conclave_federation_peer_up{peer}`: 1 when the last call to the peer
    /// succeeded, 0 when it failed to reach it.
    pub(crate) federation_peer_up: Family<PeerLabels, Gauge>,
    /// `conclave_tls_certificate_expiry_timestamp_seconds{listener}`: when this
    /// server's own certificates expire (Unix time).
    pub(crate) tls_certificate_expiry: Family<ListenerLabels, Gauge>,
    /// `conclave_federation_peer_certificate_expiry_timestamp_seconds{peer}`:
    /// when the certificate a peer last presented expires (Unix time).
    pub(crate) peer_certificate_expiry: Family<PeerLabels, Gauge>,
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
            "From a message's acceptance to its being written to a Subscribe stream",
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
        let federation_peer_up = Family::<PeerLabels, Gauge>::default();
        registry.register(
            "conclave_federation_peer_up",
            "1 when the last call to the peer domain reached it, 0 when it did not",
            federation_peer_up.clone(),
        );
        let tls_certificate_expiry = Family::<ListenerLabels, Gauge>::default();
        registry.register(
            "conclave_tls_certificate_expiry_timestamp_seconds",
            "When this server's own TLS certificate expires (Unix time), per listener",
            tls_certificate_expiry.clone(),
        );
        let peer_certificate_expiry = Family::<PeerLabels, Gauge>::default();
        registry.register(
            "conclave_federation_peer_certificate_expiry_timestamp_seconds",
            "When the TLS certificate a peer domain last presented expires (Unix time)",
            peer_certificate_expiry.clone(),
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
            peer_certificate_expiry,
            devices_low_on_key_packages,
            ratelimit_rejections,
        }
    }

    /// The registry, to add collectors read at scrape time (before the server
    /// starts serving; the registry is not shared until then).
    pub(crate) fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// One more message of `kind` appended to a group's log (after its
    /// transaction committed; a retried submission answered from its first
    /// result is not counted again).
    pub(crate) fn count_accepted(&self, kind: EventKind) {
        let kind = match kind {
            EventKind::Application => "application",
            EventKind::Commit => "commit",
            EventKind::Proposal => "proposal",
        };
        self.messages_accepted
            .get_or_create(&MessageKindLabels { kind })
            .inc();
    }

    /// Every metric as OpenMetrics text ([`CONTENT_TYPE`]).
    pub(crate) fn render(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail; a collector that fails is a bug,
        // and its metric is cut off rather than the whole page lost.
        if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
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
}
