//! Uploading: a device stores a verified batch of its KeyPackages.

use super::stock::{stock_of, suite_stocks};
use crate::rules::key_package_stock::KeyPackageStock;
use crate::rules::key_package_upload::{
    UploadRejection, VerifiedUpload, check_not_stored, check_suites_offered, not_after_ms,
    upload_policy, verify_upload,
};
use crate::service::Context;
use crate::service::accounts::AuthenticatedDevice;
use crate::store::{self, NewKeyPackage, StoreError};
use conclave_core::key_package::{ExpectedOwner, VerifiedKeyPackage};
use conclave_core::mls::CipherSuite;

/// Why an upload failed; nothing of it was stored.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UploadError {
    /// The batch breaks a rule: a package is invalid, repeated or stored already.
    #[error(transparent)]
    Rejected(#[from] UploadRejection),
    /// The database failed, or holds a value that does not fit its type.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Verifies and stores a batch from the calling device: all of it, or nothing.
/// Returns the device's stock afterwards: classic, and in each offered suite.
pub(crate) async fn upload(
    context: &Context,
    device: &AuthenticatedDevice,
    ordinary: Vec<Vec<u8>>,
    last_resort: Option<Vec<u8>>,
) -> Result<(KeyPackageStock, Vec<(CipherSuite, KeyPackageStock)>), UploadError> {
    let now_ms = context.now_ms();
    let settings = &context.config.key_packages;
    let owner = ExpectedOwner {
        identity: &device.identity,
        signature_public_key: &device.signature_public_key,
    };
    let upload = verify_upload(
        &ordinary,
        last_resort.as_deref(),
        &owner,
        &upload_policy(now_ms, settings.max_lifetime_days),
        settings.max_per_upload,
    )?;
    check_suites_offered(
        &upload,
        &context.config.groups.suite_policy(),
        context.domain.as_str(),
    )?;
    let transaction = context.store.begin().await?;
    let stored = store::existing_hash_refs(&transaction, upload.hash_refs()).await?;
    check_not_stored(&upload, &stored)?;
    let VerifiedUpload {
        ordinary: verified_ordinary,
        last_resort: verified_last_resort,
    } = upload;
    let to_row = |(package, data): (VerifiedKeyPackage, Vec<u8>)| NewKeyPackage {
        hash_ref: package.hash_ref,
        cipher_suite: package.cipher_suite.id(),
        data,
        not_after_ms: not_after_ms(package.not_after_unix_seconds),
    };
    let ordinary_rows = verified_ordinary
        .into_iter()
        .zip(ordinary)
        .map(to_row)
        .collect();
    let last_resort_row = verified_last_resort.zip(last_resort).map(to_row);
    let device_id = device.device_id();
    store::insert_key_packages(
        &transaction,
        device_id,
        ordinary_rows,
        last_resort_row,
        now_ms,
    )
    .await?;
    let stock = stock_of(&transaction, device_id, now_ms).await?;
    let suites = suite_stocks(context, &transaction, device_id, now_ms).await?;
    transaction.commit().await?;
    tracing::debug!(device = %device.identity, available = stock.available, "key packages uploaded");
    Ok((stock, suites))
}
