//! Logging in as an administrator: the client API's password check and its
//! attempt limits, then the admin role, then a new admin session.

use super::audit::record_as;
use super::{AdminError, user_id};
use crate::rules::account::parse_login_name;
use crate::rules::admin_session::{expires_at_ms, idle_timeout_ms};
use crate::rules::attempt_limits::{Attempt, Source};
use crate::service::accounts::admit_attempt;
use crate::service::{Context, secrets};
use crate::store::{self, NewAdminSession};
use conclave_core::ids::UserId;
use std::net::IpAddr;

/// A new admin session, returned once.
pub(crate) struct OpenedAdminSession {
    /// The bearer token; the database keeps only its SHA-256.
    pub(crate) token: String,
    pub(crate) user_id: UserId,
    pub(crate) expires_at_ms: i64,
    pub(crate) idle_timeout_seconds: u32,
}

/// By hand: the token must never reach a log or a panic message.
impl std::fmt::Debug for OpenedAdminSession {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("OpenedAdminSession")
            .field("user_id", &self.user_id)
            .field("expires_at_ms", &self.expires_at_ms)
            .finish_non_exhaustive()
    }
}

/// Logs `username` in with `password` from `address`. A refused attempt is
/// in the audit log (`session.login`, by the user id as written), except a
/// malformed username and a refusal of the attempt limits: both come before
/// anything is read, and recording a flood of them would let a guesser fill
/// the log.
pub(crate) async fn login(
    context: &Context,
    address: Option<IpAddr>,
    username: &str,
    password: String,
) -> Result<OpenedAdminSession, AdminError> {
    let username = parse_login_name(username.trim(), &context.domain)
        .map_err(|error| AdminError::Invalid(error.to_string()))?;
    let source = address.map_or(Source::Unknown, Source::of);
    admit_attempt(
        context,
        Attempt::Login {
            source,
            account: username.clone(),
        },
    )
    .await?;
    let user_id = user_id(context, &username);
    let actor = user_id.to_string();
    let audit = |outcome: Result<String, String>| {
        let actor = actor.clone();
        async move { record_as(context, &actor, address, "session.login", "", &outcome).await }
    };
    let user = store::find_user_by_username(&context.store, &username).await?;
    let password_matches = context
        .password_hasher
        .verify_password(
            password,
            user.as_ref().map(|user| user.password_hash.clone()),
        )
        .await?;
    let limiter = &context.attempt_limiter;
    let user = match user {
        Some(user) if password_matches => user,
        _ => {
            limiter
                .record_login_failure(username, source, context.now_ms())
                .await;
            audit(Err("wrong username or password".to_owned())).await?;
            return Err(AdminError::Unauthenticated(
                "wrong username or password".to_owned(),
            ));
        }
    };
    limiter.record_login_success(username, source).await;
    if !user.is_admin {
        let reason = format!("{user_id} is not an administrator");
        audit(Err(reason.clone())).await?;
        return Err(AdminError::PermissionDenied(reason));
    }
    let admin = &context.config.admin;
    let token = secrets::new_token();
    let now_ms = context.now_ms();
    let expires_at_ms = expires_at_ms(now_ms, admin.session_max_hours);
    let address_text = address.map(|address| address.to_canonical().to_string());
    store::insert_admin_session(
        &context.store,
        NewAdminSession {
            token_hash: &secrets::hash_token(&token),
            user: user.key,
            now_ms,
            expires_at_ms,
            address: address_text.as_deref().unwrap_or_default(),
        },
    )
    .await?;
    audit(Ok("opened an admin session".to_owned())).await?;
    let idle_seconds = idle_timeout_ms(admin.session_idle_minutes) / 1000;
    Ok(OpenedAdminSession {
        token,
        user_id,
        expires_at_ms,
        idle_timeout_seconds: u32::try_from(idle_seconds).unwrap_or(u32::MAX), // tidy: saturating (at most a day, by validation)
    })
}
