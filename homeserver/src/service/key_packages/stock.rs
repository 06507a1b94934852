//! A device's stock: how many packages it has left to give.

use crate::rules::key_package_stock::{self, KeyPackageStock};
use crate::service::Context;
use crate::service::accounts::AuthenticatedDevice;
use crate::store::{self, Connection, StoreError};
use conclave_core::ids::DeviceId;

/// The calling device's stock.
pub(crate) async fn stock(
    context: &Context,
    device: &AuthenticatedDevice,
) -> Result<KeyPackageStock, StoreError> {
    stock_of(&context.store, device.device_id(), context.now_ms()).await
}

/// The stock of any device at `now_ms` (the caller checks that the device is
/// the caller's).
pub(crate) async fn stock_of(
    db: &impl Connection,
    device_id: &DeviceId,
    now_ms: i64,
) -> Result<KeyPackageStock, StoreError> {
    let counts = store::claimable_counts(db, device_id, now_ms).await?;
    Ok(key_package_stock::stock(
        counts.ordinary,
        counts.last_resort,
    ))
}
