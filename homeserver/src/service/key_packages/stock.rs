//! A device's stock: how many packages it has left to give.

use crate::service::Context;
use crate::service::accounts::AuthenticatedDevice;
use crate::store::{self, KeyPackageStock, StoreError};
use conclave_core::ids::DeviceId;

/// The calling device's stock.
pub(crate) async fn stock(
    context: &Context,
    device: &AuthenticatedDevice,
) -> Result<KeyPackageStock, StoreError> {
    stock_of(context, device.device_id()).await
}

/// The stock of any device (the caller checks that the device is the caller's).
pub(crate) async fn stock_of(
    context: &Context,
    device_id: &DeviceId,
) -> Result<KeyPackageStock, StoreError> {
    store::key_package_stock(&context.store, device_id, context.now_ms()).await
}
