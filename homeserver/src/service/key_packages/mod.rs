//! The key-package directory: devices upload verified KeyPackages; claimers get one
//! per device of a user, each ordinary package handed out exactly once. A claim
//! for a user of another domain is forwarded to that domain's homeserver, for the
//! calling device.
//!
//! # Layout
//! One use case per file: `upload`, `stock`, `claim` (a device's claim, served
//! from this directory), `forward_claim` (a device's claim for a user of another
//! domain, through its homeserver), `claim_for_peer` (a peer's claim for a user of
//! this domain). This module holds what they share: the error, the claimed
//! package, the claim rate limit.

mod claim;
mod claim_for_peer;
mod forward_claim;
mod stock;
mod upload;

pub(crate) use claim::claim;
pub(crate) use claim_for_peer::claim_for_peer;
pub(crate) use stock::{stock, stock_of};
pub(crate) use upload::upload;

use super::accounts::AccountError;
use super::{Context, InternalError};
use crate::rules::key_package_upload::UploadRejection;
use crate::store::{ClaimedKeyPackage, StoreError};
use conclave_core::ids::{CredentialIdentity, IdError, UserId};
use conclave_federation::client::CallError;

/// Why a key-package request failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum KeyPackageServiceError {
    /// The upload was refused; nothing of it was stored.
    #[error(transparent)]
    Rejected(#[from] UploadRejection),
    /// The claimed user id is malformed.
    #[error(transparent)]
    InvalidUserId(#[from] IdError),
    /// No such user on this homeserver.
    #[error("user {0} does not exist")]
    UnknownUser(String),
    /// The user belongs to another domain, and this homeserver does not federate
    /// (or a peer asked: peers are answered for this domain only, never relayed).
    #[error("user {user} is on domain {domain}, and this homeserver serves only {own}")]
    ForeignUser {
        user: String,
        domain: String,
        own: String,
    },
    /// The user's homeserver is not a peer, could not be reached, or refused.
    #[error(transparent)]
    Remote(#[from] CallError),
    /// The caller claims too often.
    #[error("too many key-package claims: at most {per_minute} per minute; retry later")]
    RateLimited { per_minute: u32 },
    #[error(transparent)]
    Internal(#[from] InternalError),
}

impl From<StoreError> for KeyPackageServiceError {
    fn from(error: StoreError) -> Self {
        KeyPackageServiceError::Internal(error.into())
    }
}

impl From<AccountError> for KeyPackageServiceError {
    fn from(error: AccountError) -> Self {
        match error {
            AccountError::Internal(internal) => KeyPackageServiceError::Internal(internal),
            other => KeyPackageServiceError::Internal(InternalError::Corrupt(other.to_string())),
        }
    }
}

/// One device's package, as handed to a claimer.
#[derive(Debug)]
pub(crate) struct DeviceKeyPackage {
    pub(crate) identity: CredentialIdentity,
    pub(crate) signature_public_key: Vec<u8>,
    pub(crate) package: ClaimedKeyPackage,
}

pub(super) fn foreign_user(context: &Context, user_id: &UserId) -> KeyPackageServiceError {
    KeyPackageServiceError::ForeignUser {
        user: user_id.to_string(),
        domain: user_id.domain().to_string(),
        own: context.domain.to_string(),
    }
}

/// Counts one claim of `claimer` (keyed by its full credential identity, so local
/// devices and devices of each peer domain never share a count).
pub(super) fn check_claim_rate(
    context: &Context,
    claimer: &CredentialIdentity,
) -> Result<(), KeyPackageServiceError> {
    context
        .claim_limiter
        .check_key(&claimer.to_string())
        .map_err(|_| KeyPackageServiceError::RateLimited {
            per_minute: context.config.key_packages.claims_per_minute,
        })
}
