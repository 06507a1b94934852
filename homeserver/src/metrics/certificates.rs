//! This server's own certificates (per TLS listener), as loaded at start and
//! by each reload: `conclave_tls_certificate_expiry_timestamp_seconds`,
//! `conclave_tls_certificate_loaded_timestamp_seconds` and
//! `conclave_tls_reload_failures_total`.

use super::{ListenerLabels, Metrics};

/// The notAfter of the DER certificate `der`, in seconds since the Unix epoch;
/// `None` if it does not parse as X.509.
pub(crate) fn not_after_unix_seconds(der: &[u8]) -> Option<i64> {
    let (_, certificate) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(certificate.validity().not_after.timestamp())
}

impl Metrics {
    /// The notAfter (seconds since the Unix epoch) of the certificate each of
    /// `listeners` serves, for those that loaded one.
    pub(crate) fn tls_certificate_expiries(
        &self,
        listeners: &[&'static str],
    ) -> Vec<(&'static str, i64)> {
        listeners
            .iter()
            .filter_map(|&listener| {
                let expiry = self
                    .tls_certificate_expiry
                    .get(&ListenerLabels { listener })?;
                Some((listener, expiry.get()))
            })
            .collect()
    }

    /// `listener` now serves the end-entity certificate `der` (DER), loaded at
    /// `now_ms`: sets its expiry and its load time. Logs and leaves the
    /// expiry as it was if the certificate does not parse (rustls accepted
    /// it, so this does not happen with a real certificate). Also makes the
    /// listener's failure counter show, at 0 until a reload fails.
    pub(crate) fn record_tls_certificate_loaded(
        &self,
        listener: &'static str,
        der: &[u8],
        now_ms: i64,
    ) {
        let labels = ListenerLabels { listener };
        match not_after_unix_seconds(der) {
            Some(not_after) => {
                self.tls_certificate_expiry
                    .get_or_create(&labels)
                    .set(not_after);
            }
            None => {
                tracing::warn!(
                    listener,
                    "cannot read the expiry of this server's certificate"
                );
            }
        }
        self.tls_certificate_loaded
            .get_or_create(&labels)
            .set(now_ms.div_euclid(1000));
        // Created at 0 (the guard only locks the family while held).
        drop(self.tls_reload_failures.get_or_create(&labels));
    }

    /// New TLS files of `listener` could not be used.
    pub(crate) fn count_tls_reload_failure(&self, listener: &'static str) {
        self.tls_reload_failures
            .get_or_create(&ListenerLabels { listener })
            .inc();
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
        assert_eq!(not_after_unix_seconds(b"not a certificate"), None);
    }

    #[test]
    fn a_load_sets_expiry_and_load_time_and_shows_the_failures() {
        let mut params = rcgen::CertificateParams::new(vec!["a.example".to_owned()]).unwrap();
        params.not_after = rcgen::date_time_ymd(2031, 7, 1);
        let key = rcgen::KeyPair::generate().unwrap();
        let certificate = params.self_signed(&key).unwrap();
        let metrics = Metrics::new();
        let labels = ListenerLabels {
            listener: "federation",
        };
        metrics.record_tls_certificate_loaded("federation", certificate.der(), 1_700_000_000_999);
        assert_eq!(
            metrics.tls_certificate_expiry.get_or_create(&labels).get(),
            1_940_630_400
        );
        assert_eq!(
            metrics.tls_certificate_loaded.get_or_create(&labels).get(),
            1_700_000_000
        );
        assert_eq!(metrics.tls_reload_failures.get_or_create(&labels).get(), 0);
        metrics.count_tls_reload_failure("federation");
        assert_eq!(metrics.tls_reload_failures.get_or_create(&labels).get(), 1);
        // A certificate that does not parse leaves the expiry as it was.
        metrics.record_tls_certificate_loaded("federation", b"garbage", 1_700_000_060_000);
        assert_eq!(
            metrics.tls_certificate_expiry.get_or_create(&labels).get(),
            1_940_630_400
        );
    }
}
