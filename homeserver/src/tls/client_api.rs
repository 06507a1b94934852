//! The client API's TLS: its certificate and key, replaced for new handshakes
//! when the reload task finds renewed files.

use super::files::{FileContents, PemFiles};
use super::reload::TlsListener;
use conclave_federation::server::CurrentServerConfig;
use conclave_federation::tls::{TlsError, parse_certificate_chain, parse_private_key};
use rustls::ServerConfig;
use rustls_pki_types::CertificateDer;
use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock};

/// The ALPN protocol of gRPC over TLS.
const ALPN_H2: &[u8] = b"h2";

/// Index of the certificate and the key in the listener's [`PemFiles`].
const CERTIFICATE: usize = 0;
const PRIVATE_KEY: usize = 1;

/// The client API's server configuration now, and the files it comes from.
pub(crate) struct ClientApiTls {
    files: PemFiles,
    current: RwLock<Arc<ServerConfig>>,
}

impl ClientApiTls {
    /// Builds the configuration from `contents` of `certificate` and
    /// `private_key` (read by the caller, so the reload task knows what the
    /// served configuration was made of).
    pub(crate) fn new(
        certificate: PathBuf,
        private_key: PathBuf,
        contents: &FileContents,
    ) -> Result<(ClientApiTls, CertificateDer<'static>), TlsError> {
        let files = ClientApiTls::files(certificate, private_key);
        let (config, end_entity) = server_config(&files, contents)?;
        let tls = ClientApiTls {
            files,
            current: RwLock::new(config),
        };
        Ok((tls, end_entity))
    }

    /// The files, in the order [`ClientApiTls::new`] reads their contents.
    pub(crate) fn files(certificate: PathBuf, private_key: PathBuf) -> PemFiles {
        PemFiles::new(vec![certificate, private_key])
    }
}

/// The server configuration of `contents`, and its end-entity certificate:
/// TLS 1.2 and 1.3 (as tonic's own TLS offered), ALPN `h2`, no client
/// certificates (clients authenticate with tokens).
fn server_config(
    files: &PemFiles,
    contents: &FileContents,
) -> Result<(Arc<ServerConfig>, CertificateDer<'static>), TlsError> {
    let chain = parse_certificate_chain(files.path(CERTIFICATE), contents.get(CERTIFICATE))?;
    let private_key = parse_private_key(files.path(PRIVATE_KEY), contents.get(PRIVATE_KEY))?;
    let end_entity = chain[0].clone();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        // Compares the key with the certificate: a key of another
        // certificate is refused here.
        .with_single_cert(chain, private_key)?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok((Arc::new(config), end_entity))
}

impl CurrentServerConfig for ClientApiTls {
    fn current(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl TlsListener for ClientApiTls {
    fn listener(&self) -> &'static str {
        "client_api"
    }

    fn files(&self) -> &PemFiles {
        &self.files
    }

    fn replace(&self, contents: &FileContents) -> Result<CertificateDer<'static>, TlsError> {
        let (config, end_entity) = server_config(&self.files, contents)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = config;
        Ok(end_entity)
    }
}
