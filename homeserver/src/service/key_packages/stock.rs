//! A device's stock: how many packages it has left to give, in each suite.

use crate::rules::key_package_stock::{self, KeyPackageStock};
use crate::service::Context;
use crate::service::accounts::AuthenticatedDevice;
use crate::store::{self, Connection, StoreError};
use conclave_core::ids::DeviceId;
use conclave_core::mls::CipherSuite;

/// The calling device's stock in the classic suite, and in each suite this
/// homeserver offers.
pub(crate) async fn stock(
    context: &Context,
    device: &AuthenticatedDevice,
) -> Result<(KeyPackageStock, Vec<(CipherSuite, KeyPackageStock)>), StoreError> {
    let now_ms = context.now_ms();
    let classic = stock_of(&context.store, device.device_id(), now_ms).await?;
    let suites = suite_stocks(context, &context.store, device.device_id(), now_ms).await?;
    Ok((classic, suites))
}

/// The stock of any device at `now_ms` in the classic suite (the caller checks
/// that the device is the caller's).
pub(crate) async fn stock_of(
    db: &impl Connection,
    device_id: &DeviceId,
    now_ms: i64,
) -> Result<KeyPackageStock, StoreError> {
    stock_in(db, device_id, CipherSuite::Classic, now_ms).await
}

/// The device's stock in each suite this homeserver offers.
pub(crate) async fn suite_stocks(
    context: &Context,
    db: &impl Connection,
    device_id: &DeviceId,
    now_ms: i64,
) -> Result<Vec<(CipherSuite, KeyPackageStock)>, StoreError> {
    let mut stocks = Vec::new();
    for suite in context.config.groups.offered_cipher_suites() {
        stocks.push((suite, stock_in(db, device_id, suite, now_ms).await?));
    }
    Ok(stocks)
}

async fn stock_in(
    db: &impl Connection,
    device_id: &DeviceId,
    suite: CipherSuite,
    now_ms: i64,
) -> Result<KeyPackageStock, StoreError> {
    let counts = store::claimable_counts(db, device_id, suite.id(), now_ms).await?;
    Ok(key_package_stock::stock(
        counts.ordinary,
        counts.last_resort,
    ))
}
