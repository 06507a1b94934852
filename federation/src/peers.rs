//! The peer registry: the domains this homeserver federates with, where each one's
//! federation API listens, and optionally the one certificate it must present.
//! Built once from configuration; no I/O. Peers are configured, never discovered
//! (yet): a domain that is not in the registry is refused in both directions.

use conclave_core::ids::{Domain, IdError};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// The SHA-256 digest of a certificate's DER encoding. Pinning a peer to it means
/// that, on top of chaining to a trust root and naming the peer's domain, the
/// certificate must be exactly this one (so a mis-issued certificate for the
/// domain, even from a trusted CA, is refused).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CertificatePin([u8; 32]);

impl CertificatePin {
    /// The pin of a DER-encoded certificate.
    pub fn of(certificate_der: &[u8]) -> CertificatePin {
        CertificatePin(Sha256::digest(certificate_der).into())
    }

    /// True if `certificate_der` is the pinned certificate.
    pub fn matches(&self, certificate_der: &[u8]) -> bool {
        *self == CertificatePin::of(certificate_der)
    }
}

/// Why a configured pin was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a SHA-256 digest: expected 64 hex digits, optionally separated by ':' (as `openssl x509 -noout -fingerprint -sha256` prints them)"
)]
pub struct InvalidPin(String);

impl FromStr for CertificatePin {
    type Err = InvalidPin;

    /// 64 hex digits in either case, optionally separated by `:`.
    fn from_str(input: &str) -> Result<Self, InvalidPin> {
        let digits: String = input.chars().filter(|c| *c != ':').collect();
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(&digits, &mut bytes).map_err(|_| InvalidPin(input.to_owned()))?;
        Ok(CertificatePin(bytes))
    }
}

/// Lowercase hex without separators, the form this crate prints and accepts.
impl fmt::Display for CertificatePin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for CertificatePin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CertificatePin({self})")
    }
}

/// Where a peer's federation API listens: an `https://HOST[:PORT]` URL. The host
/// is only where to connect; the peer is authenticated by its domain, whatever
/// address it is reached at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerEndpoint {
    uri: http::Uri,
    /// The host to connect to, without the brackets of an IPv6 literal.
    host: String,
    port: u16,
}

impl PeerEndpoint {
    /// The URL as configured (normalised by `http::Uri`).
    pub fn uri(&self) -> &http::Uri {
        &self.uri
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

impl fmt::Display for PeerEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.uri)
    }
}

/// Port of an `https://` URL that names none.
const HTTPS_DEFAULT_PORT: u16 = 443;

impl FromStr for PeerEndpoint {
    type Err = String;

    /// Accepts `https://HOST[:PORT]` with nothing after the authority (a trailing
    /// `/` is allowed). Plain `http://` is refused: federation is mutual TLS only.
    fn from_str(input: &str) -> Result<Self, String> {
        let uri: http::Uri = input
            .parse()
            .map_err(|error| format!("{input:?} is not a URL: {error}"))?;
        if uri.scheme_str() != Some("https") {
            return Err(format!(
                "{input:?} must be an https:// URL: federation runs over mutual TLS only"
            ));
        }
        let Some(authority) = uri.authority() else {
            return Err(format!("{input:?} names no host"));
        };
        if authority.as_str().contains('@') {
            return Err(format!("{input:?} must not carry user information"));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(format!(
                "{input:?} must be just https://HOST[:PORT], without a path or query"
            ));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if host.is_empty() {
            return Err(format!("{input:?} names no host"));
        }
        let port = authority.port_u16().unwrap_or(HTTPS_DEFAULT_PORT);
        Ok(PeerEndpoint { uri, host, port })
    }
}

/// A homeserver this one federates with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub domain: Domain,
    pub endpoint: PeerEndpoint,
    /// If set, the peer's certificate (as server and as client) must be exactly
    /// this one.
    pub pin: Option<CertificatePin>,
}

/// One `[federation.peers."DOMAIN"]` entry as written in the configuration.
#[derive(Debug, Clone, Copy)]
pub struct PeerSettings<'a> {
    pub domain: &'a str,
    pub endpoint: &'a str,
    pub pinned_sha256: Option<&'a str>,
}

/// Why the configured peers cannot be used. Each message names the peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// The peer's key is not a valid domain.
    #[error("peer {domain:?}: {error}")]
    InvalidDomain { domain: String, error: IdError },
    /// The homeserver listed its own domain as a peer.
    #[error("peer {domain:?} is this homeserver's own domain")]
    OwnDomain { domain: String },
    /// The endpoint is not an `https://HOST[:PORT]` URL.
    #[error("peer {domain:?}: endpoint {reason}")]
    InvalidEndpoint { domain: String, reason: String },
    /// The pin is not a SHA-256 digest.
    #[error("peer {domain:?}: pinned_sha256 {error}")]
    InvalidPin { domain: String, error: InvalidPin },
}

/// The domain is not a configured peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("domain {0} is not a federation peer of this homeserver")]
pub struct UnknownPeer(pub Domain);

/// The configured peers, by domain.
#[derive(Debug, Clone)]
pub struct PeerRegistry {
    own_domain: Domain,
    peers: BTreeMap<Domain, Peer>,
}

impl PeerRegistry {
    /// Checks every entry: a valid domain other than `own_domain`, an `https://`
    /// endpoint, a well-formed pin.
    pub fn new<'a>(
        own_domain: Domain,
        settings: impl IntoIterator<Item = PeerSettings<'a>>,
    ) -> Result<PeerRegistry, RegistryError> {
        let mut peers = BTreeMap::new();
        for entry in settings {
            let domain: Domain =
                entry
                    .domain
                    .parse()
                    .map_err(|error| RegistryError::InvalidDomain {
                        domain: entry.domain.to_owned(),
                        error,
                    })?;
            if domain == own_domain {
                return Err(RegistryError::OwnDomain {
                    domain: entry.domain.to_owned(),
                });
            }
            let endpoint =
                entry
                    .endpoint
                    .parse()
                    .map_err(|reason| RegistryError::InvalidEndpoint {
                        domain: entry.domain.to_owned(),
                        reason,
                    })?;
            let pin = entry
                .pinned_sha256
                .map(str::parse)
                .transpose()
                .map_err(|error| RegistryError::InvalidPin {
                    domain: entry.domain.to_owned(),
                    error,
                })?;
            peers.insert(
                domain.clone(),
                Peer {
                    domain,
                    endpoint,
                    pin,
                },
            );
        }
        Ok(PeerRegistry { own_domain, peers })
    }

    /// The domain this homeserver speaks for.
    pub fn own_domain(&self) -> &Domain {
        &self.own_domain
    }

    /// The peer for `domain`, or [`UnknownPeer`].
    pub fn get(&self, domain: &Domain) -> Result<&Peer, UnknownPeer> {
        self.peers
            .get(domain)
            .ok_or_else(|| UnknownPeer(domain.clone()))
    }

    /// Every peer, ordered by domain.
    pub fn iter(&self) -> impl Iterator<Item = &Peer> {
        self.peers.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domain(name: &str) -> Domain {
        name.parse().unwrap()
    }

    fn check(settings: PeerSettings<'_>, expected_error: Option<&str>) {
        let result = PeerRegistry::new(domain("a.example"), [settings]);
        match (result, expected_error) {
            (Ok(_), None) => {}
            (Ok(_), Some(expected)) => panic!("{settings:?} was accepted, expected {expected:?}"),
            (Err(error), None) => panic!("{settings:?} was refused: {error}"),
            (Err(error), Some(expected)) => assert!(
                error.to_string().contains(expected),
                "{settings:?} gave {error}, expected it to mention {expected:?}"
            ),
        }
    }

    const PIN: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    #[test]
    fn peer_settings_are_validated() {
        let peer = |domain, endpoint, pinned_sha256| PeerSettings {
            domain,
            endpoint,
            pinned_sha256,
        };
        for (settings, error) in [
            (peer("b.example", "https://127.0.0.2:7401", None), None),
            (peer("b.example", "https://b.example", None), None),
            (peer("b.example", "https://[::1]:7401/", Some(PIN)), None),
            (peer("B.example", "https://b.example", None), Some("domain")),
            (
                peer("a.example", "https://a.example", None),
                Some("own domain"),
            ),
            (
                peer("b.example", "http://b.example:7401", None),
                Some("must be an https:// URL"),
            ),
            (
                peer("b.example", "b.example:7401", None),
                Some("must be an https:// URL"),
            ),
            (
                peer("b.example", "https://b.example:7401/api", None),
                Some("without a path"),
            ),
            (
                peer("b.example", "https://user@b.example", None),
                Some("user information"),
            ),
            (peer("b.example", "not a url", None), Some("is not a URL")),
            (
                peer("b.example", "https://b.example", Some("abc")),
                Some("pinned_sha256"),
            ),
        ] {
            check(settings, error);
        }
    }

    #[test]
    fn endpoints_give_host_and_port() {
        let endpoint: PeerEndpoint = "https://127.0.0.2:7401".parse().unwrap();
        assert_eq!((endpoint.host(), endpoint.port()), ("127.0.0.2", 7401));
        let endpoint: PeerEndpoint = "https://b.example".parse().unwrap();
        assert_eq!((endpoint.host(), endpoint.port()), ("b.example", 443));
        let endpoint: PeerEndpoint = "https://[::1]:7401".parse().unwrap();
        assert_eq!((endpoint.host(), endpoint.port()), ("::1", 7401));
    }

    #[test]
    fn pins_parse_in_the_usual_notations() {
        let plain: CertificatePin = PIN.parse().unwrap();
        let upper_with_colons: String = PIN
            .to_uppercase()
            .as_bytes()
            .chunks(2)
            .map(|pair| std::str::from_utf8(pair).unwrap())
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(upper_with_colons.parse::<CertificatePin>().unwrap(), plain);
        assert_eq!(plain.to_string(), PIN);
        assert!(PIN[..62].parse::<CertificatePin>().is_err());
        assert!(format!("{PIN}00").parse::<CertificatePin>().is_err());
        assert!(PIN.replace('0', "g").parse::<CertificatePin>().is_err());
    }

    #[test]
    fn pins_match_only_their_certificate() {
        let pin = CertificatePin::of(b"certificate one");
        assert!(pin.matches(b"certificate one"));
        assert!(!pin.matches(b"certificate two"));
    }

    #[test]
    fn unknown_domains_are_refused() {
        let registry = PeerRegistry::new(
            domain("a.example"),
            [PeerSettings {
                domain: "b.example",
                endpoint: "https://127.0.0.2:7401",
                pinned_sha256: Some(PIN),
            }],
        )
        .unwrap();
        let peer = registry.get(&domain("b.example")).unwrap();
        assert_eq!(peer.endpoint.port(), 7401);
        assert_eq!(peer.pin, Some(PIN.parse().unwrap()));
        assert_eq!(
            registry.get(&domain("c.example")).unwrap_err().to_string(),
            "domain c.example is not a federation peer of this homeserver"
        );
        assert_eq!(registry.own_domain(), &domain("a.example"));
        assert_eq!(registry.iter().count(), 1);
    }
}
