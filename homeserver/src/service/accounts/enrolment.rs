//! Enrolling a device, the step register and login share: bind a fresh device id
//! and bearer token to the device's signature key.

use super::{AccountError, Enrolment, Session, identity_of};
use crate::service::{Context, secrets};
use crate::store::{self, NewDevice, UserKey};
use conclave_core::ids::{DeviceId, Username};

/// Enrols a checked device of `user` in `transaction`; fails if its signature
/// key is bound to another device already.
pub(super) async fn enrol_device(
    context: &Context,
    transaction: &store::Transaction,
    user: UserKey,
    username: &Username,
    device: Enrolment,
) -> Result<Session, AccountError> {
    if store::signature_key_in_use(transaction, &device.signature_public_key).await? {
        return Err(AccountError::SignatureKeyTaken);
    }
    let device_id = DeviceId::from_random_bytes(secrets::random_bytes_8());
    let access_token = secrets::new_token();
    let inserted = store::insert_device(
        transaction,
        NewDevice {
            device_id: &device_id,
            user,
            display_name: &device.display_name,
            signature_public_key: &device.signature_public_key,
            access_token_hash: &secrets::hash_token(&access_token),
            now_ms: context.now_ms(),
        },
    )
    .await?;
    if !inserted {
        // The key check above ran in this transaction, but a concurrent login may
        // have committed the same key since; the unique key caught it. (A device id
        // collision, 1 in 2^64, lands here too and the client simply retries.)
        return Err(AccountError::SignatureKeyTaken);
    }
    Ok(Session {
        identity: identity_of(context, username, &device_id),
        access_token,
    })
}
