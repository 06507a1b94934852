//! Removing one of the caller's own devices (its key packages go with it).

use super::{AccountError, AuthenticatedDevice};
use crate::service::Context;
use crate::store;
use conclave_core::ids::DeviceId;

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
    remove(context, caller, &device_id).await
}

/// Removes one of the caller's devices, by a parsed id.
pub(super) async fn remove(
    context: &Context,
    caller: &AuthenticatedDevice,
    device_id: &DeviceId,
) -> Result<(), AccountError> {
    if !store::delete_device(&context.store, caller.user, device_id).await? {
        return Err(AccountError::UnknownDevice(device_id.to_string()));
    }
    tracing::info!(user = %caller.user_id(), device = %device_id, by = %caller.device_id(), "device removed");
    Ok(())
}
