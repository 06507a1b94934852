//! The key-package directory: devices upload verified KeyPackages; claimers get one
//! per device of a user, each ordinary package handed out exactly once. A claim
//! for a user of another domain is forwarded to that domain's homeserver, for the
//! calling device.

use super::accounts::{AccountError, AuthenticatedDevice, identity_of};
use super::{Context, InternalError};
use crate::rules::key_package_upload::{
    UploadRejection, VerifiedUpload, check_not_stored, verify_upload,
};
use crate::store::{self, ClaimedKeyPackage, KeyPackageStock, NewKeyPackage, StoreError};
use conclave_core::ids::{CredentialIdentity, IdError, UserId};
use conclave_core::key_package::{ExpectedOwner, KeyPackagePolicy, VerifiedKeyPackage};
use conclave_federation::client::{CallError, FederationClient};
use conclave_federation::peers::UnknownPeer;

const SECONDS_PER_DAY: u64 = 24 * 60 * 60;

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

/// Verifies and stores a batch from the calling device: all of it, or nothing.
pub(crate) async fn upload(
    context: &Context,
    device: &AuthenticatedDevice,
    ordinary: Vec<Vec<u8>>,
    last_resort: Option<Vec<u8>>,
) -> Result<KeyPackageStock, KeyPackageServiceError> {
    let now_ms = context.now_ms();
    let policy = KeyPackagePolicy {
        now_unix_seconds: u64::try_from(now_ms / 1000).unwrap_or(0),
        max_lifetime_seconds: context.config.key_packages.max_lifetime_days * SECONDS_PER_DAY,
    };
    let owner = ExpectedOwner {
        identity: &device.identity,
        signature_public_key: &device.signature_public_key,
    };
    let upload = verify_upload(
        &ordinary,
        last_resort.as_deref(),
        &owner,
        &policy,
        context.config.key_packages.max_per_upload,
    )?;
    let transaction = context.store.begin().await?;
    let stored = store::existing_hash_refs(&transaction, upload.hash_refs()).await?;
    check_not_stored(&upload, &stored)?;
    let VerifiedUpload {
        ordinary: verified_ordinary,
        last_resort: verified_last_resort,
    } = upload;
    let to_row = |(package, data): (VerifiedKeyPackage, Vec<u8>)| NewKeyPackage {
        hash_ref: package.hash_ref,
        data,
        not_after_ms: i64::try_from(package.not_after_unix_seconds)
            .unwrap_or(i64::MAX / 1000)
            .saturating_mul(1000),
    };
    let ordinary_rows = verified_ordinary
        .into_iter()
        .zip(ordinary)
        .map(to_row)
        .collect();
    let last_resort_row = verified_last_resort.zip(last_resort).map(to_row);
    let device_id = device.device_id().as_str();
    store::insert_key_packages(
        &transaction,
        device_id,
        ordinary_rows,
        last_resort_row,
        now_ms,
    )
    .await?;
    let stock = store::key_package_stock(&transaction, device_id, now_ms).await?;
    transaction.commit().await?;
    tracing::debug!(device = %device.identity, available = stock.available, "key packages uploaded");
    Ok(stock)
}

pub(crate) async fn stock(
    context: &Context,
    device: &AuthenticatedDevice,
) -> Result<KeyPackageStock, KeyPackageServiceError> {
    stock_of(context, device.device_id().as_str()).await
}

/// The stock of any device (the caller checks that the device is the caller's).
pub(crate) async fn stock_of(
    context: &Context,
    device_id: &str,
) -> Result<KeyPackageStock, KeyPackageServiceError> {
    Ok(store::key_package_stock(&context.store, device_id, context.now_ms()).await?)
}

/// One device's package, as handed to a claimer.
#[derive(Debug)]
pub(crate) struct DeviceKeyPackage {
    pub(crate) identity: CredentialIdentity,
    pub(crate) signature_public_key: Vec<u8>,
    pub(crate) package: ClaimedKeyPackage,
}

/// Claims one package per device of `user_id` for the calling device. Devices with
/// nothing to give are left out. A user of another domain is claimed from that
/// domain's homeserver when federation is on.
pub(crate) async fn claim(
    context: &Context,
    claimer: &AuthenticatedDevice,
    user_id: &str,
) -> Result<Vec<DeviceKeyPackage>, KeyPackageServiceError> {
    let user_id: UserId = user_id.parse()?;
    let federation = if user_id.domain() == &context.domain {
        None
    } else {
        let federation = context.federation.as_ref();
        let federation = federation.ok_or_else(|| foreign_user(context, &user_id))?;
        if !federation.is_peer(user_id.domain()) {
            return Err(CallError::UnknownPeer(UnknownPeer(user_id.domain().clone())).into());
        }
        Some(federation)
    };
    // Refusals above cost no rate. Forwarded claims count against the device's
    // rate too: the peer limits this device again, on its side.
    check_claim_rate(context, &claimer.identity)?;
    match federation {
        None => claim_local(context, &claimer.identity, &user_id).await,
        Some(federation) => claim_remote(federation, &claimer.identity, &user_id).await,
    }
}

/// Claims one package per device of `user_id`, a user of this domain, for
/// `requester`, a device of the peer domain that asked (its domain already
/// checked against the peer's certificate). The same directory and the same
/// per-requester rate limit as local claims.
pub(crate) async fn claim_for_peer(
    context: &Context,
    requester: &CredentialIdentity,
    user_id: &str,
) -> Result<Vec<DeviceKeyPackage>, KeyPackageServiceError> {
    let user_id: UserId = user_id.parse()?;
    if user_id.domain() != &context.domain {
        return Err(foreign_user(context, &user_id));
    }
    check_claim_rate(context, requester)?;
    claim_local(context, requester, &user_id).await
}

fn foreign_user(context: &Context, user_id: &UserId) -> KeyPackageServiceError {
    KeyPackageServiceError::ForeignUser {
        user: user_id.to_string(),
        domain: user_id.domain().to_string(),
        own: context.domain.to_string(),
    }
}

/// Counts one claim of `claimer` (keyed by its full credential identity, so local
/// devices and devices of each peer domain never share a count).
fn check_claim_rate(
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

/// Hands out one package per device of `user_id`, a user of this domain, recording
/// `claimed_by` as the claimer.
async fn claim_local(
    context: &Context,
    claimed_by: &CredentialIdentity,
    user_id: &UserId,
) -> Result<Vec<DeviceKeyPackage>, KeyPackageServiceError> {
    let connection = &context.store;
    let user = store::find_user_by_username(connection, user_id.username().as_str())
        .await?
        .ok_or_else(|| KeyPackageServiceError::UnknownUser(user_id.to_string()))?;
    let now_ms = context.now_ms();
    let claimed_by = claimed_by.to_string();
    let mut claimed = Vec::new();
    for device in store::list_devices(connection, user.id).await? {
        let package = store::claim_key_package(connection, &device.id, &claimed_by, now_ms).await?;
        if let Some(package) = package {
            claimed.push(DeviceKeyPackage {
                identity: identity_of(context, &user.username, &device)?,
                signature_public_key: device.signature_public_key,
                package,
            });
        }
    }
    claimed.sort_by(|a, b| a.identity.device_id().cmp(b.identity.device_id()));
    tracing::debug!(claimer = %claimed_by, user = %user_id, devices = claimed.len(), "key packages claimed");
    Ok(claimed)
}

/// Asks the user's homeserver, as `claimer`, and relays what it handed out.
async fn claim_remote(
    federation: &FederationClient,
    claimer: &CredentialIdentity,
    user_id: &UserId,
) -> Result<Vec<DeviceKeyPackage>, KeyPackageServiceError> {
    let claimed = federation.claim_key_packages(claimer, user_id).await?;
    tracing::debug!(claimer = %claimer, user = %user_id, devices = claimed.len(), "key packages claimed from a peer");
    Ok(claimed
        .into_iter()
        .map(|remote| DeviceKeyPackage {
            identity: remote.identity,
            signature_public_key: remote.signature_public_key,
            package: ClaimedKeyPackage {
                data: remote.key_package,
                last_resort: remote.last_resort,
            },
        })
        .collect())
}
