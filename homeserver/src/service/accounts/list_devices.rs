//! Listing the caller's devices.

use super::{AccountError, AuthenticatedDevice};
use crate::service::Context;
use crate::store::{self, DeviceRecord};

pub(crate) async fn list_devices(
    context: &Context,
    device: &AuthenticatedDevice,
) -> Result<Vec<DeviceRecord>, AccountError> {
    Ok(store::list_devices(&context.store, device.user_row_id).await?)
}
