//! The key-package directory: devices upload verified KeyPackages; claimers get one
//! per device of a user, each ordinary package handed out exactly once. A claim
//! for a user of another domain is forwarded to that domain's homeserver, for the
//! calling device.
//!
//! # Layout
//! One use case per file: `upload`, `stock`, `claim` (a device's claim, served
//! from this directory), `forward_claim` (a device's claim for a user of another
//! domain, through its homeserver), `claim_for_peer` (a peer's claim for a user of
//! this domain); and `low_stock`, the periodic count of devices low on packages
//! for the metrics. This module holds what they share: the error, the claimed
//! package, the claim rate limit.

mod claim;
mod claim_for_peer;
mod forward_claim;
pub(crate) mod low_stock;
mod stock;
mod upload;

pub(crate) use claim::claim;
pub(crate) use claim_for_peer::claim_for_peer;
pub(crate) use stock::{stock, stock_of};
pub(crate) use upload::{UploadError, upload};

pub(crate) use crate::rules::key_package_stock::KeyPackageStock;

use super::Context;
use crate::metrics::RateLimit;
use crate::rules::cipher_suites::SuiteRefusal;
use crate::rules::key_package_claim::ClaimRefusal;
use crate::store::{ClaimedKeyPackage, StoreError};
use conclave_core::ids::{CredentialIdentity, IdError, UserId};
use conclave_core::mls::{CipherSuite, UnknownCipherSuite};
use conclave_federation::client::CallError;

/// Why a claim of a user's KeyPackages failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClaimError {
    /// The claimed user id is malformed.
    #[error(transparent)]
    InvalidUserId(#[from] IdError),
    /// No such user on this homeserver.
    #[error("user {0} does not exist")]
    UnknownUser(UserId),
    /// The user's domain is not served here, nor reachable from here.
    #[error(transparent)]
    Refused(#[from] ClaimRefusal),
    /// The user's homeserver could not be reached, or refused.
    #[error(transparent)]
    Remote(#[from] CallError),
    /// The claim names a cipher suite number Conclave does not speak.
    #[error(transparent)]
    UnknownSuite(#[from] UnknownCipherSuite),
    /// This homeserver (or, for a forwarded claim, the user's) does not offer
    /// the suite.
    #[error(transparent)]
    SuiteRefused(#[from] SuiteRefusal),
    /// A device of the user has key packages, but none of the suite (its client
    /// does not support it): the group cannot add it, so nothing is handed out.
    #[error("{identity} has no key package for cipher suite {suite}")]
    NoPackageInSuite {
        identity: CredentialIdentity,
        suite: CipherSuite,
    },
    /// A peer answered a claim for one suite with packages of another (a peer
    /// that predates suites ignores the field and hands out classic ones).
    #[error(
        "{domain} does not offer cipher suite {suite}: it answered with a key package of {found}"
    )]
    PeerSuiteMismatch {
        domain: String,
        suite: CipherSuite,
        found: String,
    },
    /// The caller claims too often.
    #[error("too many key-package claims: at most {per_minute} per minute; retry later")]
    RateLimited { per_minute: u32 },
    /// The database failed, or holds a value that does not fit its type.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One device's package, as handed to a claimer.
#[derive(Debug)]
pub(crate) struct DeviceKeyPackage {
    pub(crate) identity: CredentialIdentity,
    pub(crate) signature_public_key: Vec<u8>,
    pub(crate) package: ClaimedKeyPackage,
}

/// Counts one claim of `claimer` (keyed by its full credential identity, so local
/// devices and devices of each peer domain never share a count).
pub(super) async fn check_claim_rate(
    context: &Context,
    claimer: &CredentialIdentity,
) -> Result<(), ClaimError> {
    context
        .claim_limiter
        .check(&claimer.to_string(), context.now_ms())
        .await
        .map_err(|_| {
            context.metrics.count_rejection(RateLimit::KeyPackageClaims);
            ClaimError::RateLimited {
                per_minute: context.config.key_packages.claims_per_minute,
            }
        })
}
