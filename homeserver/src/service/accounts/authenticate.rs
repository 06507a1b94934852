//! Authenticating a request: its bearer token names its device.

use super::{AccountError, AuthenticatedDevice, identity_of};
use crate::service::{Context, secrets};
use crate::store;

/// How often, at most, a device's `last_seen_at` is written.
const LAST_SEEN_GRANULARITY_MS: i64 = 60_000;

/// Resolves a bearer token to its device.
pub(crate) async fn authenticate(
    context: &Context,
    access_token: Option<&str>,
) -> Result<AuthenticatedDevice, AccountError> {
    let access_token = access_token.ok_or(AccountError::MissingToken)?;
    let (device, user) =
        store::find_device_by_token_hash(&context.store, &secrets::hash_token(access_token))
            .await?
            .ok_or(AccountError::InvalidToken)?;
    store::touch_device(
        &context.store,
        &device.device_id,
        context.now_ms(),
        LAST_SEEN_GRANULARITY_MS,
    )
    .await?;
    Ok(AuthenticatedDevice {
        user: user.key,
        identity: identity_of(context, &user.username, &device.device_id),
        signature_public_key: device.signature_public_key,
    })
}
