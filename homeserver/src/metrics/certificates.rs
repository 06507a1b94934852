//! When certificates expire: this server's own (per TLS listener), read once
//! at start, for `conclave_tls_certificate_expiry_timestamp_seconds`.

use super::{ListenerLabels, Metrics};

/// The notAfter of the DER certificate `der`, in seconds since the Unix epoch;
/// `None` if it does not parse as X.509.
pub(crate) fn not_after_unix_seconds(der: &[u8]) -> Option<i64> {
    let (_, certificate) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(certificate.validity().not_after.timestamp())
}

/// The end-entity (first) certificate of the PEM chain `pem`, as DER.
fn first_pem_certificate(pem: &[u8]) -> Option<Vec<u8>> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let first = CertificateDer::pem_slice_iter(pem).next()?.ok()?;
    Some(first.to_vec())
}

impl Metrics {
    /// Sets `listener`'s certificate expiry from its end-entity certificate
    /// (DER); logs and leaves the gauge out if it does not parse (the TLS
    /// setup, which reads it too, reports the real problem).
    pub(crate) fn set_own_certificate_expiry(&self, listener: &'static str, der: &[u8]) {
        match not_after_unix_seconds(der) {
            Some(not_after) => {
                self.tls_certificate_expiry
                    .get_or_create(&ListenerLabels { listener })
                    .set(not_after);
            }
            None => {
                tracing::warn!(
                    listener,
                    "cannot read the expiry of this server's certificate"
                );
            }
        }
    }

    /// [`Metrics::set_own_certificate_expiry`] from a PEM chain (the client
    /// API's certificate file).
    pub(crate) fn set_own_certificate_expiry_pem(&self, listener: &'static str, pem: &[u8]) {
        match first_pem_certificate(pem) {
            Some(der) => self.set_own_certificate_expiry(listener, &der),
            None => {
                tracing::warn!(
                    listener,
                    "cannot read the expiry of this server's certificate"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_expiry_is_the_certificates_not_after() {
        let mut params = rcgen::CertificateParams::new(vec!["a.example".to_owned()]).unwrap();
        params.not_after = rcgen::date_time_ymd(2031, 7, 1);
        let key = rcgen::KeyPair::generate().unwrap();
        let certificate = params.self_signed(&key).unwrap();
        // 2031-07-01T00:00:00Z
        let expected = 1_940_630_400;
        assert_eq!(not_after_unix_seconds(certificate.der()), Some(expected));
        assert_eq!(
            first_pem_certificate(certificate.pem().as_bytes()),
            Some(certificate.der().to_vec())
        );
        assert_eq!(not_after_unix_seconds(b"not a certificate"), None);
        assert_eq!(first_pem_certificate(b"no PEM here"), None);
    }
}
