//! Test fixtures shared by the TLS tests of this crate: trust roots and
//! material from development certificates, and a handshake over an in-memory
//! pipe.

use crate::dev_certs::{DevCertificate, DevCertificateAuthority};
use crate::tls::TlsMaterial;
use conclave_core::ids::Domain;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Now by the system clock, in Unix seconds: the handshakes check validity
/// against it.
pub(crate) fn now() -> i64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    i64::try_from(since_epoch.as_secs()).unwrap()
}

pub(crate) fn domain(name: &str) -> Domain {
    name.parse().unwrap()
}

/// Trust roots holding the certificates of `authorities`.
pub(crate) fn roots(authorities: &[&DevCertificateAuthority]) -> Arc<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for authority in authorities {
        roots
            .add(CertificateDer::from_pem_slice(authority.certificate_pem().as_bytes()).unwrap())
            .unwrap();
    }
    Arc::new(roots)
}

/// `issued`'s identity, trusting the certificates of `trusted`.
pub(crate) fn material(
    issued: &DevCertificate,
    trusted: &[&DevCertificateAuthority],
) -> TlsMaterial {
    TlsMaterial::new(
        &issued.domain,
        vec![CertificateDer::from_pem_slice(issued.certificate_pem.as_bytes()).unwrap()],
        PrivateKeyDer::from_pem_slice(issued.private_key_pem.as_bytes()).unwrap(),
        roots(trusted),
    )
    .unwrap()
}

/// What each side of a [`handshake`] presented.
#[derive(Debug)]
pub(crate) struct Handshake {
    /// The client certificate chain the server saw (empty without one).
    pub(crate) client_chain: Vec<CertificateDer<'static>>,
    /// The end-entity certificate the server presented.
    pub(crate) server_certificate: CertificateDer<'static>,
}

/// A handshake for the server name `name` over an in-memory pipe, followed by
/// one byte from the server (in TLS 1.3 the client only learns that the
/// server refused its certificate when it reads): what both sides presented,
/// or both sides' errors.
pub(crate) async fn handshake(
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    name: &str,
) -> Result<Handshake, String> {
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let server_side = async move {
        let mut stream = tokio_rustls::TlsAcceptor::from(server)
            .accept(server_io)
            .await
            .map_err(|error| format!("server: {error}"))?;
        let chain = stream
            .get_ref()
            .1
            .peer_certificates()
            .unwrap_or_default()
            .to_vec();
        stream
            .write_all(b"!")
            .await
            .map_err(|error| format!("server: {error}"))?;
        stream
            .flush()
            .await
            .map_err(|error| format!("server: {error}"))?;
        Ok::<_, String>(chain)
    };
    let server_name = ServerName::try_from(name.to_owned()).unwrap();
    let client_side = async move {
        let mut stream = tokio_rustls::TlsConnector::from(client)
            .connect(server_name, client_io)
            .await
            .map_err(|error| format!("client: {error}"))?;
        let mut byte = [0u8; 1];
        stream
            .read_exact(&mut byte)
            .await
            .map_err(|error| format!("client: {error}"))?;
        let presented = stream.get_ref().1.peer_certificates().unwrap()[0].clone();
        Ok::<_, String>(presented)
    };
    match tokio::join!(server_side, client_side) {
        (Ok(client_chain), Ok(server_certificate)) => Ok(Handshake {
            client_chain,
            server_certificate,
        }),
        (server_result, client_result) => Err(format!(
            "{}; {}",
            server_result.err().unwrap_or_default(),
            client_result.err().unwrap_or_default()
        )),
    }
}
