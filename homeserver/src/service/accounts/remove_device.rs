//! Removing one of the caller's own devices.

use super::{AccountError, AuthenticatedDevice};
use crate::service::Context;
use crate::store;

/// Removes one of the caller's own devices.
pub(crate) async fn remove_device(
    context: &Context,
    caller: &AuthenticatedDevice,
    device_id: &str,
) -> Result<(), AccountError> {
    if !store::delete_device(&context.store, caller.user_row_id, device_id).await? {
        return Err(AccountError::UnknownDevice(device_id.to_owned()));
    }
    tracing::info!(user = %caller.user_id(), device = device_id, by = %caller.device_id(), "device removed");
    Ok(())
}
