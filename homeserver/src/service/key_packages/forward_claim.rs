//! A device's claim for a user of another domain, forwarded to that domain's
//! homeserver through the `FederationClient`.

use super::{ClaimError, DeviceKeyPackage};
use crate::store::ClaimedKeyPackage;
use conclave_core::ids::{CredentialIdentity, UserId};
use conclave_core::mls::CipherSuite;
use conclave_federation::client::FederationClient;

/// Asks the user's homeserver, as `claimer`, for packages of `suite`, and relays
/// what it handed out: only if every package is of that suite. A peer that
/// predates suites ignores the field and answers with classic packages; that
/// answer is refused, naming the peer (the claimer's device checks each package
/// again).
pub(super) async fn forward_claim(
    federation: &FederationClient,
    claimer: &CredentialIdentity,
    user_id: &UserId,
    suite: CipherSuite,
) -> Result<Vec<DeviceKeyPackage>, ClaimError> {
    let claimed = federation
        .claim_key_packages(claimer, user_id, suite.to_wire())
        .await?;
    for remote in &claimed {
        let found = package_suite(&remote.key_package);
        if found != Some(suite.id()) {
            return Err(ClaimError::PeerSuiteMismatch {
                domain: user_id.domain().to_string(),
                suite,
                found: found.map_or_else(
                    || "no cipher suite".to_owned(),
                    |id| match CipherSuite::from_id(id) {
                        Ok(known) => format!("cipher suite {known}"),
                        Err(_) => format!("cipher suite {id:#06x}"),
                    },
                ),
            });
        }
    }
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

/// The cipher suite number of a TLS-encoded KeyPackage, which opens with
/// `uint16 version; uint16 cipher_suite;` (RFC 9420 §10).
fn package_suite(key_package: &[u8]) -> Option<u16> {
    key_package
        .get(2..4)
        .and_then(|pair| pair.try_into().ok())
        .map(u16::from_be_bytes)
}
