//! `conclave_federation_peer_certificate_expiry_timestamp_seconds{peer,role}`:
//! when the certificates peer domains present expire, kept apart by role (a
//! peer's server certificate, seen when this server calls it, and its client
//! certificate, seen on its calls here, may be different certificates with
//! different lives).
//!
//! Every admitted inbound request shows the peer's client certificate, so the
//! last certificate seen per peer and role is remembered and only a new one is
//! parsed.

use super::certificates::not_after_unix_seconds;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Which certificate of the peer: the one it serves with or the one it calls
/// with.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub(crate) enum CertificateRole {
    /// Presented by the peer's federation listener to this server's calls.
    Server,
    /// Presented by the peer on its calls to this server.
    Client,
}

impl CertificateRole {
    fn as_label(self) -> &'static str {
        match self {
            CertificateRole::Server => "server",
            CertificateRole::Client => "client",
        }
    }
}

/// A configured peer domain and the role of its certificate.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct PeerCertificateLabels {
    pub(crate) peer: String,
    pub(crate) role: &'static str,
}

/// The gauge family and the certificate each of its series was read from.
#[derive(Clone, Debug, Default)]
pub(crate) struct PeerCertificates {
    expiry: Family<PeerCertificateLabels, Gauge>,
    /// The DER last read per series; a few kB per configured peer and role.
    last_read: Arc<Mutex<HashMap<PeerCertificateLabels, Vec<u8>>>>,
}

impl PeerCertificates {
    /// The family to register.
    pub(crate) fn family(&self) -> Family<PeerCertificateLabels, Gauge> {
        self.expiry.clone()
    }

    /// `peer` presented the DER certificate `certificate` (verified for its
    /// domain) in `role`. True if it differs from the last one seen for the
    /// peer and role, and was read.
    pub(crate) fn observe(&self, peer: &str, role: CertificateRole, certificate: &[u8]) -> bool {
        let labels = PeerCertificateLabels {
            peer: peer.to_owned(),
            role: role.as_label(),
        };
        let mut last_read = self
            .last_read
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if last_read
            .get(&labels)
            .is_some_and(|last| last.as_slice() == certificate)
        {
            return false;
        }
        // The handshake verified the certificate, so it parses; if this parser
        // still disagrees, the gauge keeps its last value rather than a wrong one.
        match not_after_unix_seconds(certificate) {
            Some(not_after) => {
                self.expiry.get_or_create(&labels).set(not_after);
            }
            None => {
                tracing::warn!(peer_domain = %peer, role = role.as_label(), "cannot read the expiry of the certificate a peer presented");
            }
        }
        last_read.insert(labels, certificate.to_vec());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate_expiring_in(year: i32) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(vec!["b.example".to_owned()]).unwrap();
        params.not_after = rcgen::date_time_ymd(year, 1, 1);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    fn expiry(certificates: &PeerCertificates, role: &'static str) -> Option<i64> {
        let labels = PeerCertificateLabels {
            peer: "b.example".to_owned(),
            role,
        };
        certificates.expiry.get(&labels).map(|gauge| gauge.get())
    }

    #[test]
    fn each_role_keeps_its_certificate_and_a_repeated_one_is_not_read_again() {
        let certificates = PeerCertificates::default();
        let server = certificate_expiring_in(2031);
        let client = certificate_expiring_in(2030);
        assert!(certificates.observe("b.example", CertificateRole::Server, &server));
        assert!(certificates.observe("b.example", CertificateRole::Client, &client));
        let server_expiry = expiry(&certificates, "server").unwrap();
        let client_expiry = expiry(&certificates, "client").unwrap();
        assert!(server_expiry > client_expiry + 300 * 86_400);
        // The same client certificate on the next request: nothing to read.
        assert!(!certificates.observe("b.example", CertificateRole::Client, &client));
        // A renewed one is read.
        let renewed = certificate_expiring_in(2032);
        assert!(certificates.observe("b.example", CertificateRole::Client, &renewed));
        assert!(expiry(&certificates, "client").unwrap() > server_expiry);
        assert_eq!(expiry(&certificates, "server"), Some(server_expiry));
    }
}
