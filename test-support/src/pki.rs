//! A development CA made at test time and the certificates it issues, written
//! to files in a temporary directory (a homeserver is configured with paths).

use conclave_core::ids::Domain;
use conclave_federation::client::{ClientOptions, FederationClient};
use conclave_federation::dev_certs::{DevCertificateAuthority, VALIDITY_DAYS};
use conclave_federation::peers::{CertificatePin, PeerRegistry, PeerSettings};
use conclave_federation::reloadable::ReloadableTls;
use conclave_federation::server::TlsIncoming;
use conclave_federation::tls::TlsMaterial;
use conclave_homeserver::config::{FederationConfig, FederationPeerConfig};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tempfile::TempDir;

/// A development CA and the files it issued. The files live as long as this
/// value.
pub struct TestPki {
    directory: TempDir,
    authority: DevCertificateAuthority,
    /// The CA certificate, as every homeserver of a network trusts it.
    trust_roots: PathBuf,
    /// Certificates issued so far, to name each one's files apart.
    issued: AtomicUsize,
    /// When the CA and every certificate it issues expire (Unix time).
    not_after_unix_seconds: i64,
}

/// A certificate for one domain and its private key, in PEM and as files.
pub struct IssuedCertificate {
    pub domain: Domain,
    pub certificate: PathBuf,
    pub private_key: PathBuf,
    pub certificate_pem: String,
    pub private_key_pem: String,
    /// SHA-256 of the certificate, as `pinned_sha256` takes it.
    pub pin: CertificatePin,
}

impl TestPki {
    pub fn new() -> TestPki {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("the clock is after 1970")
            .as_secs();
        TestPki::made_at(i64::try_from(now).expect("the time fits a certificate"))
    }

    /// A CA made at `now` (Unix seconds; its certificates are valid from an
    /// hour before until [`VALIDITY_DAYS`] after): made in the past, its
    /// certificates are about to expire, or have.
    pub fn made_at(now: i64) -> TestPki {
        let directory = tempfile::tempdir().expect("a temporary directory");
        let authority = DevCertificateAuthority::generate(now).expect("a development CA");
        let trust_roots = directory.path().join("ca.pem");
        std::fs::write(&trust_roots, authority.certificate_pem()).expect("write ca.pem");
        TestPki {
            directory,
            authority,
            trust_roots,
            issued: AtomicUsize::new(0),
            not_after_unix_seconds: now + VALIDITY_DAYS * 24 * 3600,
        }
    }

    /// When the CA's certificate and every certificate it issues expire (Unix
    /// time): [`VALIDITY_DAYS`] after the CA was made.
    pub fn not_after_unix_seconds(&self) -> i64 {
        self.not_after_unix_seconds
    }

    /// The CA certificate in PEM.
    pub fn ca_pem(&self) -> String {
        self.authority.certificate_pem()
    }

    /// The CA certificate's file, a homeserver's `trust_roots`.
    pub fn trust_roots(&self) -> &Path {
        &self.trust_roots
    }

    /// A new certificate for `domain` (its SAN dNSName); every call makes
    /// another one.
    pub fn issue(&self, domain: &str) -> IssuedCertificate {
        let domain: Domain = domain.parse().expect("a valid domain");
        let issued = self.authority.issue(&domain, &[]).expect("a certificate");
        let number = self.issued.fetch_add(1, Ordering::SeqCst);
        let directory = self.directory.path();
        let certificate = directory.join(format!("{domain}-{number}.pem"));
        let private_key = directory.join(format!("{domain}-{number}.key.pem"));
        std::fs::write(&certificate, &issued.certificate_pem).expect("write a certificate");
        std::fs::write(&private_key, &issued.private_key_pem).expect("write a key");
        IssuedCertificate {
            domain: issued.domain,
            certificate,
            private_key,
            certificate_pem: issued.certificate_pem,
            private_key_pem: issued.private_key_pem,
            pin: issued.pin,
        }
    }

    /// A federation client acting as `issued`'s domain and trusting this CA,
    /// with `peers` (domain, `https://` endpoint): as a homeserver calls its
    /// peers, or as an impostor holding a real certificate would.
    pub fn federation_client(
        &self,
        issued: &IssuedCertificate,
        peers: &[(&str, String)],
    ) -> FederationClient {
        let material = TlsMaterial::load(
            &issued.domain,
            &issued.certificate,
            &issued.private_key,
            &self.trust_roots,
        )
        .expect("usable TLS material");
        let registry = PeerRegistry::new(
            issued.domain.clone(),
            peers.iter().map(|(domain, endpoint)| PeerSettings {
                domain,
                endpoint,
                pinned_sha256: None,
            }),
        )
        .expect("valid peers");
        let options = ClientOptions {
            call_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
            max_message_bytes: 4 * 1024 * 1024,
        };
        FederationClient::new(&material, &registry, &options).expect("a federation client")
    }
}

impl TestPki {
    /// The `[federation]` settings of a homeserver presenting `issued`,
    /// trusting this CA, with `peers` (domain, `https://` endpoint) and every
    /// other setting at its default (the listener comes with
    /// [`crate::TestFederation`]).
    pub fn federation_settings(
        &self,
        issued: &IssuedCertificate,
        peers: &[(&str, String)],
    ) -> FederationConfig {
        let peers = peers
            .iter()
            .map(|(domain, endpoint)| {
                let peer = FederationPeerConfig {
                    endpoint: endpoint.clone(),
                    pinned_sha256: None,
                };
                (domain.to_string(), peer)
            })
            .collect();
        FederationConfig {
            certificate: Some(issued.certificate.clone()),
            private_key: Some(issued.private_key.clone()),
            trust_roots: Some(self.trust_roots.clone()),
            peers,
            ..FederationConfig::default()
        }
    }
}

impl Default for TestPki {
    fn default() -> Self {
        TestPki::new()
    }
}

/// A federation listener on 127.0.0.1 that only completes TLS handshakes,
/// presenting `certificate_pem` and `private_key_pem` as `domain` (whatever
/// CA issued them, expired or not) and requiring a client certificate of
/// the CA `trusted_ca_pem`: a peer with a certificate a homeserver would
/// refuse to start with (another domain's, another CA's, an expired one),
/// for the federation doctor's tests. Its `https://` endpoint; it holds
/// every connection until the test's runtime ends.
pub async fn handshake_only_listener(
    domain: &str,
    certificate_pem: &str,
    private_key_pem: &str,
    trusted_ca_pem: &str,
) -> String {
    use futures::StreamExt as _;
    let path = Path::new("handshake-only listener");
    let material = TlsMaterial::from_pem(
        &domain.parse().expect("a valid domain"),
        (path, certificate_pem.as_bytes()),
        (path, private_key_pem.as_bytes()),
        (path, trusted_ca_pem.as_bytes()),
    )
    .expect("usable TLS material");
    let tls = std::sync::Arc::new(ReloadableTls::new(material).expect("a TLS configuration"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let address = listener.local_addr().expect("a bound listener");
    let mut incoming = TlsIncoming::new(listener, "handshake-only", tls, Duration::from_secs(10));
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Some(connection) = incoming.next().await {
            held.push(connection);
        }
    });
    format!("https://{address}")
}
