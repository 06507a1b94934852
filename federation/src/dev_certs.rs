//! Development certificates: a throwaway CA and a certificate per domain, so that
//! federation can be tried on one machine (`conclave-homeserver dev-certs`) and
//! tests can make their own PKI. ECDSA P-256 keys, generated with rcgen on ring.
//!
//! Not for production: the CA's key exists only in memory and is discarded, so the
//! CA can certify nothing later; a real deployment uses certificates from its
//! organisation's CA (or any CA the peers agree to trust).

use crate::peers::CertificatePin;
use conclave_core::ids::Domain;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use sha2::{Digest, Sha256};
use std::net::IpAddr;
use time::OffsetDateTime;

/// How long development certificates are valid.
pub const VALIDITY_DAYS: i64 = 365;
/// How far back `not_before` is set, so that a peer whose clock is a little behind
/// accepts a certificate made just now.
const CLOCK_SKEW_SECONDS: i64 = 3600;

/// Why certificates could not be made.
#[derive(Debug, thiserror::Error)]
pub enum DevCertError {
    /// rcgen failed (key generation, encoding, a name it cannot encode).
    #[error("cannot generate a certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// The time given is outside what a certificate can express.
    #[error("the current time {0} is out of range for a certificate")]
    Time(i64),
}

/// A development CA. It lives only as long as this value.
pub struct DevCertificateAuthority {
    issuer: CertifiedIssuer<'static, KeyPair>,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
}

/// A certificate and key for one domain, as PEM.
pub struct DevCertificate {
    pub domain: Domain,
    pub certificate_pem: String,
    pub private_key_pem: String,
    /// SHA-256 of the certificate's DER encoding, for `pinned_sha256`.
    pub pin: CertificatePin,
}

impl DevCertificateAuthority {
    /// A new CA, valid from shortly before `now_unix_seconds` for
    /// [`VALIDITY_DAYS`]. Its name carries a fingerprint of its key, so two
    /// development CAs are easy to tell apart.
    pub fn generate(now_unix_seconds: i64) -> Result<DevCertificateAuthority, DevCertError> {
        let not_before = OffsetDateTime::from_unix_timestamp(now_unix_seconds - CLOCK_SKEW_SECONDS)
            .map_err(|_| DevCertError::Time(now_unix_seconds))?;
        let not_after =
            OffsetDateTime::from_unix_timestamp(now_unix_seconds + VALIDITY_DAYS * 24 * 3600)
                .map_err(|_| DevCertError::Time(now_unix_seconds))?;
        let key = KeyPair::generate()?;
        let fingerprint = hex::encode(&Sha256::digest(key.public_key_raw())[..4]);
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(
            DnType::CommonName,
            format!("Conclave development CA {fingerprint}"),
        );
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = not_before;
        params.not_after = not_after;
        Ok(DevCertificateAuthority {
            issuer: CertifiedIssuer::self_signed(params, key)?,
            not_before,
            not_after,
        })
    }

    /// The CA certificate, PEM: the `trust_roots` file of every homeserver.
    pub fn certificate_pem(&self) -> String {
        self.issuer.pem()
    }

    /// A certificate for `domain` (SAN dNSName, plus an iPAddress SAN for each of
    /// `ip_addresses`), usable both as server and as client certificate.
    pub fn issue(
        &self,
        domain: &Domain,
        ip_addresses: &[IpAddr],
    ) -> Result<DevCertificate, DevCertError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![domain.to_string()])?;
        params
            .subject_alt_names
            .extend(ip_addresses.iter().copied().map(SanType::IpAddress));
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, domain.to_string());
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.not_before = self.not_before;
        params.not_after = self.not_after;
        let certificate = params.signed_by(&key, &self.issuer)?;
        Ok(DevCertificate {
            domain: domain.clone(),
            certificate_pem: certificate.pem(),
            private_key_pem: key.serialize_pem(),
            pin: CertificatePin::of(certificate.der()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{is_valid_for, presented_dns_names};
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;

    #[test]
    fn certificates_name_their_domain_and_addresses() {
        let now = 1_800_000_000;
        let authority = DevCertificateAuthority::generate(now).unwrap();
        let domain: Domain = "b.example".parse().unwrap();
        let issued = authority
            .issue(&domain, &["127.0.0.2".parse().unwrap()])
            .unwrap();
        let der = CertificateDer::from_pem_slice(issued.certificate_pem.as_bytes()).unwrap();
        assert!(is_valid_for(&der, &domain).unwrap());
        assert!(!is_valid_for(&der, &"c.example".parse().unwrap()).unwrap());
        assert_eq!(presented_dns_names(&der), ["b.example"]);
        assert_eq!(issued.pin, CertificatePin::of(&der));
        assert!(issued.private_key_pem.contains("PRIVATE KEY"));
        // Two authorities are two different CAs.
        let other = DevCertificateAuthority::generate(now).unwrap();
        assert_ne!(other.certificate_pem(), authority.certificate_pem());
    }

    #[test]
    fn times_out_of_range_are_refused() {
        assert!(matches!(
            DevCertificateAuthority::generate(i64::MAX / 2),
            Err(DevCertError::Time(_))
        ));
    }
}
