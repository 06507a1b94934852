//! Authenticating a request: its bearer token names its device, and the
//! device's account must be active.

use super::{AccountError, AuthenticatedDevice, identity_of};
use crate::service::{Context, secrets};
use crate::store;

/// How often, at most, a device's `last_seen_at` is written.
pub(crate) const LAST_SEEN_GRANULARITY_MS: i64 = 60_000;

/// Resolves a bearer token to its device, refusing the devices of a suspended
/// account ([`AccountError::AccountSuspended`]).
///
/// One read per call: the device and its account come in one statement (a
/// join), which carries the device's stored `last_seen_at_ms`. Last seen is
/// written only when that value is a minute old or more, so a device calling
/// all the time costs one write a minute and every other call writes nothing.
/// The value read is the shared truth (unlike a per-process map of "last
/// written" times, which each replica would keep apart and which would need
/// pruning), and it is already in hand, so the check costs nothing.
pub(crate) async fn authenticate(
    context: &Context,
    access_token: Option<&str>,
) -> Result<AuthenticatedDevice, AccountError> {
    let access_token = access_token.ok_or(AccountError::MissingToken)?;
    let (device, user) =
        store::find_device_by_token_hash(&context.store, &secrets::hash_token(access_token))
            .await?
            .ok_or(AccountError::InvalidToken)?;
    if !user.state.is_active() {
        // A deactivated account has no devices left, so this is a suspension.
        return Err(AccountError::AccountSuspended);
    }
    let now_ms = context.now_ms();
    if is_last_seen_stale(device.last_seen_at_ms, now_ms) {
        store::touch_device(
            &context.store,
            &device.device_id,
            now_ms,
            LAST_SEEN_GRANULARITY_MS,
        )
        .await?;
    }
    Ok(AuthenticatedDevice {
        user: user.key,
        identity: identity_of(context, &user.username, &device.device_id),
        signature_public_key: device.signature_public_key,
    })
}

/// True if a device last seen at `last_seen_at_ms` should be recorded as seen
/// at `now_ms`.
fn is_last_seen_stale(last_seen_at_ms: i64, now_ms: i64) -> bool {
    now_ms.saturating_sub(last_seen_at_ms) >= LAST_SEEN_GRANULARITY_MS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_seen_is_written_once_a_minute_at_most() {
        assert!(!is_last_seen_stale(1_000, 1_000));
        assert!(!is_last_seen_stale(1_000, 60_999));
        assert!(is_last_seen_stale(1_000, 61_000));
        // A clock that went back writes nothing.
        assert!(!is_last_seen_stale(61_000, 1_000));
    }
}
