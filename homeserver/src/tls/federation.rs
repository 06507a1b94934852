//! The federation listener's and client's TLS material as a reload target:
//! certificate, private key and trust roots, replaced together.

use super::files::{FileContents, PemFiles};
use super::reload::TlsListener;
use conclave_core::ids::Domain;
use conclave_federation::reloadable::ReloadableTls;
use conclave_federation::tls::{TlsError, TlsMaterial};
use rustls_pki_types::CertificateDer;
use std::path::PathBuf;
use std::sync::Arc;

/// Index of each file in the listener's [`PemFiles`].
const CERTIFICATE: usize = 0;
const PRIVATE_KEY: usize = 1;
const TRUST_ROOTS: usize = 2;

/// The federation material in use and the files it comes from.
pub(crate) struct FederationTls {
    domain: Domain,
    files: PemFiles,
    tls: Arc<ReloadableTls>,
}

impl FederationTls {
    /// The files, in the order [`FederationTls::material`] reads their contents.
    pub(crate) fn files(
        certificate: PathBuf,
        private_key: PathBuf,
        trust_roots: PathBuf,
    ) -> PemFiles {
        PemFiles::new(vec![certificate, private_key, trust_roots])
    }

    /// The material `contents` of `files` make for `domain`: the certificate
    /// valid for it, the key the certificate's, the trust roots usable.
    pub(crate) fn material(
        domain: &Domain,
        files: &PemFiles,
        contents: &FileContents,
    ) -> Result<TlsMaterial, TlsError> {
        let file = |index| (files.path(index), contents.get(index));
        TlsMaterial::from_pem(
            domain,
            file(CERTIFICATE),
            file(PRIVATE_KEY),
            file(TRUST_ROOTS),
        )
    }

    pub(crate) fn new(domain: Domain, files: PemFiles, tls: Arc<ReloadableTls>) -> FederationTls {
        FederationTls { domain, files, tls }
    }
}

impl TlsListener for FederationTls {
    fn listener(&self) -> &'static str {
        "federation"
    }

    fn files(&self) -> &PemFiles {
        &self.files
    }

    fn replace(&self, contents: &FileContents) -> Result<CertificateDer<'static>, TlsError> {
        let material = FederationTls::material(&self.domain, &self.files, contents)?;
        let end_entity = material.certificate().clone();
        self.tls.replace(material)?;
        Ok(end_entity)
    }
}
