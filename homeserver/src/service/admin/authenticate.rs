//! Checking an admin session's bearer token on every admin call, and ending
//! sessions (logout, and whatever takes an account's right to them away).

use super::audit::record;
use super::{Actor, AdminCaller, AdminError, user_id};
use crate::rules::account_state::AccountState;
use crate::rules::admin_session::{SessionState, SessionTimes, idle_timeout_ms, session_state};
use crate::service::{Context, secrets};
use crate::store::{self, StoreError, UserKey};
use std::net::IpAddr;

/// An admin call's session, checked.
#[derive(Debug, Clone)]
pub(crate) struct AuthenticatedSession {
    pub(crate) caller: AdminCaller,
    /// SHA-256 of the bearer token, to end the session.
    pub(crate) token_hash: Vec<u8>,
    pub(crate) created_at_ms: i64,
    pub(crate) expires_at_ms: i64,
}

/// What a call without a token is told.
const MISSING_TOKEN: &str = "missing admin session token: log in with AdminSessionService.Login and send 'authorization: Bearer <token>'";
/// What a call with a token of no session is told (never one, logged out, or
/// ended with its account's role, suspension or deactivation).
const UNKNOWN_SESSION: &str = "the admin session is unknown or ended; log in again";
/// What a call of a session that ended by time is told.
const EXPIRED_SESSION: &str = "the admin session expired; log in again";

/// The session of `token` for a call from `address`: open (idle less than
/// `[admin] session_idle_minutes`, before its absolute end) and of an account
/// that still has the admin role. Renews the idle timer, writing at most once
/// a minute. A session found ended is deleted.
pub(crate) async fn authenticate(
    context: &Context,
    token: Option<&str>,
    address: Option<IpAddr>,
) -> Result<AuthenticatedSession, AdminError> {
    let token = token.ok_or_else(|| AdminError::Unauthenticated(MISSING_TOKEN.to_owned()))?;
    let token_hash = secrets::hash_token(token);
    let session = store::find_admin_session(&context.store, &token_hash)
        .await?
        .filter(|session| session.is_admin && session.account_state == AccountState::Active)
        .ok_or_else(|| AdminError::Unauthenticated(UNKNOWN_SESSION.to_owned()))?;
    let now_ms = context.now_ms();
    let times = SessionTimes {
        last_used_at_ms: session.last_used_at_ms,
        expires_at_ms: session.expires_at_ms,
        idle_timeout_ms: idle_timeout_ms(context.config.admin.session_idle_minutes),
    };
    match session_state(times, now_ms) {
        SessionState::Ended => {
            store::delete_admin_session(&context.store, &token_hash).await?;
            return Err(AdminError::Unauthenticated(EXPIRED_SESSION.to_owned()));
        }
        SessionState::Open { renew: true } => {
            store::touch_admin_session(&context.store, &token_hash, now_ms).await?;
        }
        SessionState::Open { renew: false } => {}
    }
    Ok(AuthenticatedSession {
        caller: AdminCaller {
            actor: Actor::Admin {
                user: session.user,
                user_id: user_id(context, &session.username),
            },
            address,
        },
        token_hash,
        created_at_ms: session.created_at_ms,
        expires_at_ms: session.expires_at_ms,
    })
}

/// Ends the calling session (Logout), audited as `session.logout`.
pub(crate) async fn logout(
    context: &Context,
    session: &AuthenticatedSession,
) -> Result<(), AdminError> {
    store::delete_admin_session(&context.store, &session.token_hash).await?;
    record(
        context,
        &session.caller,
        "session.logout",
        "",
        &Ok("ended the admin session".to_owned()),
    )
    .await?;
    Ok(())
}

/// Ends every admin session of `user` at once (its role revoked, the account
/// suspended or deactivated); returns how many there were.
pub(crate) async fn end_admin_sessions(
    context: &Context,
    user: UserKey,
) -> Result<u64, StoreError> {
    store::delete_admin_sessions_of_user(&context.store, user).await
}

/// Deletes the sessions that ended by time (for the janitor); returns how
/// many. A call of such a session is refused whether or not it was deleted.
pub(crate) async fn delete_ended_admin_sessions(context: &Context) -> Result<u64, StoreError> {
    let now_ms = context.now_ms();
    let idle_ms = idle_timeout_ms(context.config.admin.session_idle_minutes);
    store::delete_ended_admin_sessions(&context.store, now_ms, now_ms.saturating_sub(idle_ms)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::attempt_limits::Limit;
    use crate::service::admin::grant_role::grant_role;
    use crate::service::admin::login::login;
    use crate::service::admin::revoke_role::revoke_role;
    use crate::service::admin::tests::{ManualClock, add_user, context_on};
    use crate::store::{AuditEntryRecord, AuditQuery, list_audit_entries_oldest_first};
    use conclave_test_support::{DatabaseChoice, TestDatabase};

    const MINUTE_MS: i64 = 60_000;

    fn address() -> Option<IpAddr> {
        Some("198.51.100.4".parse().unwrap())
    }

    async fn audit_log(context: &Context) -> Vec<AuditEntryRecord> {
        list_audit_entries_oldest_first(&context.store, &AuditQuery::default(), None, 100)
            .await
            .unwrap()
    }

    fn unauthenticated(result: Result<AuthenticatedSession, AdminError>) -> String {
        match result {
            Err(AdminError::Unauthenticated(message)) => message,
            other => panic!("expected UNAUTHENTICATED, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn login_checks_the_password_and_the_role_and_audits_both() {
        for choice in DatabaseChoice::ALL {
            let database = TestDatabase::create(choice).await;
            let context = context_on(&database, ManualClock::starting_now()).await;
            add_user(&context, "alice", "alice's password").await;
            add_user(&context, "bob", "bob's password").await;
            grant_role(&context, &AdminCaller::operator(), "alice")
                .await
                .unwrap();

            let wrong = login(&context, address(), "alice", "guess".to_owned()).await;
            assert!(
                matches!(&wrong, Err(AdminError::Unauthenticated(message)) if message == "wrong username or password"),
                "{choice:?}: {wrong:?}"
            );
            let unknown = login(&context, address(), "nobody", "guess".to_owned()).await;
            assert!(
                matches!(unknown, Err(AdminError::Unauthenticated(_))),
                "{choice:?}"
            );
            let not_admin = login(&context, address(), "bob", "bob's password".to_owned()).await;
            assert!(
                matches!(&not_admin, Err(AdminError::PermissionDenied(message)) if message == "bob@a.example is not an administrator"),
                "{choice:?}: {not_admin:?}"
            );
            let malformed = login(&context, address(), "bob@b.example", "x".to_owned()).await;
            assert!(
                matches!(malformed, Err(AdminError::Invalid(_))),
                "{choice:?}"
            );

            let opened = login(
                &context,
                address(),
                "alice@a.example",
                "alice's password".to_owned(),
            )
            .await
            .unwrap();
            assert_eq!(opened.user_id.to_string(), "alice@a.example");
            assert_eq!(opened.idle_timeout_seconds, 30 * 60);
            assert_eq!(opened.expires_at_ms, context.now_ms() + 12 * 60 * MINUTE_MS);
            assert_eq!(opened.token.len(), 43, "32 bytes, unpadded base64url");
            assert!(!format!("{opened:?}").contains(&opened.token));
            let session = authenticate(&context, Some(&opened.token), address())
                .await
                .unwrap();
            assert_eq!(session.caller.actor_name(), "alice@a.example");
            assert_eq!(session.caller.address, address());

            let entries: Vec<_> = audit_log(&context)
                .await
                .into_iter()
                .filter(|entry| entry.action == "session.login")
                .map(|entry| (entry.actor, entry.succeeded, entry.detail, entry.address))
                .collect();
            let at = "198.51.100.4".to_owned();
            assert_eq!(
                entries,
                [
                    (
                        "alice@a.example".to_owned(),
                        false,
                        "wrong username or password".to_owned(),
                        at.clone()
                    ),
                    (
                        "nobody@a.example".to_owned(),
                        false,
                        "wrong username or password".to_owned(),
                        at.clone()
                    ),
                    (
                        "bob@a.example".to_owned(),
                        false,
                        "bob@a.example is not an administrator".to_owned(),
                        at.clone()
                    ),
                    (
                        "alice@a.example".to_owned(),
                        true,
                        "opened an admin session".to_owned(),
                        at
                    ),
                ],
                "{choice:?}"
            );
        }
    }

    #[tokio::test]
    async fn the_login_limits_of_the_client_api_apply() {
        let database = TestDatabase::create(DatabaseChoice::Sqlite).await;
        let mut context = context_on(&database, ManualClock::starting_now()).await;
        context.config.limits.auth_attempt_burst = 2;
        context.config.limits.auth_attempts_per_minute = 1;
        context.attempt_limiter =
            std::sync::Arc::new(crate::service::attempt_limiter::LocalAttemptLimiter::new(
                context.config.limits.attempt_policy(),
            ));
        add_user(&context, "alice", "alice's password").await;
        grant_role(&context, &AdminCaller::operator(), "alice")
            .await
            .unwrap();
        for _ in 0..2 {
            let wrong = login(&context, address(), "alice", "guess".to_owned()).await;
            assert!(
                matches!(wrong, Err(AdminError::Unauthenticated(_))),
                "{wrong:?}"
            );
        }
        let refused = login(&context, address(), "alice", "alice's password".to_owned()).await;
        assert!(
            matches!(&refused, Err(AdminError::TooManyAttempts(refusal)) if refusal.limit == Limit::SourceRate && refusal.retry_after_ms > 0),
            "{refused:?}"
        );
        // Another address has its own bucket.
        let elsewhere = Some("203.0.113.8".parse().unwrap());
        login(&context, elsewhere, "alice", "alice's password".to_owned())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn sessions_end_when_idle_at_their_end_on_logout_and_with_the_role() {
        for choice in DatabaseChoice::ALL {
            let database = TestDatabase::create(choice).await;
            let clock = ManualClock::starting_now();
            let context = context_on(&database, clock.clone()).await;
            add_user(&context, "alice", "alice's password").await;
            let operator = AdminCaller::operator();
            grant_role(&context, &operator, "alice").await.unwrap();
            let open = || login(&context, address(), "alice", "alice's password".to_owned());

            assert_eq!(
                unauthenticated(authenticate(&context, None, address()).await),
                MISSING_TOKEN
            );
            assert_eq!(
                unauthenticated(authenticate(&context, Some("not-a-session"), address()).await),
                UNKNOWN_SESSION
            );

            // Idle: a call every 29 minutes keeps it open, 30 idle minutes end it.
            let busy = open().await.unwrap();
            for _ in 0..3 {
                clock.advance_ms(29 * MINUTE_MS);
                authenticate(&context, Some(&busy.token), address())
                    .await
                    .unwrap();
            }
            clock.advance_ms(30 * MINUTE_MS);
            assert_eq!(
                unauthenticated(authenticate(&context, Some(&busy.token), address()).await),
                EXPIRED_SESSION
            );
            // Deleted when found ended.
            assert_eq!(
                unauthenticated(authenticate(&context, Some(&busy.token), address()).await),
                UNKNOWN_SESSION
            );

            // Absolute: busy all along, it ends 12 hours after the login.
            let long = open().await.unwrap();
            for _ in 0..(12 * 60 / 20 - 1) {
                clock.advance_ms(20 * MINUTE_MS);
                authenticate(&context, Some(&long.token), address())
                    .await
                    .unwrap();
            }
            clock.advance_ms(20 * MINUTE_MS);
            assert_eq!(
                unauthenticated(authenticate(&context, Some(&long.token), address()).await),
                EXPIRED_SESSION
            );

            // Logout, audited.
            let short = open().await.unwrap();
            let session = authenticate(&context, Some(&short.token), address())
                .await
                .unwrap();
            logout(&context, &session).await.unwrap();
            assert_eq!(
                unauthenticated(authenticate(&context, Some(&short.token), address()).await),
                UNKNOWN_SESSION
            );
            let last = audit_log(&context).await.pop().unwrap();
            assert_eq!(
                (last.actor.as_str(), last.action.as_str(), last.succeeded),
                ("alice@a.example", "session.logout", true)
            );

            // Revoking the role ends every session of the account.
            let first = open().await.unwrap();
            let second = open().await.unwrap();
            revoke_role(&context, &operator, "alice").await.unwrap();
            for token in [&first.token, &second.token] {
                assert_eq!(
                    unauthenticated(authenticate(&context, Some(token), address()).await),
                    UNKNOWN_SESSION,
                    "{choice:?}"
                );
            }
            let last = audit_log(&context).await.pop().unwrap();
            assert_eq!(
                last.detail, "revoked the admin role; 2 admin session(s) ended",
                "{choice:?}"
            );

            // The janitor deletes what ended by time, and nothing else.
            grant_role(&context, &operator, "alice").await.unwrap();
            let idle = open().await.unwrap();
            clock.advance_ms(10 * MINUTE_MS);
            let fresh = open().await.unwrap();
            clock.advance_ms(25 * MINUTE_MS);
            assert_eq!(
                delete_ended_admin_sessions(&context).await.unwrap(),
                1,
                "{choice:?}"
            );
            assert_eq!(
                unauthenticated(authenticate(&context, Some(&idle.token), address()).await),
                UNKNOWN_SESSION
            );
            authenticate(&context, Some(&fresh.token), address())
                .await
                .unwrap();
        }
    }

    #[tokio::test]
    async fn a_session_of_a_suspended_account_is_no_session() {
        for choice in DatabaseChoice::ALL {
            let database = TestDatabase::create(choice).await;
            let context = context_on(&database, ManualClock::starting_now()).await;
            let alice = add_user(&context, "alice", "alice's password").await;
            grant_role(&context, &AdminCaller::operator(), "alice")
                .await
                .unwrap();
            let session = login(&context, address(), "alice", "alice's password".to_owned())
                .await
                .unwrap();
            // The suspension's store step alone: as when it commits between a
            // login's check of the account and the insert of its session, so
            // that its ending of the account's sessions did not find this one.
            assert!(
                store::suspend_account(&context.store, alice.key, "a race", context.now_ms())
                    .await
                    .unwrap()
            );
            assert_eq!(
                unauthenticated(authenticate(&context, Some(&session.token), address()).await),
                UNKNOWN_SESSION,
                "{choice:?}"
            );
        }
    }
}
