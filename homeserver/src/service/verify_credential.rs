//! What peers of other domains ask this homeserver as its domain's Authentication
//! Service: is this credential identity and signature key one of our devices?
//! (Their key-package claims go through the directory, `key_packages::claim_for_peer`.)
//! The grpc layer has already checked that the peer may act for the domain the
//! request names.

use super::Context;
use crate::rules::credential_check::{CredentialCheckRejection, check_credential_query};
use crate::store::{self, StoreError};
use conclave_core::ids::{CredentialIdentity, IdError};

/// Why a credential check was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CredentialCheckError {
    /// The identity is not `name@domain/device_id`.
    #[error(transparent)]
    InvalidIdentity(#[from] IdError),
    /// The identity is of another domain, or there is no key to compare.
    #[error(transparent)]
    Rejected(#[from] CredentialCheckRejection),
    /// The database failed, or holds a value that does not fit its type.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The answer to a peer's credential check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CredentialVerdict {
    /// The identity is a current device of this domain with exactly that key.
    pub(crate) registered: bool,
    /// The key package asked about is one of that device's and was handed out.
    pub(crate) key_package_claimed: bool,
}

/// Checks that `identity` is a current device of this domain enrolled with
/// exactly `signature_public_key` and, if `key_package_ref` is given, that the
/// directory handed that package of the device out.
pub(crate) async fn verify_credential(
    context: &Context,
    identity: &str,
    signature_public_key: &[u8],
    key_package_ref: Option<&[u8]>,
) -> Result<CredentialVerdict, CredentialCheckError> {
    let identity: CredentialIdentity = identity.parse()?;
    check_credential_query(&identity, signature_public_key, &context.domain)?;
    let connection = &context.store;
    let device_id = identity.device_id().as_str();
    let registered = store::device_has_key(
        connection,
        device_id,
        identity.user_id().username().as_str(),
        signature_public_key,
    )
    .await?;
    // A package is only asked about for a registered device: for any other,
    // the answer is no without a query.
    let key_package_claimed = match key_package_ref {
        Some(hash_ref) if registered => {
            store::key_package_was_claimed(connection, hash_ref, device_id).await?
        }
        _ => false,
    };
    Ok(CredentialVerdict {
        registered,
        key_package_claimed,
    })
}
