//! The openmls core of the client: device signature keys, credentials, key
//! packages and groups, made and checked with no network and no clock of their
//! own (the provider brings crypto and storage; time comes in as an argument).
//! Each function turns inputs into outputs (bytes to send, a decision about what
//! arrived); `client` moves the bytes and keeps the books.
//!
//! - `identity`: signature keys and credentials.
//! - `key_packages`: building this device's key packages, checking claimed ones.
//! - `config`: leaf capabilities and the create/join configuration of groups.
//! - `metadata`: the group name, carried in a group-context extension.
//! - `envelope`: the plaintext format of application messages.
//! - `group`: creating a group, commits, proposals, application messages, members.
//! - `incoming`: applying what the hub delivers; joining by Welcome or external
//!   commit.
//! - `membership`: the membership changes a commit makes (joined, left, removed,
//!   rotated, rejoined), read before it is merged.

mod config;
mod envelope;
mod group;
mod identity;
mod incoming;
mod key_packages;
mod membership;
mod metadata;

pub use envelope::MessageBody;
pub use membership::MembershipKind;

pub(crate) use envelope::{decode as decode_envelope, encode_text, from_stored, to_stored};
pub(crate) use group::{
    CommitKind, build_commit, create_group, create_group_with_id, delete_group, discard_own_commit,
    discard_own_leave, encrypt, group_cipher_suite, has_proposals_to_commit, is_leaving,
    leave_proposal, leaves_proposed_for_removal, load_group, members, merge_own_commit, metadata,
};
pub(crate) use identity::{credential_with_key, generate_signer, sign_enrolment};
pub(crate) use incoming::{
    Incoming, join_by_external_commit, join_from_welcome, message_epoch, own_commit_changes,
    process_group_message,
};
pub(crate) use key_packages::{
    KEY_PACKAGE_LIFETIME_SECONDS, build_key_packages, forget_key_packages,
    verify_claimed_key_package,
};
pub(crate) use membership::Change;
pub(crate) use metadata::check_group_name;

use conclave_core::ids::CredentialIdentity;
use openmls::prelude::tls_codec;
use openmls::prelude::{BasicCredential, Credential, KeyPackageNewError, LibraryError};
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
    /// The device's proof of possession at enrolment could not be made.
    #[error("cannot sign the enrolment: {0}")]
    SignEnrolment(#[from] conclave_core::enrolment::PossessionError),
    /// A group operation failed in openmls, or its input (from the hub) is
    /// malformed; `reason` is openmls's message or ours.
    #[error("cannot {operation}: {reason}")]
    Group {
        /// What was being done, as in "cannot {operation}".
        operation: &'static str,
        reason: String,
    },
}

impl MlsError {
    pub(crate) fn group(operation: &'static str, reason: impl std::fmt::Display) -> MlsError {
        MlsError::Group {
            operation,
            reason: reason.to_string(),
        }
    }
}

/// The device a leaf's credential names (`name@domain/device_id` in a
/// BasicCredential), or `None`.
pub(crate) fn device_identity(credential: &Credential) -> Option<CredentialIdentity> {
    let basic = BasicCredential::try_from(credential.clone()).ok()?;
    CredentialIdentity::from_bytes(basic.identity()).ok()
}
