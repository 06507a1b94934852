//! Logging out: the calling device removes itself.

use super::{AccountError, AuthenticatedDevice, remove_device};
use crate::service::Context;

/// Logs the calling device out: it is removed with its token and key packages.
pub(crate) async fn logout(
    context: &Context,
    device: &AuthenticatedDevice,
) -> Result<(), AccountError> {
    remove_device(context, device, device.device_id().as_str()).await
}
