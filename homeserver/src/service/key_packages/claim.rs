//! A device claims a user's KeyPackages, one per device of the user: from this
//! directory for a user of this domain, or forwarded to the user's homeserver.

use super::forward_claim::forward_claim;
use super::{ClaimError, DeviceKeyPackage, check_claim_rate};
use crate::rules::key_package_claim::{ClaimRoute, Reach, route_device_claim};
use crate::service::Context;
use crate::service::accounts::{AuthenticatedDevice, identity_of};
use crate::store;
use conclave_core::ids::{CredentialIdentity, UserId};
use conclave_core::mls::CipherSuite;

/// Claims one package of `cipher_suite` (a protobuf suite number, 0 for
/// classic) per device of `user_id` for the calling device. Devices with nothing
/// to give are left out. A user of another domain is claimed from that domain's
/// homeserver when federation is on.
pub(crate) async fn claim(
    context: &Context,
    claimer: &AuthenticatedDevice,
    user_id: &str,
    cipher_suite: u32,
) -> Result<Vec<DeviceKeyPackage>, ClaimError> {
    let user_id: UserId = user_id.parse()?;
    let suite = CipherSuite::from_wire(cipher_suite)?;
    // A group of a suite this homeserver does not offer could not live here.
    context
        .config
        .groups
        .suite_policy()
        .check_offered(context.domain.as_str(), suite)?;
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
        ClaimRoute::Directory => claim_local(context, &claimer.identity, &user_id, suite).await,
        ClaimRoute::Forward(federation) => {
            forward_claim(federation, &claimer.identity, &user_id, suite).await
        }
    }
}

/// Hands out one package of `suite` per device of `user_id`, a user of this
/// domain, recording `claimed_by` as the claimer. A device with packages of
/// other suites only fails the whole claim, naming it, and nothing is handed
/// out (the transaction is dropped).
pub(super) async fn claim_local(
    context: &Context,
    claimed_by: &CredentialIdentity,
    user_id: &UserId,
    suite: CipherSuite,
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
        let package = store::claim_key_package(
            &transaction,
            &device.device_id,
            claimed_by,
            suite.id(),
            now_ms,
        )
        .await?;
        let identity = identity_of(context, &user.username, &device.device_id);
        match package {
            Some(package) => claimed.push(DeviceKeyPackage {
                identity,
                signature_public_key: device.signature_public_key,
                package,
            }),
            None if store::has_claimable_key_package(&transaction, &device.device_id, now_ms)
                .await? =>
            {
                return Err(ClaimError::NoPackageInSuite { identity, suite });
            }
            None => {}
        }
    }
    transaction.commit().await?;
    claimed.sort_by(|a, b| a.identity.device_id().cmp(b.identity.device_id()));
    tracing::debug!(claimer = %claimed_by, user = %user_id, devices = claimed.len(), "key packages claimed");
    Ok(claimed)
}
