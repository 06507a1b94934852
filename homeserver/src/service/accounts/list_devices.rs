//! Listing the caller's devices.

use super::{AccountError, AuthenticatedDevice};
use crate::service::Context;
use crate::store::{self, DeviceRecord};

/// The caller's devices, oldest first.
pub(crate) async fn list_devices(
    context: &Context,
    caller: &AuthenticatedDevice,
) -> Result<Vec<DeviceRecord>, AccountError> {
    Ok(store::list_devices(&context.store, caller.user).await?)
}
