//! Logging out: the calling device removes itself.

use super::remove_device::remove;
use super::{AccountError, AuthenticatedDevice};
use crate::service::Context;

/// Logs the calling device out: it is removed with its token and key packages,
/// and leaves its groups.
pub(crate) async fn logout(
    context: &Context,
    device: &AuthenticatedDevice,
) -> Result<(), AccountError> {
    remove(context, device, device.device_id(), "logged out").await
}
