//! A device claims a user's KeyPackages, one per device of the user: from this
//! directory for a user of this domain, or forwarded to the user's homeserver.

use super::forward_claim::forward_claim;
use super::{ClaimError, DeviceKeyPackage, check_claim_rate};
use crate::rules::key_package_claim::{ClaimRoute, Reach, route_device_claim};
use crate::service::Context;
use crate::service::accounts::{AuthenticatedDevice, identity_of};
use crate::store;
use conclave_core::ids::{CredentialIdentity, UserId};

/// Claims one package per device of `user_id` for the calling device. Devices with
/// nothing to give are left out. A user of another domain is claimed from that
/// domain's homeserver when federation is on.
pub(crate) async fn claim(
    context: &Context,
    claimer: &AuthenticatedDevice,
    user_id: &str,
) -> Result<Vec<DeviceKeyPackage>, ClaimError> {
    let user_id: UserId = user_id.parse()?;
    let reach = match &context.federation {
        None => Reach::FederationOff,
        Some(federation) if federation.is_peer(user_id.domain()) => Reach::Peer(federation),
        Some(_) => Reach::NotAPeer,
    };
    let route = route_device_claim(&user_id, &context.domain, reach)?;
    // Refusals above cost no rate. Forwarded claims count against the device's
    // rate too: the peer limits this device again, on its side.
    check_claim_rate(context, &claimer.identity).await?;
    match route {
        ClaimRoute::Directory => claim_local(context, &claimer.identity, &user_id).await,
        ClaimRoute::Forward(federation) => {
            forward_claim(federation, &claimer.identity, &user_id).await
        }
    }
}

/// Hands out one package per device of `user_id`, a user of this domain, recording
/// `claimed_by` as the claimer.
pub(super) async fn claim_local(
    context: &Context,
    claimed_by: &CredentialIdentity,
    user_id: &UserId,
) -> Result<Vec<DeviceKeyPackage>, ClaimError> {
    let connection = &context.store;
    let user = store::find_user_by_username(connection, user_id.username())
        .await?
        .ok_or_else(|| ClaimError::UnknownUser(user_id.clone()))?;
    let now_ms = context.now_ms();
    let mut claimed = Vec::new();
    // A package handed out and the record of which domain it went to (which a
    // follower checks Welcomes against) are written together.
    let transaction = connection.begin().await?;
    for device in store::list_devices(&transaction, user.key).await? {
        let package =
            store::claim_key_package(&transaction, &device.device_id, claimed_by, now_ms).await?;
        if let Some(package) = package {
            claimed.push(DeviceKeyPackage {
                identity: identity_of(context, &user.username, &device.device_id),
                signature_public_key: device.signature_public_key,
                package,
            });
        }
    }
    transaction.commit().await?;
    claimed.sort_by(|a, b| a.identity.device_id().cmp(b.identity.device_id()));
    tracing::debug!(claimer = %claimed_by, user = %user_id, devices = claimed.len(), "key packages claimed");
    Ok(claimed)
}
