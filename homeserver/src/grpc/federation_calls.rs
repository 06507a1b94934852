//! The federation client's observer: each call this server makes to a peer,
//! and each certificate a peer presents to it, into the metrics
//! (`conclave_federation_requests_total{direction="outbound"}`,
//! `conclave_federation_peer_up`, the peer certificate's expiry). Here
//! because the outcome is a gRPC code, and only `grpc/` knows tonic.

use super::metrics_layer::code_name;
use crate::metrics::{CertificateRole, FederationCallCounters};
use conclave_core::ids::Domain;
use conclave_federation::observer::{CallObserver, CallOutcome};
use rustls_pki_types::CertificateDer;

/// Counts the federation client's calls.
pub(crate) struct FederationCallObserver {
    counters: FederationCallCounters,
}

impl FederationCallObserver {
    pub(crate) fn new(counters: FederationCallCounters) -> FederationCallObserver {
        FederationCallObserver { counters }
    }
}

impl CallObserver for FederationCallObserver {
    fn call_ended(&self, peer: &Domain, _rpc: &'static str, outcome: CallOutcome) {
        self.counters
            .count_outbound(peer, code_name(outcome.code), outcome.reached);
    }

    fn peer_certificate(&self, peer: &Domain, certificate: &CertificateDer<'_>) {
        // The client sees the certificate the peer's listener serves with.
        self.counters
            .observe_peer_certificate(peer, CertificateRole::Server, certificate);
    }
}
