//! What the federation doctor needs beyond federation itself. A federation
//! connection either verifies everything in the handshake or fails with one
//! error; the doctor instead makes a handshake that only reads the peer's
//! chain ([`TlsMaterial::diagnostic_client_config`]), then judges the chain
//! here with rustls-webpki, as the handshake's verifier would, apart from the
//! name, the pin and the time (each judged and reported on its own), and asks
//! the peer over that same connection for its protocol version and clock
//! (`GetServerInfo`).

use crate::peers::PeerEndpoint;
use crate::tls::{TlsError, TlsMaterial, provider, server_name};
use conclave_core::ids::Domain;
use conclave_proto::federation::v1 as proto;
use conclave_proto::federation::v1::federation_service_client::FederationServiceClient;
use hyper_util::rt::TokioIo;
use rustls::RootCertStore;
use rustls_pki_types::{CertificateDer, UnixTime};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tonic::transport::Endpoint;
use tonic::{Code, Request, Status};
use webpki::{ExtendedKeyUsageValidator, KeyPurposeIdIter, KeyUsage};

/// Why a chain was refused: rustls-webpki's error, as the handshake's
/// verifier would have refused it.
pub use webpki::Error as ChainError;

/// The federation protocol this crate speaks, as GetServerInfo tells it.
pub const PROTOCOL_VERSION: &str = "conclave.federation.v1";

/// What a certificate must be allowed for, besides chaining to a root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyPurpose {
    /// TLS server authentication (a peer's server certificate).
    ServerAuth,
    /// TLS client authentication (the certificate this homeserver calls with).
    ClientAuth,
    /// Anything: only the chain is judged (usage is reported apart).
    Any,
}

/// Accepts every extended key usage: for judging the chain alone.
struct AnyKeyUsage;

impl ExtendedKeyUsageValidator for AnyKeyUsage {
    fn validate(&self, _: KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        Ok(())
    }
}

/// Whether `chain` (end-entity certificate first, then intermediates) chains
/// to one of `trust_roots` at `now` and, per `purpose`, is allowed for it:
/// rustls-webpki's path building, as rustls's verifiers make it, without the
/// name (see [`crate::identity::is_valid_for`]).
pub fn verify_chain(
    chain: &[CertificateDer<'_>],
    trust_roots: &RootCertStore,
    now: UnixTime,
    purpose: KeyPurpose,
) -> Result<(), webpki::Error> {
    let Some((end_entity, intermediates)) = chain.split_first() else {
        return Err(webpki::Error::BadDer);
    };
    let end_entity = webpki::EndEntityCert::try_from(end_entity)?;
    let algorithms = provider().signature_verification_algorithms.all;
    let anchors = &trust_roots.roots;
    match purpose {
        KeyPurpose::ServerAuth => end_entity.verify_for_usage(
            algorithms,
            anchors,
            intermediates,
            now,
            KeyUsage::server_auth(),
            None,
            None,
        ),
        KeyPurpose::ClientAuth => end_entity.verify_for_usage(
            algorithms,
            anchors,
            intermediates,
            now,
            KeyUsage::client_auth(),
            None,
            None,
        ),
        KeyPurpose::Any => end_entity.verify_for_usage(
            algorithms,
            anchors,
            intermediates,
            now,
            AnyKeyUsage,
            None,
            None,
        ),
    }
    .map(drop)
}

/// A TLS connection to a peer made by [`handshake`]: what the peer presented,
/// and the connection itself for [`get_server_info`].
pub struct DiagnosticConnection {
    stream: TlsStream<TcpStream>,
}

impl DiagnosticConnection {
    /// The chain the peer presented, end-entity certificate first.
    pub fn peer_chain(&self) -> Vec<CertificateDer<'static>> {
        self.stream
            .get_ref()
            .1
            .peer_certificates()
            .unwrap_or_default()
            .to_vec()
    }

    /// Whether the peer agreed to HTTP/2 (ALPN `h2`), which gRPC needs.
    pub fn speaks_http2(&self) -> bool {
        self.stream.get_ref().1.alpn_protocol() == Some(b"h2")
    }
}

/// Why the doctor's handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The own material makes no client configuration.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The TLS handshake itself failed (an alert from the peer, a protocol
    /// error, the connection closed).
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A TLS handshake over `tcp` for `domain` (its SNI), presenting the own
/// certificate and accepting any server certificate whose key the peer holds.
pub async fn handshake(
    tcp: TcpStream,
    material: &TlsMaterial,
    domain: &Domain,
) -> Result<DiagnosticConnection, HandshakeError> {
    let config = material.diagnostic_client_config()?;
    let stream = TlsConnector::from(config)
        .connect(server_name(domain)?, tcp)
        .await?;
    Ok(DiagnosticConnection { stream })
}

/// How GetServerInfo failed, as the doctor advises on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerInfoFailureKind {
    /// The peer does not know the RPC (an older release).
    Unimplemented,
    /// The peer does not accept us for our domain (PERMISSION_DENIED).
    NotAccepted,
    /// The peer saw no usable client certificate (UNAUTHENTICATED).
    NoClientCertificate,
    /// The peer's rate limit (RESOURCE_EXHAUSTED).
    RateLimited,
    /// Anything else: the connection failed or was dropped (a TLS alert
    /// from a peer refusing our certificate shows here), a deadline.
    Other,
}

/// Why GetServerInfo failed: its kind, and the status's code and message
/// (with the innermost cause, such as a TLS alert).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{description}")]
pub struct ServerInfoFailure {
    pub kind: ServerInfoFailureKind,
    pub description: String,
}

impl ServerInfoFailure {
    fn of(status: &Status) -> ServerInfoFailure {
        let kind = match status.code() {
            Code::Unimplemented => ServerInfoFailureKind::Unimplemented,
            Code::PermissionDenied => ServerInfoFailureKind::NotAccepted,
            Code::Unauthenticated => ServerInfoFailureKind::NoClientCertificate,
            Code::ResourceExhausted => ServerInfoFailureKind::RateLimited,
            _ => ServerInfoFailureKind::Other,
        };
        ServerInfoFailure {
            kind,
            description: format!(
                "{:?}: {}",
                status.code(),
                crate::client::describe_failure(status)
            ),
        }
    }
}

/// Calls GetServerInfo over `connection` (to the peer at `endpoint`, as
/// `asking_domain`), within `timeout`. The connection is used up: it is the
/// one whose certificate the doctor judged, so the answer comes from the
/// server judged.
pub async fn get_server_info(
    connection: DiagnosticConnection,
    endpoint: &PeerEndpoint,
    asking_domain: &Domain,
    timeout: Duration,
) -> Result<proto::GetServerInfoResponse, ServerInfoFailure> {
    call_server_info(connection, endpoint, asking_domain, timeout)
        .await
        .map_err(|status| ServerInfoFailure::of(&status))
}

async fn call_server_info(
    connection: DiagnosticConnection,
    endpoint: &PeerEndpoint,
    asking_domain: &Domain,
    timeout: Duration,
) -> Result<proto::GetServerInfoResponse, Status> {
    let authority = endpoint
        .uri()
        .authority()
        .ok_or_else(|| Status::invalid_argument(format!("{endpoint} names no host")))?
        .clone();
    // As in `client.rs`: tonic sees plain HTTP/2 over the stream handed to
    // it; `origin` gives the request its real scheme and authority.
    let plain = http::Uri::builder()
        .scheme("http")
        .authority(authority)
        .path_and_query("/")
        .build()
        .map_err(|error| Status::invalid_argument(error.to_string()))?;
    let stream = Arc::new(Mutex::new(Some(TokioIo::new(connection.stream))));
    let connector = tower::service_fn(move |_: http::Uri| {
        let taken = stream.lock().unwrap_or_else(PoisonError::into_inner).take();
        async move {
            taken.ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::NotConnected,
                    "the doctor's connection was already used",
                )
            })
        }
    });
    let channel = Endpoint::from(plain)
        .origin(endpoint.uri().clone())
        .timeout(timeout)
        .connect_with_connector(connector)
        .await
        .map_err(|error| Status::unavailable(error.to_string()))?;
    let mut request = Request::new(proto::GetServerInfoRequest {
        asking_domain: asking_domain.to_string(),
    });
    request.set_timeout(timeout);
    FederationServiceClient::new(channel)
        .get_server_info(request)
        .await
        .map(tonic::Response::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dev_certs::DevCertificateAuthority;
    use crate::test_tls::{domain, material, now, roots};
    use rustls_pki_types::pem::PemObject;

    fn der(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
    }

    fn unix(seconds: i64) -> UnixTime {
        UnixTime::since_unix_epoch(Duration::from_secs(u64::try_from(seconds).unwrap()))
    }

    #[test]
    fn chains_are_judged_against_the_roots_and_the_time() {
        let authority = DevCertificateAuthority::generate(now()).unwrap();
        let other = DevCertificateAuthority::generate(now()).unwrap();
        let issued = authority.issue(&domain("b.example"), &[]).unwrap();
        let chain = [der(&issued.certificate_pem)];
        let trusted = roots(&[&authority]);
        for purpose in [
            KeyPurpose::ServerAuth,
            KeyPurpose::ClientAuth,
            KeyPurpose::Any,
        ] {
            verify_chain(&chain, &trusted, unix(now()), purpose).unwrap();
        }
        assert_eq!(
            verify_chain(&chain, &roots(&[&other]), unix(now()), KeyPurpose::Any),
            Err(webpki::Error::UnknownIssuer)
        );
        let after_expiry = now() + 2 * 365 * 24 * 3600;
        assert!(matches!(
            verify_chain(&chain, &trusted, unix(after_expiry), KeyPurpose::Any),
            Err(webpki::Error::CertExpired { .. })
        ));
        assert_eq!(
            verify_chain(&[], &trusted, unix(now()), KeyPurpose::Any),
            Err(webpki::Error::BadDer)
        );
    }

    #[tokio::test]
    async fn the_handshake_reads_an_untrusted_chain_for_judging() {
        let authority = DevCertificateAuthority::generate(now()).unwrap();
        let other = DevCertificateAuthority::generate(now()).unwrap();
        let a = material(
            &authority.issue(&domain("a.example"), &[]).unwrap(),
            &[&authority],
        );
        let untrusted = other.issue(&domain("b-other.example"), &[]).unwrap();
        // The peer trusts a.example's CA, but presents a certificate of
        // another CA for another name: the federation client would refuse it.
        let peer = material(&untrusted, &[&authority]);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server_config = peer.server_config().unwrap();
        let serving = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            tokio_rustls::TlsAcceptor::from(server_config)
                .accept(tcp)
                .await
                .map(drop)
        });
        let tcp = TcpStream::connect(address).await.unwrap();
        let connection = handshake(tcp, &a, &domain("b.example")).await.unwrap();
        assert!(connection.speaks_http2());
        assert_eq!(connection.peer_chain(), [der(&untrusted.certificate_pem)]);
        serving.await.unwrap().unwrap();
    }
}
