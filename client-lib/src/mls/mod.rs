//! The openmls core of the client: device signature keys, credentials, and key
//! packages, made and checked with no network and no clock of their own (the
//! provider brings crypto and storage; time comes in as an argument).
//!
//! The group operations of a later issue belong here too, beside these, so that
//! `client` stays a thin layer that moves bytes between this core and the server.

mod identity;
mod key_packages;

pub(crate) use identity::{credential_with_key, generate_signer};
pub(crate) use key_packages::{
    KEY_PACKAGE_LIFETIME_SECONDS, build_key_packages, forget_key_packages,
    verify_claimed_key_package,
};

use openmls::prelude::tls_codec;
use openmls::prelude::{KeyPackageNewError, LibraryError};
use openmls_traits::types::CryptoError;

/// Why an MLS operation on this device failed.
#[derive(Debug, thiserror::Error)]
pub enum MlsError {
    /// The crypto provider could not generate the device's signature key pair.
    #[error("cannot generate a signature key pair: {0}")]
    GenerateSigner(CryptoError),
    /// openmls refused to build a key package.
    #[error("cannot build a key package: {0}")]
    BuildKeyPackage(#[from] KeyPackageNewError),
    /// A key package could not be TLS-encoded for upload.
    #[error("cannot encode a key package: {0}")]
    Encode(#[from] tls_codec::Error),
    /// The KeyPackageRef of a new package could not be computed.
    #[error("cannot compute a key package reference: {0}")]
    HashRef(LibraryError),
    /// Reading or writing the openmls storage failed.
    #[error("MLS storage error: {0}")]
    Storage(#[from] rusqlite::Error),
}
