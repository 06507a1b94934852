//! A device's claim for a user of another domain, forwarded to that domain's
//! homeserver through the `FederationClient`.

use super::{ClaimError, DeviceKeyPackage};
use crate::store::ClaimedKeyPackage;
use conclave_core::ids::{CredentialIdentity, UserId};
use conclave_federation::client::FederationClient;

/// Asks the user's homeserver, as `claimer`, and relays what it handed out.
pub(super) async fn forward_claim(
    federation: &FederationClient,
    claimer: &CredentialIdentity,
    user_id: &UserId,
) -> Result<Vec<DeviceKeyPackage>, ClaimError> {
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
