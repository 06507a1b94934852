//! The rustls configurations of federation, both directions, from one set of PEM
//! files: this homeserver's certificate and key (its server certificate for
//! peers calling in, and its client certificate when it calls out) and the trust
//! roots (typically an enterprise CA bundle) that certify every peer.
//!
//! - Server side: client certificates are required and must chain to a trust root
//!   and allow client authentication; which domain a certificate speaks for is
//!   decided per request ([`crate::identity`]).
//! - Client side: the peer's server certificate must chain to a trust root and be
//!   valid for the peer's domain (not for the endpoint's host, which is only an
//!   address), and must be the pinned certificate if the peer is pinned.
//!
//! TLS 1.3 only, ring only, ALPN `h2`.

use crate::identity::{is_valid_for, presented_dns_names};
use crate::peers::CertificatePin;
use conclave_core::ids::Domain;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, OtherError,
    RootCertStore, ServerConfig, SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use std::path::Path;
use std::sync::Arc;

/// The ALPN protocol of gRPC over TLS.
const ALPN_H2: &[u8] = b"h2";

/// Why TLS material cannot be used. Messages name the file or the domain.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file is missing, unreadable or malformed.
    #[error("cannot read {what} from {path}: {reason}")]
    Pem {
        what: &'static str,
        path: String,
        reason: String,
    },
    /// A certificate file holds no certificate.
    #[error("{path} contains no PEM certificate")]
    NoCertificate { path: String },
    /// A trust root is not a usable CA certificate.
    #[error("{path}: certificate {index} cannot be a trust root: {reason}")]
    InvalidTrustRoot {
        path: String,
        index: usize,
        reason: String,
    },
    /// The own certificate cannot be parsed.
    #[error("the certificate cannot be parsed: {reason}")]
    UnreadableCertificate { reason: String },
    /// The own certificate is not valid for the own domain, so peers would refuse it.
    #[error(
        "the certificate is valid for {presented:?}, not for this homeserver's domain {domain}"
    )]
    NotValidForDomain {
        domain: Domain,
        presented: Vec<String>,
    },
    /// Replacement material is for another domain than the material in use.
    #[error("the new certificate is for {new_domain}, but this homeserver's domain is {domain}")]
    DomainChanged { domain: Domain, new_domain: Domain },
    /// rustls refused the material, e.g. a private key that does not match the
    /// certificate.
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
    /// The trust roots cannot build a verifier.
    #[error("trust roots: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// Reads a PEM certificate chain (end-entity certificate first).
pub fn read_certificate_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    parse_certificate_chain(path, &read_file("a PEM certificate", path)?)
}

/// Reads a PEM private key (PKCS#8, PKCS#1 or SEC1).
pub fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    parse_private_key(path, &read_file("a PEM private key", path)?)
}

/// Reads a PEM bundle of CA certificates; every one must be usable as a trust root.
pub fn read_trust_roots(path: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    parse_trust_roots(path, &read_file("a PEM certificate", path)?)
}

fn read_file(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::Pem {
        what,
        path: path.display().to_string(),
        reason: error.to_string(),
    })
}

/// The PEM certificate chain `pem`, read from `path` (named in errors).
pub fn parse_certificate_chain(
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| pem_error("a PEM certificate", path, error))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.display().to_string(),
        });
    }
    Ok(chain)
}

/// The PEM private key `pem`, read from `path` (named in errors).
pub fn parse_private_key(path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|error| pem_error("a PEM private key", path, error))
}

/// The PEM bundle of CA certificates `pem`, read from `path` (named in errors).
pub fn parse_trust_roots(path: &Path, pem: &[u8]) -> Result<Arc<RootCertStore>, TlsError> {
    let certificates = parse_certificate_chain(path, pem)?;
    let mut roots = RootCertStore::empty();
    for (index, certificate) in certificates.into_iter().enumerate() {
        roots
            .add(certificate)
            .map_err(|error| TlsError::InvalidTrustRoot {
                path: path.display().to_string(),
                index,
                reason: error.to_string(),
            })?;
    }
    Ok(Arc::new(roots))
}

fn pem_error(what: &'static str, path: &Path, error: rustls_pki_types::pem::Error) -> TlsError {
    TlsError::Pem {
        what,
        path: path.display().to_string(),
        reason: error.to_string(),
    }
}

/// This homeserver's federation identity and the roots it trusts, checked to
/// belong together: the certificate is valid for the own domain and the key is
/// the certificate's.
pub struct TlsMaterial {
    domain: Domain,
    certificate_chain: Vec<CertificateDer<'static>>,
    private_key: PrivateKeyDer<'static>,
    trust_roots: Arc<RootCertStore>,
}

/// By hand: a private key is cloned only on purpose (`clone_key`).
impl Clone for TlsMaterial {
    fn clone(&self) -> Self {
        TlsMaterial {
            domain: self.domain.clone(),
            certificate_chain: self.certificate_chain.clone(),
            private_key: self.private_key.clone_key(),
            trust_roots: self.trust_roots.clone(),
        }
    }
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("domain", &self.domain)
            .field("certificate", &self.certificate_pin())
            .field("trust_roots", &self.trust_roots.len())
            .finish_non_exhaustive()
    }
}

impl TlsMaterial {
    /// Reads and checks the three PEM files.
    pub fn load(
        domain: &Domain,
        certificate: &Path,
        private_key: &Path,
        trust_roots: &Path,
    ) -> Result<TlsMaterial, TlsError> {
        TlsMaterial::new(
            domain,
            read_certificate_chain(certificate)?,
            read_private_key(private_key)?,
            read_trust_roots(trust_roots)?,
        )
    }

    /// [`TlsMaterial::load`] from the files' contents, already read (the
    /// paths name them in errors).
    pub fn from_pem(
        domain: &Domain,
        certificate: (&Path, &[u8]),
        private_key: (&Path, &[u8]),
        trust_roots: (&Path, &[u8]),
    ) -> Result<TlsMaterial, TlsError> {
        TlsMaterial::new(
            domain,
            parse_certificate_chain(certificate.0, certificate.1)?,
            parse_private_key(private_key.0, private_key.1)?,
            parse_trust_roots(trust_roots.0, trust_roots.1)?,
        )
    }

    /// Checks that `certificate_chain` is valid for `domain` and `private_key` is
    /// its key (by building the server configuration, which compares them).
    pub fn new(
        domain: &Domain,
        certificate_chain: Vec<CertificateDer<'static>>,
        private_key: PrivateKeyDer<'static>,
        trust_roots: Arc<RootCertStore>,
    ) -> Result<TlsMaterial, TlsError> {
        let Some(end_entity) = certificate_chain.first() else {
            return Err(TlsError::NoCertificate {
                path: "the certificate chain".to_owned(),
            });
        };
        let valid =
            is_valid_for(end_entity, domain).map_err(|error| TlsError::UnreadableCertificate {
                reason: error.to_string(),
            })?;
        if !valid {
            return Err(TlsError::NotValidForDomain {
                domain: domain.clone(),
                presented: presented_dns_names(end_entity),
            });
        }
        let material = TlsMaterial {
            domain: domain.clone(),
            certificate_chain,
            private_key,
            trust_roots,
        };
        material.server_config()?;
        Ok(material)
    }

    /// The domain the certificate was checked against.
    pub fn domain(&self) -> &Domain {
        &self.domain
    }

    /// This homeserver's own (end-entity) certificate.
    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.certificate_chain[0]
    }

    /// This homeserver's certificate chain, end-entity certificate first.
    pub fn certificate_chain(&self) -> &[CertificateDer<'static>] {
        &self.certificate_chain
    }

    /// The roots every peer's certificate must chain to.
    pub fn trust_roots(&self) -> &RootCertStore {
        &self.trust_roots
    }

    /// The pin of this homeserver's own certificate, which peers may configure.
    pub fn certificate_pin(&self) -> CertificatePin {
        CertificatePin::of(&self.certificate_chain[0])
    }

    /// The federation listener's configuration: presents the own certificate and
    /// requires a client certificate that chains to a trust root.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let provider = provider();
        let verifier =
            WebPkiClientVerifier::builder_with_provider(self.trust_roots.clone(), provider.clone())
                .build()?;
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(Arc::new(LoggingClientVerifier { inner: verifier }))
            .with_single_cert(self.certificate_chain.clone(), self.private_key.clone_key())?;
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        Ok(Arc::new(config))
    }

    /// The configuration for calling one peer: presents the own certificate as
    /// client certificate and accepts the peer's server certificate only if it
    /// chains to a trust root, is valid for the name the connection is made to
    /// (the peer's domain) and, with `pin`, is exactly the pinned certificate.
    pub fn client_config(
        &self,
        pin: Option<CertificatePin>,
    ) -> Result<Arc<ClientConfig>, TlsError> {
        let provider = provider();
        let webpki =
            WebPkiServerVerifier::builder_with_provider(self.trust_roots.clone(), provider.clone())
                .build()?;
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinningServerVerifier { webpki, pin }))
            .with_client_auth_cert(self.certificate_chain.clone(), self.private_key.clone_key())?;
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        Ok(Arc::new(config))
    }
}

impl TlsMaterial {
    /// The federation doctor's configuration for calling a peer: presents the
    /// own certificate as [`TlsMaterial::client_config`] does, but accepts
    /// whatever certificate the peer presents (still checking that the peer
    /// holds its key), so the doctor can read the chain and judge chain, name,
    /// pin and expiry one by one ([`crate::diagnosis`]) instead of learning
    /// only that the handshake failed. Never used for federation calls.
    pub fn diagnostic_client_config(&self) -> Result<Arc<ClientConfig>, TlsError> {
        let provider = provider();
        let mut config = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(UnjudgedServerCertificate { provider }))
            .with_client_auth_cert(self.certificate_chain.clone(), self.private_key.clone_key())?;
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        Ok(Arc::new(config))
    }
}

/// Accepts any server certificate, but only from a server that proves it
/// holds the certificate's key (the handshake signature is verified): the
/// doctor judges the certificate itself afterwards.
#[derive(Debug)]
struct UnjudgedServerCertificate {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for UnjudgedServerCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            certificate,
            signature,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            certificate,
            signature,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// ring, the one crypto provider of the workspace (see STACK.md).
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// rustls's client-certificate verifier, logging each refusal with the names the
/// refused certificate presents (unverified: for the operator's eyes only).
#[derive(Debug)]
struct LoggingClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for LoggingClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.inner
            .verify_client_cert(end_entity, intermediates, now)
            .inspect_err(|error| {
                tracing::warn!(
                    presented_names = ?presented_dns_names(end_entity),
                    %error,
                    "refused a federation peer's client certificate"
                );
            })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner
            .verify_tls12_signature(message, certificate, signature)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner
            .verify_tls13_signature(message, certificate, signature)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The certificate is not the one pinned for the peer.
#[derive(thiserror::Error)]
#[error("the certificate (SHA-256 {presented}) is not the one pinned for this peer ({pinned})")]
struct PinMismatch {
    presented: CertificatePin,
    pinned: CertificatePin,
}

/// rustls shows a `CertificateError::Other` with `Debug`: make that the message.
impl std::fmt::Debug for PinMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// rustls's WebPKI server verifier, plus the optional pin.
#[derive(Debug)]
struct PinningServerVerifier {
    webpki: Arc<WebPkiServerVerifier>,
    pin: Option<CertificatePin>,
}

impl ServerCertVerifier for PinningServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        if let Some(pinned) = self.pin
            && !pinned.matches(end_entity)
        {
            return Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(PinMismatch {
                    presented: CertificatePin::of(end_entity),
                    pinned,
                })),
            )));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki
            .verify_tls12_signature(message, certificate, signature)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki
            .verify_tls13_signature(message, certificate, signature)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// The name a connection to `domain` verifies the server certificate against.
pub fn server_name(domain: &Domain) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(domain.as_str().to_owned()).map_err(|error| {
        TlsError::Rustls(rustls::Error::General(format!(
            "{domain} cannot be a TLS server name: {error}"
        )))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dev_certs::{DevCertificate, DevCertificateAuthority};
    use crate::identity::check_peer_certificate;
    use crate::peers::{PeerRegistry, PeerSettings};
    use crate::test_tls::{domain, handshake, material, now, roots};

    fn client_without_certificate(trusted: &DevCertificateAuthority) -> Arc<ClientConfig> {
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots(&[trusted]))
            .with_no_client_auth();
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        Arc::new(config)
    }

    struct Pki {
        authority: DevCertificateAuthority,
        other_authority: DevCertificateAuthority,
        a: DevCertificate,
        b: DevCertificate,
        b_of_other_authority: DevCertificate,
        a_of_other_authority: DevCertificate,
    }

    fn pki() -> Pki {
        let authority = DevCertificateAuthority::generate(now()).unwrap();
        let other_authority = DevCertificateAuthority::generate(now()).unwrap();
        Pki {
            a: authority.issue(&domain("a.example"), &[]).unwrap(),
            b: authority.issue(&domain("b.example"), &[]).unwrap(),
            b_of_other_authority: other_authority.issue(&domain("b.example"), &[]).unwrap(),
            a_of_other_authority: other_authority.issue(&domain("a.example"), &[]).unwrap(),
            authority,
            other_authority,
        }
    }

    #[tokio::test]
    async fn peers_of_one_authority_authenticate_each_other() {
        let pki = pki();
        let a = material(&pki.a, &[&pki.authority]);
        let b = material(&pki.b, &[&pki.authority]);
        let chain = handshake(
            b.server_config().unwrap(),
            a.client_config(None).unwrap(),
            "b.example",
        )
        .await
        .unwrap()
        .client_chain;
        // The chain the server saw speaks for a.example and for nobody else.
        let registry = PeerRegistry::new(
            domain("b.example"),
            ["a.example", "c.example"].map(|name| PeerSettings {
                domain: name,
                endpoint: "https://127.0.0.1:7401",
                pinned_sha256: None,
            }),
        )
        .unwrap();
        check_peer_certificate(Some(&chain), &domain("a.example"), &registry).unwrap();
        check_peer_certificate(Some(&chain), &domain("c.example"), &registry).unwrap_err();
        // Pinned to the right certificate: still accepted.
        handshake(
            b.server_config().unwrap(),
            a.client_config(Some(pki.b.pin)).unwrap(),
            "b.example",
        )
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn refusals_at_the_handshake() {
        let pki = pki();
        let a = material(&pki.a, &[&pki.authority]);
        let b = material(&pki.b, &[&pki.authority]);
        let a_untrusted = material(&pki.a_of_other_authority, &[&pki.other_authority]);
        let b_untrusted = material(&pki.b_of_other_authority, &[&pki.authority]);
        for (case, server, client, name, fragment) in [
            (
                "no client certificate",
                b.server_config().unwrap(),
                client_without_certificate(&pki.authority),
                "b.example",
                "server: peer sent no certificates",
            ),
            (
                "client certificate of another authority",
                b.server_config().unwrap(),
                a_untrusted.client_config(None).unwrap(),
                "b.example",
                "UnknownIssuer",
            ),
            (
                "server certificate of another authority",
                b_untrusted.server_config().unwrap(),
                a.client_config(None).unwrap(),
                "b.example",
                "client: invalid peer certificate: UnknownIssuer",
            ),
            (
                "server certificate for another domain",
                b.server_config().unwrap(),
                a.client_config(None).unwrap(),
                "c.example",
                "client: invalid peer certificate: certificate not valid for name",
            ),
            (
                "server certificate not the pinned one",
                b.server_config().unwrap(),
                a.client_config(Some(pki.b_of_other_authority.pin)).unwrap(),
                "b.example",
                "is not the one pinned for this peer",
            ),
        ] {
            let error = handshake(server, client, name).await.unwrap_err();
            assert!(error.contains(fragment), "{case}: {error}");
        }
    }

    #[test]
    fn material_must_fit_the_domain_and_the_key() {
        let pki = pki();
        let chain = |issued: &DevCertificate| {
            vec![CertificateDer::from_pem_slice(issued.certificate_pem.as_bytes()).unwrap()]
        };
        let key = |issued: &DevCertificate| {
            PrivateKeyDer::from_pem_slice(issued.private_key_pem.as_bytes()).unwrap()
        };
        let error = TlsMaterial::new(
            &domain("a.example"),
            chain(&pki.b),
            key(&pki.b),
            roots(&[&pki.authority]),
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            r#"the certificate is valid for ["b.example"], not for this homeserver's domain a.example"#
        );
        let error = TlsMaterial::new(
            &domain("a.example"),
            chain(&pki.a),
            key(&pki.b),
            roots(&[&pki.authority]),
        )
        .unwrap_err();
        assert!(error.to_string().contains("key"), "{error}");
        let material = material(&pki.a, &[&pki.authority]);
        assert_eq!(material.certificate_pin(), pki.a.pin);
        assert_eq!(material.domain(), &domain("a.example"));
    }

    #[test]
    fn pem_files_are_read_and_checked() {
        let pki = pki();
        let directory = std::env::temp_dir().join(format!(
            "conclave-federation-tls-test-{}",
            std::process::id()
        ));
        std::fs::create_dir_all(&directory).unwrap();
        let write = |name: &str, contents: &str| {
            let path = directory.join(name);
            std::fs::write(&path, contents).unwrap();
            path
        };
        let certificate = write("a.pem", &pki.a.certificate_pem);
        let private_key = write("a.key.pem", &pki.a.private_key_pem);
        let ca = write("ca.pem", &pki.authority.certificate_pem());
        let empty = write("empty.pem", "");
        let loaded =
            TlsMaterial::load(&domain("a.example"), &certificate, &private_key, &ca).unwrap();
        assert_eq!(loaded.certificate_pin(), pki.a.pin);
        let missing = directory.join("missing.pem");
        for (case, result, fragment) in [
            (
                "missing certificate",
                read_certificate_chain(&missing).map(drop),
                "cannot read a PEM certificate from",
            ),
            (
                "empty certificate",
                read_certificate_chain(&empty).map(drop),
                "contains no PEM certificate",
            ),
            (
                "key in certificate file",
                read_certificate_chain(&private_key).map(drop),
                "contains no PEM certificate",
            ),
            (
                "empty key",
                read_private_key(&empty).map(drop),
                "cannot read a PEM private key",
            ),
            (
                "empty roots",
                read_trust_roots(&empty).map(drop),
                "contains no PEM certificate",
            ),
        ] {
            let error = result.unwrap_err().to_string();
            assert!(error.contains(fragment), "{case}: {error}");
        }
        std::fs::remove_dir_all(&directory).unwrap();
    }
}
