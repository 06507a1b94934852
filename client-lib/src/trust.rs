//! Which homeserver certificates the client trusts (the system's roots plus the
//! CA files the user names) and, when it refuses one, why, in plain words.
//!
//! rustls's own refusals ("invalid peer certificate: UnknownIssuer") say
//! neither which certificate nor what to do. So the verifier here is rustls's
//! WebPKI verifier, wrapped: when it refuses, the wrapper reads the server's
//! certificate (its names, its issuer, its validity) and keeps a
//! [`CertificateRefusal`] that the connection reports instead.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use chrono::DateTime;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Why a CA file given by the user cannot be used. Each message names the file.
#[derive(Debug, thiserror::Error)]
pub enum CaFileError {
    /// The file cannot be read.
    #[error("cannot read the CA file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file holds no `BEGIN CERTIFICATE` block.
    #[error("the CA file {path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")]
    NoCertificate { path: PathBuf },
    /// A PEM block is broken.
    #[error("the CA file {path} is not valid PEM: {reason}")]
    Malformed { path: PathBuf, reason: String },
    /// A certificate in it cannot serve as a trust root.
    #[error("the CA file {path} holds a certificate that cannot be a trust root: {reason}")]
    Unusable { path: PathBuf, reason: String },
}

/// Reads the certificates of a PEM file (one or more CA certificates), each
/// checked to be usable as a trust root.
pub(crate) fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, CaFileError> {
    let pem = std::fs::read(path).map_err(|source| CaFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| CaFileError::Malformed {
            path: path.to_owned(),
            reason: error.to_string(),
        })?;
    if certificates.is_empty() {
        return Err(CaFileError::NoCertificate {
            path: path.to_owned(),
        });
    }
    let mut scratch = RootCertStore::empty();
    for certificate in &certificates {
        scratch
            .add(certificate.clone())
            .map_err(|error| CaFileError::Unusable {
                path: path.to_owned(),
                reason: error.to_string(),
            })?;
    }
    Ok(certificates)
}

/// The system's trust store (as OpenSSL finds it: `SSL_CERT_FILE`,
/// `SSL_CERT_DIR`, or the distribution's bundle), read once per process.
fn system_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let loaded = rustls_native_certs::load_native_certs();
        for error in &loaded.errors {
            tracing::debug!(%error, "a part of the system's trust store could not be read");
        }
        tracing::debug!(
            certificates = loaded.certs.len(),
            "read the system's trust store"
        );
        loaded.certs
    })
}

/// The roots to verify against: the system's, or, on a system that has none
/// (a minimal container), the Mozilla roots compiled in; plus `extra`.
fn root_store(extra: &[CertificateDer<'static>]) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    let (_, unparsable) = roots.add_parsable_certificates(system_roots().iter().cloned());
    if unparsable > 0 {
        tracing::debug!(
            unparsable,
            "certificates of the system's trust store were skipped"
        );
    }
    if roots.is_empty() {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    // Checked as they were read (`read_ca_file`).
    roots.add_parsable_certificates(extra.iter().cloned());
    roots
}

/// rustls's WebPKI verifier, which keeps a plain-words account of its last
/// refusal.
#[derive(Debug)]
pub(crate) struct ExplainingVerifier {
    inner: Arc<WebPkiServerVerifier>,
    /// Why the last certificate was refused, until taken.
    refusal: Mutex<Option<CertificateRefusal>>,
}

impl ExplainingVerifier {
    /// Verifies against the system's roots plus `extra` (CA files), with ring.
    pub(crate) fn new(extra: &[CertificateDer<'static>]) -> Result<ExplainingVerifier, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let inner =
            WebPkiServerVerifier::builder_with_provider(Arc::new(root_store(extra)), provider)
                .build()
                .map_err(|error| error.to_string())?;
        Ok(ExplainingVerifier {
            inner,
            refusal: Mutex::new(None),
        })
    }

    /// Why the last certificate was refused, if one was since the last call.
    pub(crate) fn take_refusal(&self) -> Option<CertificateRefusal> {
        self.refusal
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

impl ServerCertVerifier for ExplainingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let result = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        );
        if let Err(rustls::Error::InvalidCertificate(reason)) = &result {
            let refusal =
                CertificateRefusal::explain(end_entity, &server_name.to_str(), reason, now);
            tracing::debug!(%refusal, ?reason, "the server's certificate was refused");
            *self.refusal.lock().unwrap_or_else(PoisonError::into_inner) = Some(refusal);
        }
        result
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

/// Why the homeserver's certificate was refused, for a person to act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateRefusal {
    /// No trusted CA issued it (a private or enterprise CA, or self-signed).
    #[error(
        "the certificate of {server} (issued by {issuer}) is not trusted: pass --ca-file with that CA, or add it to the system's trust store"
    )]
    UntrustedIssuer { server: String, issuer: String },
    /// It is for other names than the one connected to.
    #[error("the certificate presented by {server} is for {}, not {server}", NameList(.names))]
    WrongName { server: String, names: Vec<String> },
    /// Its validity ended.
    #[error("the certificate of {server} expired on {not_after} (this machine's clock says {now})")]
    Expired {
        server: String,
        not_after: String,
        now: String,
    },
    /// Its validity has not begun.
    #[error(
        "the certificate of {server} is valid only from {not_before} (this machine's clock says {now})"
    )]
    NotYetValid {
        server: String,
        not_before: String,
        now: String,
    },
    /// Anything else (revoked, wrong usage, a bad signature), as rustls puts it.
    #[error("the certificate of {server} was refused: {reason}")]
    Other { server: String, reason: String },
}

/// A list of certificate names as a sentence reads it.
struct NameList<'a>(&'a [String]);

impl fmt::Display for NameList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            [] => f.write_str("no host name"),
            names => f.write_str(&names.join(", ")),
        }
    }
}

impl CertificateRefusal {
    /// Explains rustls's `reason` for refusing `certificate` (DER) of `server`
    /// at `now`, from what the certificate says.
    pub(crate) fn explain(
        certificate: &[u8],
        server: &str,
        reason: &CertificateError,
        now: UnixTime,
    ) -> CertificateRefusal {
        let server = server.to_owned();
        let parsed = X509Certificate::from_der(certificate)
            .ok()
            .map(|(_, parsed)| parsed);
        let now_text = format_unix(now.as_secs());
        match (reason, &parsed) {
            (CertificateError::UnknownIssuer, Some(parsed)) => {
                CertificateRefusal::UntrustedIssuer {
                    server,
                    issuer: common_name_or_whole(parsed.issuer()),
                }
            }
            (
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
                Some(parsed),
            ) => CertificateRefusal::WrongName {
                server,
                names: names_of(parsed),
            },
            (CertificateError::Expired | CertificateError::ExpiredContext { .. }, Some(parsed)) => {
                CertificateRefusal::Expired {
                    server,
                    not_after: format_unix(parsed.validity().not_after.timestamp()),
                    now: now_text,
                }
            }
            (
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. },
                Some(parsed),
            ) => CertificateRefusal::NotYetValid {
                server,
                not_before: format_unix(parsed.validity().not_before.timestamp()),
                now: now_text,
            },
            (reason, _) => CertificateRefusal::Other {
                server,
                reason: rustls::Error::InvalidCertificate(reason.clone()).to_string(),
            },
        }
    }
}

/// The name's common name, or the whole name when it has none.
fn common_name_or_whole(name: &x509_parser::x509::X509Name<'_>) -> String {
    name.iter_common_name()
        .next()
        .and_then(|common_name| common_name.as_str().ok())
        .map(str::to_owned)
        .unwrap_or_else(|| name.to_string())
}

/// The host names and addresses a certificate is for (its subjectAltName
/// entries; the subject's common name when it has none, as old ones do).
fn names_of(certificate: &X509Certificate<'_>) -> Vec<String> {
    let mut names = Vec::new();
    if let Ok(Some(alternatives)) = certificate.subject_alternative_name() {
        for name in &alternatives.value.general_names {
            match name {
                GeneralName::DNSName(host) => names.push((*host).to_owned()),
                GeneralName::IPAddress(bytes) => {
                    if let Ok(octets) = <[u8; 4]>::try_from(*bytes) {
                        names.push(std::net::Ipv4Addr::from(octets).to_string());
                    } else if let Ok(octets) = <[u8; 16]>::try_from(*bytes) {
                        names.push(std::net::Ipv6Addr::from(octets).to_string());
                    }
                }
                _ => {}
            }
        }
    }
    if names.is_empty()
        && let Some(common_name) = certificate
            .subject()
            .iter_common_name()
            .next()
            .and_then(|common_name| common_name.as_str().ok())
    {
        names.push(common_name.to_owned());
    }
    names
}

/// Unix seconds as `2026-12-04 10:15:00 UTC`.
fn format_unix(seconds: impl TryInto<i64>) -> String {
    seconds
        .try_into()
        .ok()
        .and_then(|seconds| DateTime::from_timestamp(seconds, 0))
        .map(|time| time.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| "an unreadable time".to_owned())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use conclave_core::ids::Domain;
    use conclave_federation::dev_certs::{DevCertificateAuthority, VALIDITY_DAYS};

    use super::*;

    /// 2026-12-01 00:00:00 UTC.
    const MADE_AT: i64 = 1_796_083_200;

    fn pem_to_der(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
    }

    /// A CA and a certificate it issued for `chat.a.example`, in DER.
    fn issued() -> (CertificateDer<'static>, CertificateDer<'static>, String) {
        let authority = DevCertificateAuthority::generate(MADE_AT).unwrap();
        let domain: Domain = "chat.a.example".parse().unwrap();
        let certificate = authority.issue(&domain, &[]).unwrap();
        let ca = pem_to_der(&authority.certificate_pem());
        let issuer = X509Certificate::from_der(&ca)
            .map(|(_, parsed)| common_name_or_whole(parsed.subject()))
            .unwrap();
        (ca, pem_to_der(&certificate.certificate_pem), issuer)
    }

    fn at(seconds: i64) -> UnixTime {
        UnixTime::since_unix_epoch(Duration::from_secs(u64::try_from(seconds).unwrap()))
    }

    /// The verifier's answer for `certificate` at `server`, at `now`.
    fn check(
        extra: &[CertificateDer<'static>],
        certificate: &CertificateDer<'static>,
        server: &str,
        now: i64,
    ) -> Result<(), CertificateRefusal> {
        let verifier = ExplainingVerifier::new(extra).unwrap();
        let server_name = ServerName::try_from(server.to_owned()).unwrap();
        match verifier.verify_server_cert(certificate, &[], &server_name, &[], at(now)) {
            Ok(_) => {
                assert_eq!(verifier.take_refusal(), None);
                Ok(())
            }
            Err(_) => Err(verifier.take_refusal().expect("a refusal is explained")),
        }
    }

    #[test]
    fn a_certificate_of_a_given_ca_is_trusted_for_its_name_while_valid() {
        let (ca, certificate, _) = issued();
        let now = MADE_AT + 60;
        assert_eq!(check(&[ca], &certificate, "chat.a.example", now), Ok(()));
    }

    #[test]
    fn refusals_say_which_name_which_issuer_and_what_to_do() {
        let (ca, certificate, issuer) = issued();
        let now = MADE_AT + 60;

        let refusal = check(&[], &certificate, "chat.a.example", now).unwrap_err();
        assert_eq!(
            refusal,
            CertificateRefusal::UntrustedIssuer {
                server: "chat.a.example".into(),
                issuer: issuer.clone(),
            }
        );
        assert!(issuer.starts_with("Conclave development CA "), "{issuer}");
        assert_eq!(
            refusal.to_string(),
            format!(
                "the certificate of chat.a.example (issued by {issuer}) is not trusted: pass --ca-file with that CA, or add it to the system's trust store"
            )
        );

        let refusal = check(
            std::slice::from_ref(&ca),
            &certificate,
            "chat.b.example",
            now,
        )
        .unwrap_err();
        assert_eq!(
            refusal.to_string(),
            "the certificate presented by chat.b.example is for chat.a.example, not chat.b.example"
        );

        let later = MADE_AT + VALIDITY_DAYS * 24 * 3600 + 3600;
        let refusal = check(
            std::slice::from_ref(&ca),
            &certificate,
            "chat.a.example",
            later,
        )
        .unwrap_err();
        assert!(
            matches!(refusal, CertificateRefusal::Expired { .. }),
            "{refusal}"
        );
        let message = refusal.to_string();
        assert!(
            message.starts_with("the certificate of chat.a.example expired on "),
            "{message}"
        );
        assert!(message.contains("this machine's clock says"), "{message}");

        let earlier = MADE_AT - 2 * 24 * 3600;
        let refusal = check(&[ca], &certificate, "chat.a.example", earlier).unwrap_err();
        assert!(
            refusal
                .to_string()
                .starts_with("the certificate of chat.a.example is valid only from "),
            "{refusal}"
        );
    }

    #[test]
    fn times_read_as_dates() {
        assert_eq!(format_unix(MADE_AT), "2026-12-01 00:00:00 UTC");
        assert_eq!(format_unix(u64::MAX), "an unreadable time");
    }

    #[test]
    fn ca_files_are_checked_when_read() {
        let directory = tempfile::tempdir().unwrap();
        let authority = DevCertificateAuthority::generate(MADE_AT).unwrap();
        let good = directory.path().join("ca.pem");
        std::fs::write(&good, authority.certificate_pem()).unwrap();
        assert_eq!(read_ca_file(&good).unwrap().len(), 1);

        let missing = directory.path().join("missing.pem");
        let error = read_ca_file(&missing).unwrap_err();
        assert!(matches!(error, CaFileError::Read { .. }), "{error}");
        assert!(error.to_string().contains("missing.pem"), "{error}");

        let empty = directory.path().join("empty.pem");
        std::fs::write(&empty, "no certificate here\n").unwrap();
        let error = read_ca_file(&empty).unwrap_err();
        assert!(
            matches!(error, CaFileError::NoCertificate { .. }),
            "{error}"
        );

        let broken = directory.path().join("broken.pem");
        std::fs::write(
            &broken,
            "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let error = read_ca_file(&broken).unwrap_err();
        assert!(
            matches!(
                error,
                CaFileError::Malformed { .. } | CaFileError::Unusable { .. }
            ),
            "{error}"
        );
    }
}
