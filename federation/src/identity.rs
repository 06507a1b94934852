//! Who a calling peer is: the rules that turn the client certificate of a TLS
//! connection into a domain this homeserver trusts for one request. Pure: no I/O,
//! no clock.
//!
//! The TLS handshake has already verified the certificate chain up to a
//! configured trust root, that the certificate is valid now and allowed for
//! client authentication, and that the peer holds its private key (rustls's
//! `WebPkiClientVerifier`). What is left is the name: every federation request
//! names the domain it is made for, and [`check_peer_certificate`] accepts it only
//! if the certificate is valid for that DNS name (rustls-webpki's
//! `verify_is_valid_for_subject_name`, which reads the SAN dNSNames and never the
//! subject's common name; a wildcard such as `*.corp.example` counts for each name
//! it covers, because the CA vouched for all of them), the domain is a configured
//! peer, and the certificate is the pinned one if the peer is pinned.
//!
//! Checking the claimed name, rather than extracting "the" name from the
//! certificate, keeps certificates with several names usable and needs no X.509
//! parsing of our own.

use crate::peers::{CertificatePin, PeerRegistry};
use conclave_core::ids::Domain;
use rustls_pki_types::{CertificateDer, DnsName, ServerName};

/// Why a peer's request was refused before it reached any use case. Messages name
/// the domain and what was wrong; they are safe to send back to the peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerRefusal {
    /// The connection carries no client certificate (cannot happen through the
    /// federation listener, which requires one during the handshake).
    #[error("no client certificate was presented: the federation API requires mutual TLS")]
    NoClientCertificate,
    /// The client certificate cannot be parsed.
    #[error("the client certificate cannot be parsed: {reason}")]
    UnreadableCertificate { reason: String },
    /// The certificate is not valid for the domain the request is made for.
    #[error(
        "the client certificate is valid for {presented:?}, not for {domain}, the domain this request is made for"
    )]
    NotValidForDomain {
        domain: Domain,
        /// The DNS names the certificate presents (for the message only).
        presented: Vec<String>,
    },
    /// The domain is not a configured peer.
    #[error("{domain} is not a federation peer of this homeserver")]
    UnknownPeer { domain: Domain },
    /// The peer is pinned to another certificate.
    #[error("the client certificate (SHA-256 {presented}) is not the one pinned for {domain}")]
    PinMismatch {
        domain: Domain,
        presented: CertificatePin,
    },
    /// The peer exceeded its request rate.
    #[error("{domain} sent more than {per_minute} federation requests per minute; retry later")]
    RateLimited { domain: Domain, per_minute: u32 },
}

impl PeerRefusal {
    /// The domain the refused request was made for, if it got that far.
    pub fn domain(&self) -> Option<&Domain> {
        match self {
            PeerRefusal::NoClientCertificate | PeerRefusal::UnreadableCertificate { .. } => None,
            PeerRefusal::NotValidForDomain { domain, .. }
            | PeerRefusal::UnknownPeer { domain }
            | PeerRefusal::PinMismatch { domain, .. }
            | PeerRefusal::RateLimited { domain, .. } => Some(domain),
        }
    }
}

/// Accepts a request made for `claimed` over a connection whose client presented
/// `chain` (end-entity certificate first, as rustls reports it), or says why not.
pub fn check_peer_certificate(
    chain: Option<&[CertificateDer<'_>]>,
    claimed: &Domain,
    registry: &PeerRegistry,
) -> Result<(), PeerRefusal> {
    let end_entity = chain
        .and_then(<[_]>::first)
        .ok_or(PeerRefusal::NoClientCertificate)?;
    let valid =
        is_valid_for(end_entity, claimed).map_err(|reason| PeerRefusal::UnreadableCertificate {
            reason: reason.to_string(),
        })?;
    if !valid {
        return Err(PeerRefusal::NotValidForDomain {
            domain: claimed.clone(),
            presented: presented_dns_names(end_entity),
        });
    }
    let peer = registry
        .get(claimed)
        .map_err(|_| PeerRefusal::UnknownPeer {
            domain: claimed.clone(),
        })?;
    if let Some(pin) = &peer.pin
        && !pin.matches(end_entity)
    {
        return Err(PeerRefusal::PinMismatch {
            domain: claimed.clone(),
            presented: CertificatePin::of(end_entity),
        });
    }
    Ok(())
}

/// True if the certificate is valid for `domain` as a DNS name (SAN dNSName,
/// wildcards included); an error if the certificate cannot be parsed.
pub fn is_valid_for(
    certificate: &CertificateDer<'_>,
    domain: &Domain,
) -> Result<bool, webpki::Error> {
    let end_entity = webpki::EndEntityCert::try_from(certificate)?;
    // `Domain` is a lowercase DNS name, so this conversion only fails for names
    // webpki does not support; such a name is not one the certificate is valid for.
    let Ok(dns_name) = DnsName::try_from(domain.as_str()) else {
        return Ok(false);
    };
    Ok(end_entity
        .verify_is_valid_for_subject_name(&ServerName::DnsName(dns_name))
        .is_ok())
}

/// The DNS names a certificate presents, for log and error messages only: never
/// use them to decide anything ([`is_valid_for`] does that).
pub fn presented_dns_names(certificate: &CertificateDer<'_>) -> Vec<String> {
    webpki::EndEntityCert::try_from(certificate)
        .map(|end_entity| end_entity.valid_dns_names().map(str::to_owned).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peers::PeerSettings;

    fn domain(name: &str) -> Domain {
        name.parse().unwrap()
    }

    /// A self-signed certificate for `names`: the chain is not this module's
    /// business (the handshake checks it), only the names are.
    fn certificate(names: &[&str]) -> CertificateDer<'static> {
        let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
        rcgen::generate_simple_self_signed(names)
            .unwrap()
            .cert
            .der()
            .clone()
    }

    fn registry(pin: Option<&str>) -> PeerRegistry {
        let peer = |name| PeerSettings {
            domain: name,
            endpoint: "https://127.0.0.1:7401",
            pinned_sha256: None,
        };
        PeerRegistry::new(
            domain("a.example"),
            [
                PeerSettings {
                    pinned_sha256: pin,
                    ..peer("b.example")
                },
                peer("c.example"),
                peer("x.corp.example"),
            ],
        )
        .unwrap()
    }

    fn check(
        chain: Option<&[CertificateDer<'_>]>,
        claimed: &str,
        registry: &PeerRegistry,
    ) -> Result<(), String> {
        check_peer_certificate(chain, &domain(claimed), registry).map_err(|refusal| {
            assert!(
                refusal
                    .domain()
                    .is_none_or(|refused| refused.as_str() == claimed),
                "{refusal:?} names another domain than {claimed}"
            );
            refusal.to_string()
        })
    }

    #[test]
    fn the_certificate_must_be_valid_for_the_claimed_domain() {
        let registry = registry(None);
        let b = certificate(&["b.example"]);
        let c = certificate(&["c.example", "127.0.0.3"]);
        let wildcard = certificate(&["*.corp.example"]);
        let chain = |certificate: &CertificateDer<'static>| vec![certificate.clone()];
        for (case, chain, claimed, expected) in [
            ("b as b", Some(chain(&b)), "b.example", Ok(())),
            ("c as c", Some(chain(&c)), "c.example", Ok(())),
            (
                "c as b",
                Some(chain(&c)),
                "b.example",
                Err(
                    r#"the client certificate is valid for ["c.example"], not for b.example, the domain this request is made for"#,
                ),
            ),
            (
                "b as a subdomain",
                Some(chain(&b)),
                "x.b.example",
                Err("not for x.b.example"),
            ),
            ("wildcard", Some(chain(&wildcard)), "x.corp.example", Ok(())),
            (
                "wildcard, two labels deep",
                Some(chain(&wildcard)),
                "y.x.corp.example",
                Err("not for y.x.corp.example"),
            ),
            (
                "d, valid for d but not a peer",
                Some(chain(&certificate(&["d.example"]))),
                "d.example",
                Err("d.example is not a federation peer of this homeserver"),
            ),
            (
                "no certificate",
                None,
                "b.example",
                Err("no client certificate"),
            ),
            (
                "empty chain",
                Some(vec![]),
                "b.example",
                Err("no client certificate"),
            ),
            (
                "garbage",
                Some(vec![CertificateDer::from(vec![1, 2, 3])]),
                "b.example",
                Err("cannot be parsed"),
            ),
        ] {
            let result = check(chain.as_deref(), claimed, &registry);
            match (result, expected) {
                (Ok(()), Ok(())) => {}
                (Err(message), Err(fragment)) => assert!(
                    message.contains(fragment),
                    "{case}: {message:?} does not mention {fragment:?}"
                ),
                (result, expected) => panic!("{case}: got {result:?}, expected {expected:?}"),
            }
        }
    }

    #[test]
    fn a_pinned_peer_must_present_the_pinned_certificate() {
        let pinned = certificate(&["b.example"]);
        let other = certificate(&["b.example"]);
        let pin = CertificatePin::of(&pinned).to_string();
        let registry = registry(Some(&pin));
        assert_eq!(check(Some(&[pinned]), "b.example", &registry), Ok(()));
        let refused =
            check(Some(std::slice::from_ref(&other)), "b.example", &registry).unwrap_err();
        assert_eq!(
            refused,
            format!(
                "the client certificate (SHA-256 {}) is not the one pinned for b.example",
                CertificatePin::of(&other)
            )
        );
        // Pins are per peer: c is not pinned.
        let c = certificate(&["c.example"]);
        assert_eq!(check(Some(&[c]), "c.example", &registry), Ok(()));
    }

    #[test]
    fn names_are_reported_but_not_trusted() {
        let certificate = certificate(&["b.example", "c.example", "127.0.0.1"]);
        assert_eq!(
            presented_dns_names(&certificate),
            ["b.example", "c.example"]
        );
        assert!(presented_dns_names(&CertificateDer::from(vec![0u8; 4])).is_empty());
    }
}
