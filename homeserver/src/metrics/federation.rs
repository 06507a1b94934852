//! The federation metrics: calls to and from each peer domain, whether the
//! peer answered the last call, the certificates peers present, and each
//! peer's outbox backlog.
//!
//! Peers are labelled by configured domain only: outbound calls go to
//! configured peers, and an inbound call is labelled with its peer only once
//! the gate admitted it (certificate valid for a configured peer's domain);
//! calls from a caller not identified so are counted as `peer="unknown"`.

use super::certificates::not_after_unix_seconds;
use super::{FederationRequestLabels, Metrics, PeerLabels};
use conclave_core::ids::Domain;
use conclave_federation::observer::{CallObserver, CallOutcome};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use rustls_pki_types::CertificateDer;
use std::sync::Arc;
use tonic::Code;

/// The `peer` label of inbound calls whose caller was not admitted as a
/// configured peer (no certificate, a malformed or foreign domain).
pub(crate) const UNKNOWN_PEER: &str = "unknown";

/// The name gRPC gives `code` (`OK`, `DEADLINE_EXCEEDED`, ...), the value of
/// every `code` label.
pub(crate) fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

fn peer_labels(peer: &str) -> PeerLabels {
    PeerLabels {
        peer: peer.to_owned(),
    }
}

/// The families the federation client reports to (clones share the series
/// with the registry's).
struct OutboundCallMetrics {
    federation_requests: Family<FederationRequestLabels, Counter>,
    federation_peer_up: Family<PeerLabels, Gauge>,
    peer_certificate_expiry: Family<PeerLabels, Gauge>,
}

impl CallObserver for OutboundCallMetrics {
    fn call_ended(&self, peer: &Domain, _rpc: &'static str, outcome: CallOutcome) {
        self.federation_requests
            .get_or_create(&FederationRequestLabels {
                peer: peer.to_string(),
                direction: "outbound",
                code: code_name(outcome.code).to_owned(),
            })
            .inc();
        self.federation_peer_up
            .get_or_create(&peer_labels(peer.as_str()))
            .set(i64::from(outcome.reached));
    }

    fn peer_certificate(&self, peer: &Domain, certificate: &CertificateDer<'_>) {
        set_peer_certificate_expiry(&self.peer_certificate_expiry, peer, certificate);
    }
}

fn set_peer_certificate_expiry(
    family: &Family<PeerLabels, Gauge>,
    peer: &Domain,
    certificate: &CertificateDer<'_>,
) {
    // The handshake verified the certificate, so it parses; if this parser
    // still disagrees, the gauge keeps its last value rather than a wrong one.
    match not_after_unix_seconds(certificate) {
        Some(not_after) => {
            family
                .get_or_create(&peer_labels(peer.as_str()))
                .set(not_after);
        }
        None => {
            tracing::warn!(peer_domain = %peer, "cannot read the expiry of the certificate a peer presented")
        }
    }
}

impl Metrics {
    /// The observer to build the federation client with: counts each outbound
    /// call, and sets the peer's `up` and certificate expiry.
    ///
    /// `conclave_federation_peer_up{peer}` has no series for a peer until the
    /// first call to it: before that, nothing is known (a 0 would page at every
    /// start).
    pub(crate) fn federation_call_observer(&self) -> Arc<dyn CallObserver> {
        Arc::new(OutboundCallMetrics {
            federation_requests: self.federation_requests.clone(),
            federation_peer_up: self.federation_peer_up.clone(),
            peer_certificate_expiry: self.peer_certificate_expiry.clone(),
        })
    }

    /// Counts a call a peer made to this server's federation API: `peer` is
    /// the domain the gate admitted it for, `None` if it was not admitted as a
    /// configured peer (counted as [`UNKNOWN_PEER`]).
    pub(crate) fn count_inbound_federation_call(&self, peer: Option<&Domain>, code: Code) {
        self.federation_requests
            .get_or_create(&FederationRequestLabels {
                peer: peer.map_or(UNKNOWN_PEER.to_owned(), Domain::to_string),
                direction: "inbound",
                code: code_name(code).to_owned(),
            })
            .inc();
    }

    /// `peer`, admitted by the gate, presented `certificate` (its end-entity
    /// certificate) on a connection to this server.
    pub(crate) fn observe_peer_certificate(&self, peer: &Domain, certificate: &CertificateDer<'_>) {
        set_peer_certificate_expiry(&self.peer_certificate_expiry, peer, certificate);
    }

    /// Every configured peer gets its outbox series at once, at 0 until the
    /// first refresh from the database.
    pub(crate) fn start_federation_peers<'a>(&self, peers: impl IntoIterator<Item = &'a Domain>) {
        for peer in peers {
            self.set_outbox_backlog(peer, 0, 0.0);
        }
    }

    /// The peer's outbox now: `pending` events it has not confirmed, the
    /// oldest of them `oldest_age_seconds` old (0 when none).
    pub(crate) fn set_outbox_backlog(&self, peer: &Domain, pending: u64, oldest_age_seconds: f64) {
        let labels = peer_labels(peer.as_str());
        self.federation_outbox_pending
            .get_or_create(&labels)
            .set(i64::try_from(pending).unwrap_or(i64::MAX));
        self.federation_outbox_oldest_age
            .get_or_create(&labels)
            .set(oldest_age_seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_have_their_grpc_names() {
        for (code, name) in [
            (Code::Ok, "OK"),
            (Code::Cancelled, "CANCELLED"),
            (Code::DeadlineExceeded, "DEADLINE_EXCEEDED"),
            (Code::InvalidArgument, "INVALID_ARGUMENT"),
            (Code::FailedPrecondition, "FAILED_PRECONDITION"),
            (Code::PermissionDenied, "PERMISSION_DENIED"),
            (Code::ResourceExhausted, "RESOURCE_EXHAUSTED"),
            (Code::Unavailable, "UNAVAILABLE"),
            (Code::Unauthenticated, "UNAUTHENTICATED"),
        ] {
            assert_eq!(code_name(code), name, "{code:?}");
        }
        // Every code's name is its enum name in SCREAMING_SNAKE_CASE, as
        // grpc's status.proto spells it.
        for number in 0..=16 {
            let code = Code::from_i32(number);
            let expected: String = format!("{code:?}")
                .chars()
                .enumerate()
                .flat_map(|(index, letter)| {
                    let separator = (index > 0 && letter.is_uppercase()).then_some('_');
                    separator.into_iter().chain(letter.to_uppercase())
                })
                .collect();
            assert_eq!(code_name(code), expected);
        }
    }

    #[test]
    fn an_outbound_call_sets_the_peer_up_by_whether_it_was_reached() {
        let metrics = Metrics::new();
        let observer = metrics.federation_call_observer();
        let peer: Domain = "b.example".parse().unwrap();
        observer.call_ended(&peer, "DeliverEvents", CallOutcome::OK);
        let text = metrics.render();
        assert!(
            text.contains("conclave_federation_peer_up{peer=\"b.example\"} 1"),
            "{text}"
        );
        assert!(text.contains(
            "conclave_federation_requests_total{peer=\"b.example\",direction=\"outbound\",code=\"OK\"} 1"
        ));
        observer.call_ended(
            &peer,
            "DeliverEvents",
            CallOutcome {
                code: Code::Unavailable,
                reached: false,
            },
        );
        metrics.count_inbound_federation_call(None, Code::Unauthenticated);
        let text = metrics.render();
        assert!(
            text.contains("conclave_federation_peer_up{peer=\"b.example\"} 0"),
            "{text}"
        );
        assert!(text.contains(
            "conclave_federation_requests_total{peer=\"b.example\",direction=\"outbound\",code=\"UNAVAILABLE\"} 1"
        ));
        assert!(text.contains(
            "conclave_federation_requests_total{peer=\"unknown\",direction=\"inbound\",code=\"UNAUTHENTICATED\"} 1"
        ));
    }
}
