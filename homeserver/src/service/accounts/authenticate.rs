//! Authenticating a request: its bearer token names its device, and the
//! device's account must be active. Recent answers are cached
//! (`session_cache`).

use super::session_cache::{Session, SessionCache};
use super::{AccountError, AuthenticatedDevice, identity_of};
use crate::service::{Context, secrets};
use crate::store;

/// How often, at most, a device's `last_seen_at` is written.
pub(crate) const LAST_SEEN_GRANULARITY_MS: i64 = 60_000;

/// Resolves a bearer token to its device, refusing the devices of a suspended
/// account ([`AccountError::AccountSuspended`]).
///
/// No read for a session in the cache (`session_cache`); otherwise the device
/// and its account come in one statement (a join), which carries the device's
/// stored `last_seen_at_ms`. Last seen is written only when that value is a
/// minute old or more, so a device calling all the time costs one write a
/// minute and every other call writes nothing. The value read is the shared
/// truth (unlike a per-process map of "last written" times, which each replica
/// would keep apart and which would need pruning); the cache's copy is read at
/// most a minute ago and updated with each write, so a device is written at
/// most about once a minute per replica.
pub(crate) async fn authenticate(
    context: &Context,
    access_token: Option<&str>,
) -> Result<AuthenticatedDevice, AccountError> {
    let access_token = access_token.ok_or(AccountError::MissingToken)?;
    let token_hash = secrets::hash_token(access_token);
    let now_ms = context.now_ms();
    let session = match context
        .sessions
        .get(context.notifier.as_ref(), &token_hash, now_ms)
    {
        Some(session) => session,
        None => read_session(context, &token_hash, now_ms).await?,
    };
    let Session {
        device,
        user,
        username,
    } = session;
    if is_last_seen_stale(device.last_seen_at_ms, now_ms) {
        store::touch_device(
            &context.store,
            &device.device_id,
            now_ms,
            LAST_SEEN_GRANULARITY_MS,
        )
        .await?;
        context.sessions.seen(&token_hash, now_ms);
    }
    Ok(AuthenticatedDevice {
        user,
        identity: identity_of(context, &username, &device.device_id),
        signature_public_key: device.signature_public_key,
    })
}

/// Reads the token's device and account, and caches them if the device may
/// call (see `session_cache` for why twice).
async fn read_session(
    context: &Context,
    token_hash: &[u8],
    now_ms: i64,
) -> Result<Session, AccountError> {
    let session = find_active_session(context, token_hash).await?;
    let watch = SessionCache::watch(context.notifier.as_ref(), session.device.device_id.as_str());
    let session = find_active_session(context, token_hash).await?;
    context
        .sessions
        .insert(token_hash.to_vec(), session.clone(), watch, now_ms);
    Ok(session)
}

async fn find_active_session(
    context: &Context,
    token_hash: &[u8],
) -> Result<Session, AccountError> {
    let (device, user) = store::find_device_by_token_hash(&context.store, token_hash)
        .await?
        .ok_or(AccountError::InvalidToken)?;
    if !user.state.is_active() {
        // A deactivated account has no devices left, so this is a suspension.
        return Err(AccountError::AccountSuspended);
    }
    Ok(Session {
        device,
        user: user.key,
        username: user.username,
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
    use crate::notify::Topic;
    use crate::service::admin::tests::{ManualClock, add_device, add_user, context_on};
    use crate::service::delivery::close_device_streams;
    use crate::store::{Store, UserRecord};
    use conclave_core::ids::DeviceId;
    use conclave_test_support::{DatabaseChoice, TestDatabase};
    use std::sync::Arc;

    const DEVICE: &str = "0123456789abcdef";

    /// A context on `database` with a hand-moved clock, and alice with
    /// `DEVICE`, whose bearer token comes last.
    async fn alice_with_a_device(
        database: &TestDatabase,
    ) -> (Context, Arc<ManualClock>, UserRecord, String) {
        let clock = ManualClock::starting_now();
        let context = context_on(database, clock.clone()).await;
        let alice = add_user(&context, "alice", "alice's password").await;
        let token = add_device(&context, &alice, DEVICE).await;
        (context, clock, alice, token)
    }

    /// The server refuses `token` as no session's.
    async fn assert_token_refused(context: &Context, token: &str) {
        let refused = authenticate(context, Some(token)).await;
        assert!(
            matches!(refused, Err(AccountError::InvalidToken)),
            "{refused:?}"
        );
    }

    /// Deletes the device behind the server's back: no wake-up, so only a
    /// read of the database can tell.
    async fn delete_device_silently(context: &Context, user: &UserRecord) {
        let device_id: DeviceId = DEVICE.parse().unwrap();
        assert!(
            store::delete_device(&context.store, user.key, &device_id)
                .await
                .unwrap()
        );
    }

    /// A cached session needs no read, and is dropped by its device's access
    /// wake-up: the next call reads the database and is refused.
    #[tokio::test]
    async fn a_cached_session_ends_with_its_device_access_wake_up() {
        let database = TestDatabase::create(DatabaseChoice::Sqlite).await;
        let (context, _, alice, token) = alice_with_a_device(&database).await;
        let device = authenticate(&context, Some(&token)).await.unwrap();
        assert_eq!(device.device_id().as_str(), DEVICE);

        delete_device_silently(&context, &alice).await;
        // Served from the cache: the row is gone.
        authenticate(&context, Some(&token)).await.unwrap();
        // A wake-up for another device changes nothing.
        context
            .notifier
            .publish(&Topic::DeviceAccess("fedcba9876543210".to_owned()));
        authenticate(&context, Some(&token)).await.unwrap();

        close_device_streams(&context, DEVICE);
        assert_token_refused(&context, &token).await;
        // Refusals are not cached: the same answer from the database again.
        assert_token_refused(&context, &token).await;
    }

    /// Without a wake-up (a row changed outside the server), a cached session
    /// is trusted for `MAX_AGE_MS` at most.
    #[tokio::test]
    async fn a_cached_session_expires() {
        let database = TestDatabase::create(DatabaseChoice::Sqlite).await;
        let (context, clock, alice, token) = alice_with_a_device(&database).await;
        authenticate(&context, Some(&token)).await.unwrap();
        delete_device_silently(&context, &alice).await;
        clock.advance_ms(super::super::session_cache::MAX_AGE_MS - 1);
        authenticate(&context, Some(&token)).await.unwrap();
        clock.advance_ms(1);
        assert_token_refused(&context, &token).await;
    }

    /// The resync drops expired sessions first, so an idle device's access
    /// topic stops being registered (and asked about every interval).
    #[tokio::test]
    async fn the_resync_forgets_expired_sessions() {
        let database = TestDatabase::create(DatabaseChoice::Sqlite).await;
        let (context, clock, _, token) = alice_with_a_device(&database).await;
        authenticate(&context, Some(&token)).await.unwrap();
        let access = Topic::DeviceAccess(DEVICE.to_owned());
        let mut last_heads = std::collections::HashMap::new();
        crate::service::resync::resync_once(&context, &mut last_heads)
            .await
            .unwrap();
        assert!(context.notifier.registered_topics().contains(&access));
        clock.advance_ms(super::super::session_cache::MAX_AGE_MS);
        crate::service::resync::resync_once(&context, &mut last_heads)
            .await
            .unwrap();
        assert!(!context.notifier.registered_topics().contains(&access));
    }

    /// Last seen is still written once a minute for a device served from the
    /// cache, and the cache's copy follows the write.
    #[tokio::test]
    async fn last_seen_is_written_for_cached_sessions() {
        let database = TestDatabase::create(DatabaseChoice::Sqlite).await;
        let (context, clock, _, token) = alice_with_a_device(&database).await;
        let enrolled_at_ms = context.now_ms();
        let last_seen = |store: Store| async move {
            let (device, _) = store::find_device_by_token_hash(
                &store,
                &secrets::hash_token(&format!("token-{DEVICE}")),
            )
            .await
            .unwrap()
            .unwrap();
            device.last_seen_at_ms
        };
        // Cached half a minute after enrolment.
        clock.advance_ms(30_000);
        authenticate(&context, Some(&token)).await.unwrap();
        // A minute after enrolment, from the cache: written.
        clock.advance_ms(30_000);
        authenticate(&context, Some(&token)).await.unwrap();
        let seen_at_ms = enrolled_at_ms + 60_000;
        assert_eq!(last_seen(context.store.clone()).await, seen_at_ms);
        // Still from the cache, whose copy says seen 20 s ago: not written.
        clock.advance_ms(20_000);
        authenticate(&context, Some(&token)).await.unwrap();
        assert_eq!(last_seen(context.store.clone()).await, seen_at_ms);
    }

    #[test]
    fn last_seen_is_written_once_a_minute_at_most() {
        assert!(!is_last_seen_stale(1_000, 1_000));
        assert!(!is_last_seen_stale(1_000, 60_999));
        assert!(is_last_seen_stale(1_000, 61_000));
        // A clock that went back writes nothing.
        assert!(!is_last_seen_stale(61_000, 1_000));
    }
}
