//! The federation metrics: calls to and from each peer domain, whether the
//! peer answered the last call, the certificates peers present, and each
//! peer's outbox backlog.
//!
//! Peers are labelled by configured domain only: outbound calls go to
//! configured peers, and an inbound call is labelled with its peer only once
//! the gate admitted it (certificate valid for a configured peer's domain);
//! calls from a caller not identified so are counted as [`UNKNOWN_PEER`].

use super::peer_certificates::{CertificateRole, PeerCertificates};
use super::peer_reachability::PeerReachability;
use super::{FederationRequestLabels, Metrics, PeerLabels};
use conclave_core::ids::Domain;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

/// The `peer` label of inbound calls whose caller was not admitted as a
/// configured peer (no certificate, a malformed request, a domain its
/// certificate is not valid for or that is no peer).
pub(crate) const UNKNOWN_PEER: &str = "unknown";

fn peer_labels(peer: &str) -> PeerLabels {
    PeerLabels {
        peer: peer.to_owned(),
    }
}

/// What the federation client's observer (`grpc::federation_calls`) counts
/// through: clones of the registry's families, so the client can hold them
/// without sharing the [`Metrics`] themselves (whose registry still takes its
/// collectors after the client is made).
#[derive(Clone)]
pub(crate) struct FederationCallCounters {
    federation_requests: Family<FederationRequestLabels, Counter>,
    federation_peer_up: PeerReachability,
    peer_certificate_expiry: PeerCertificates,
}

impl FederationCallCounters {
    /// An outbound call to `peer` ended with the gRPC code named `code`;
    /// `reached` if the peer produced the answer.
    ///
    /// `conclave_federation_peer_up{peer}` has no series for a peer until the
    /// first call to it: before that, nothing is known (a 0 would page at every
    /// start).
    pub(crate) fn count_outbound(&self, peer: &Domain, code: &'static str, reached: bool) {
        self.federation_requests
            .get_or_create(&FederationRequestLabels {
                peer: peer.to_string(),
                direction: "outbound",
                code: code.to_owned(),
            })
            .inc();
        self.federation_peer_up.record(peer.as_str(), reached);
    }

    /// `peer` presented the DER certificate `certificate` (verified for its
    /// domain) in `role`: its server certificate when this server called it,
    /// its client certificate on its call here.
    pub(crate) fn observe_peer_certificate(
        &self,
        peer: &Domain,
        role: CertificateRole,
        certificate: &[u8],
    ) {
        self.peer_certificate_expiry
            .observe(peer.as_str(), role, certificate);
    }
}

impl Metrics {
    /// Show each peer's `conclave_federation_peer_up` for `freshness` after
    /// the call that set it.
    pub(crate) fn set_peer_up_freshness(&self, freshness: std::time::Duration) {
        self.federation_peer_up.set_freshness(freshness);
    }

    /// The counters of calls to peers and of their certificates.
    pub(crate) fn federation_call_counters(&self) -> FederationCallCounters {
        FederationCallCounters {
            federation_requests: self.federation_requests.clone(),
            federation_peer_up: self.federation_peer_up.clone(),
            peer_certificate_expiry: self.peer_certificate_expiry.clone(),
        }
    }

    /// Counts a call a peer made to this server's federation API, answered
    /// with the gRPC code named `code`: `peer` is the domain the gate admitted
    /// it for, `None` if it was not admitted as a configured peer (counted as
    /// [`UNKNOWN_PEER`]).
    pub(crate) fn count_inbound_federation_call(&self, peer: Option<&Domain>, code: &'static str) {
        self.federation_requests
            .get_or_create(&FederationRequestLabels {
                peer: peer.map_or(UNKNOWN_PEER.to_owned(), Domain::to_string),
                direction: "inbound",
                code: code.to_owned(),
            })
            .inc();
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
    pub(crate) fn set_outbox_backlog(&self, peer: &Domain, pending: i64, oldest_age_seconds: f64) {
        let labels = peer_labels(peer.as_str());
        self.federation_outbox_pending
            .get_or_create(&labels)
            .set(pending);
        self.federation_outbox_oldest_age
            .get_or_create(&labels)
            .set(oldest_age_seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outbound_call_sets_the_peer_up_by_whether_it_was_reached() {
        let metrics = Metrics::new();
        let counters = metrics.federation_call_counters();
        let peer: Domain = "b.example".parse().unwrap();
        counters.count_outbound(&peer, "OK", true);
        let text = metrics.render();
        assert!(
            text.contains("conclave_federation_peer_up{peer=\"b.example\"} 1"),
            "{text}"
        );
        assert!(text.contains(
            "conclave_federation_requests_total{peer=\"b.example\",direction=\"outbound\",code=\"OK\"} 1"
        ));
        counters.count_outbound(&peer, "UNAVAILABLE", false);
        metrics.count_inbound_federation_call(None, "UNAUTHENTICATED");
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
