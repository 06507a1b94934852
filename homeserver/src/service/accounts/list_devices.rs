//! Listing the caller's devices, each with its key-package stock.

use super::{AccountError, AuthenticatedDevice};
use crate::service::{Context, key_packages};
use crate::store;
use conclave_core::ids::DeviceId;

/// One of the caller's devices.
#[derive(Debug)]
pub(crate) struct ListedDevice {
    pub(crate) device_id: DeviceId,
    pub(crate) display_name: String,
    pub(crate) signature_public_key: Vec<u8>,
    /// Milliseconds since the Unix epoch.
    pub(crate) created_at_ms: i64,
    /// Milliseconds since the Unix epoch, to the minute.
    pub(crate) last_seen_at_ms: i64,
    /// Ordinary packages a claim could still take.
    pub(crate) key_packages_available: u64,
    /// True for the device that asked.
    pub(crate) current: bool,
}

/// The caller's devices, oldest first.
pub(crate) async fn list_devices(
    context: &Context,
    caller: &AuthenticatedDevice,
) -> Result<Vec<ListedDevice>, AccountError> {
    let devices = store::list_devices(&context.store, caller.user).await?;
    let now_ms = context.now_ms();
    let mut listed = Vec::with_capacity(devices.len());
    for device in devices {
        let stock = key_packages::stock_of(&context.store, &device.device_id, now_ms).await?;
        listed.push(ListedDevice {
            current: &device.device_id == caller.device_id(),
            device_id: device.device_id,
            display_name: device.display_name,
            signature_public_key: device.signature_public_key,
            created_at_ms: device.created_at_ms,
            last_seen_at_ms: device.last_seen_at_ms,
            key_packages_available: stock.available,
        });
    }
    Ok(listed)
}
