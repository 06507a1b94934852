//! The MLS parameters every Conclave device and homeserver uses: the cipher
//! suites Conclave speaks, the group metadata extension, the verification crypto.

use std::fmt;
use std::str::FromStr;

use openmls::prelude::Ciphersuite;

/// The classic cipher suite, and the one a group gets unless its creator asks for
/// another: RFC 9420's mandatory-to-implement suite 1,
/// MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519.
pub const CIPHERSUITE: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;

/// The post-quantum cipher suite 0x004F of draft-ietf-mls-pq-ciphersuites,
/// MLS_128_MLKEM768X25519_AES128GCM_SHA256_Ed25519: suite 1 with the hybrid KEM
/// ML-KEM-768 + X25519 for HPKE, so a recorded group's secrets resist a future
/// quantum computer as long as either KEM holds. Signatures stay Ed25519, so a
/// device's one signature key and credential serve groups of both suites.
pub const POST_QUANTUM_CIPHERSUITE: Ciphersuite =
    Ciphersuite::MLS_128_MLKEM768X25519_AES128GCM_SHA256_Ed25519;

/// A cipher suite Conclave speaks. Every group has exactly one, chosen at its
/// creation; a device can join it only with a key package of that suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CipherSuite {
    /// [`CIPHERSUITE`], suite 0x0001.
    Classic,
    /// [`POST_QUANTUM_CIPHERSUITE`], suite 0x004F.
    PostQuantum,
}

/// Every suite Conclave speaks, classic first.
pub const ALL_CIPHER_SUITES: [CipherSuite; 2] = [CipherSuite::Classic, CipherSuite::PostQuantum];

/// A cipher suite number Conclave does not speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "cipher suite {found:#06x} is not one conclave speaks: 0x0001 (classic, MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519) or 0x004f (pq, MLS_128_MLKEM768X25519_AES128GCM_SHA256_Ed25519)"
)]
pub struct UnknownCipherSuite {
    /// The number found.
    pub found: u32,
}

/// A suite name that is neither `classic` nor `pq`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown cipher suite {0:?}: expected classic or pq")]
pub struct UnknownCipherSuiteName(pub String);

impl CipherSuite {
    /// The openmls suite.
    pub const fn ciphersuite(self) -> Ciphersuite {
        match self {
            CipherSuite::Classic => CIPHERSUITE,
            CipherSuite::PostQuantum => POST_QUANTUM_CIPHERSUITE,
        }
    }

    /// The suite's IANA number: 0x0001 or 0x004F.
    pub const fn id(self) -> u16 {
        match self {
            CipherSuite::Classic => 0x0001,
            CipherSuite::PostQuantum => 0x004f,
        }
    }

    /// The short name configurations and the command line use: `classic`, `pq`.
    pub const fn short_name(self) -> &'static str {
        match self {
            CipherSuite::Classic => "classic",
            CipherSuite::PostQuantum => "pq",
        }
    }

    /// The suite's registered name, such as
    /// `MLS_128_MLKEM768X25519_AES128GCM_SHA256_Ed25519`.
    pub const fn name(self) -> &'static str {
        match self {
            CipherSuite::Classic => "MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519",
            CipherSuite::PostQuantum => "MLS_128_MLKEM768X25519_AES128GCM_SHA256_Ed25519",
        }
    }

    /// Whether the suite's KEM resists a quantum computer.
    pub const fn is_post_quantum(self) -> bool {
        matches!(self, CipherSuite::PostQuantum)
    }

    /// The suite of an IANA number, if Conclave speaks it.
    pub fn from_id(id: u16) -> Result<CipherSuite, UnknownCipherSuite> {
        ALL_CIPHER_SUITES
            .into_iter()
            .find(|suite| suite.id() == id)
            .ok_or(UnknownCipherSuite {
                found: u32::from(id),
            })
    }

    /// The suite of a protobuf `cipher_suite` field: 0 (the field left unset, as
    /// by a client or peer that predates suites) means classic.
    pub fn from_wire(value: u32) -> Result<CipherSuite, UnknownCipherSuite> {
        if value == 0 {
            return Ok(CipherSuite::Classic);
        }
        u16::try_from(value)
            .map_err(|_| UnknownCipherSuite { found: value })
            .and_then(CipherSuite::from_id)
            .map_err(|_| UnknownCipherSuite { found: value })
    }

    /// The value of a protobuf `cipher_suite` field: the IANA number.
    pub const fn to_wire(self) -> u32 {
        self.id() as u32
    }

    /// The Conclave suite of an openmls suite, if Conclave speaks it.
    pub fn from_ciphersuite(ciphersuite: Ciphersuite) -> Result<CipherSuite, UnknownCipherSuite> {
        CipherSuite::from_id(u16::from(ciphersuite))
    }
}

/// `0x004f (MLS_128_MLKEM768X25519_AES128GCM_SHA256_Ed25519)`: how messages name a
/// suite.
impl fmt::Display for CipherSuite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#06x} ({})", self.id(), self.name())
    }
}

impl FromStr for CipherSuite {
    type Err = UnknownCipherSuiteName;

    /// `classic` or `pq`.
    fn from_str(name: &str) -> Result<CipherSuite, UnknownCipherSuiteName> {
        ALL_CIPHER_SUITES
            .into_iter()
            .find(|suite| suite.short_name() == name)
            .ok_or_else(|| UnknownCipherSuiteName(name.to_owned()))
    }
}

/// Length in bytes of an Ed25519 public key, the signature key of every suite
/// Conclave speaks.
pub const SIGNATURE_PUBLIC_KEY_LENGTH: usize = 32;

/// The extension type of Conclave's group metadata (the group's name, a
/// private-use group-context extension, RFC 9420 §17.3) that every Conclave group
/// carries. RFC 9420 §12.1.1 lets a group add only members whose leaf lists every
/// extension of its context in its capabilities, so a KeyPackage without it could
/// never be added to any group and is refused at upload.
pub const GROUP_METADATA_EXTENSION_TYPE: u16 = 0xf0c1;

/// Crypto provider used only for verification: signature checks and hashes, with no
/// key storage. Making one reads a seed from the OS for an RNG that verification
/// never uses, so it is cheap enough to make where it is needed.
pub fn verification_crypto() -> openmls_rust_crypto::RustCrypto {
    openmls_rust_crypto::RustCrypto::default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suites_round_trip_through_every_form() {
        for suite in ALL_CIPHER_SUITES {
            assert_eq!(CipherSuite::from_id(suite.id()), Ok(suite));
            assert_eq!(CipherSuite::from_wire(suite.to_wire()), Ok(suite));
            assert_eq!(
                CipherSuite::from_ciphersuite(suite.ciphersuite()),
                Ok(suite)
            );
            assert_eq!(suite.short_name().parse::<CipherSuite>(), Ok(suite));
            assert_eq!(u16::from(suite.ciphersuite()), suite.id());
        }
        assert_eq!(CipherSuite::from_wire(0), Ok(CipherSuite::Classic));
        assert_eq!(
            CipherSuite::PostQuantum.to_string(),
            "0x004f (MLS_128_MLKEM768X25519_AES128GCM_SHA256_Ed25519)"
        );
    }

    #[test]
    fn unknown_suites_are_refused() {
        assert_eq!(
            CipherSuite::from_wire(2),
            Err(UnknownCipherSuite { found: 2 })
        );
        assert_eq!(
            CipherSuite::from_wire(0x1_0001),
            Err(UnknownCipherSuite { found: 0x1_0001 })
        );
        assert!("quantum".parse::<CipherSuite>().is_err());
        assert!(
            CipherSuite::from_ciphersuite(Ciphersuite::MLS_128_DHKEMP256_AES128GCM_SHA256_P256)
                .is_err()
        );
    }
}
