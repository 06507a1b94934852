//! Removing one of the caller's own devices (its key packages go with it, and
//! it leaves its groups).

use super::{AccountError, AuthenticatedDevice};
use crate::service::{Context, InternalError, delivery, departures};
use crate::store::{self, StoreError};
use conclave_core::ids::{CredentialIdentity, DeviceId};

/// Removes the caller's device `device_id`. An id that does not parse names no
/// device of the caller, and is refused as such.
pub(crate) async fn remove_device(
    context: &Context,
    caller: &AuthenticatedDevice,
    device_id: &str,
) -> Result<(), AccountError> {
    let device_id: DeviceId = device_id
        .parse()
        .map_err(|_| AccountError::UnknownDevice(device_id.to_owned()))?;
    remove(context, caller, &device_id, "removed by its user").await
}

/// Removes one of the caller's devices, by a parsed id, and has it leave its
/// groups: each gets a departure notice (`departures::announce`), on which the
/// remaining members commit its removal. `reason` is the notice's text.
pub(super) async fn remove(
    context: &Context,
    caller: &AuthenticatedDevice,
    device_id: &DeviceId,
    reason: &str,
) -> Result<(), AccountError> {
    if !store::delete_device(&context.store, caller.user, device_id).await? {
        return Err(AccountError::UnknownDevice(device_id.to_string()));
    }
    tracing::info!(user = %caller.user_id(), device = %device_id, by = %caller.device_id(), "device removed");
    // Its open streams end now, on every replica: a stolen device its owner
    // removes must not read on until a member commits its removal.
    delivery::close_device_streams(context, device_id.as_str());
    let removed = CredentialIdentity::new(caller.user_id().clone(), device_id.clone());
    departures::announce(context, &[removed], reason)
        .await
        .map_err(|error| {
            tracing::error!(device = %device_id, %error, "the removed device's groups could not be told");
            match error {
                InternalError::Store(error) => AccountError::Store(error),
                InternalError::Corrupt(reason) => AccountError::Store(StoreError::Corrupt(reason)),
            }
        })?;
    Ok(())
}
