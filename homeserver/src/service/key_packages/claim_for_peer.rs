//! A peer homeserver claims, for one of its devices, the KeyPackages of a user of
//! this domain.

use super::claim::claim_local;
use super::{ClaimError, DeviceKeyPackage, check_claim_rate};
use crate::rules::key_package_claim::check_peer_claim;
use crate::service::Context;
use conclave_core::ids::{CredentialIdentity, UserId};
use conclave_core::mls::CipherSuite;

/// Claims one package of `cipher_suite` (a protobuf suite number, 0 for
/// classic) per device of `user_id`, a user of this domain, for
/// `requester`, a device of the peer domain that asked (its domain already
/// checked against the peer's certificate). The same directory and the same
/// per-requester rate limit as local claims.
pub(crate) async fn claim_for_peer(
    context: &Context,
    requester: &CredentialIdentity,
    user_id: &str,
    cipher_suite: u32,
) -> Result<Vec<DeviceKeyPackage>, ClaimError> {
    let user_id: UserId = user_id.parse()?;
    let suite = CipherSuite::from_wire(cipher_suite)?;
    check_peer_claim(&user_id, &context.domain)?;
    context
        .config
        .groups
        .suite_policy()
        .check_offered(context.domain.as_str(), suite)?;
    check_claim_rate(context, requester).await?;
    claim_local(context, requester, &user_id, suite).await
}
