//! The MLS parameters every Conclave device and homeserver uses.

use openmls::prelude::Ciphersuite;

/// The one cipher suite Conclave speaks: RFC 9420's mandatory-to-implement suite 1,
/// MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519. One suite keeps every group
/// joinable by every device.
pub const CIPHERSUITE: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;

/// Length in bytes of an Ed25519 public key, the signature key of [`CIPHERSUITE`].
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
