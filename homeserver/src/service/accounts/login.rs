//! Logging in: a new device of an existing user.

use super::enrolment::{check_proof, enrol_device};
use super::{AccountError, Enrolment, Session};
use crate::rules::account::{check_device, parse_login_name};
use crate::rules::account_state::AccountState;
use crate::rules::attempt_limits::{Attempt, Source};
use crate::service::Context;
use crate::store;

pub(crate) struct Login {
    pub(crate) username: String,
    pub(crate) password: String,
    pub(crate) device: Enrolment,
}

/// Logs in from `source`. The attempt limits come after the cheap checks of the
/// request and before anything else: a refused attempt reads no account and
/// hashes nothing.
pub(crate) async fn login(
    context: &Context,
    source: Source,
    mut request: Login,
) -> Result<Session, AccountError> {
    let username = parse_login_name(&request.username, &context.domain)?;
    let display_name = check_device(
        &request.device.signature_public_key,
        &request.device.display_name,
    )?;
    let limiter = &context.attempt_limiter;
    let attempt = Attempt::Login {
        source,
        account: username.clone(),
    };
    super::admit_attempt(context, attempt).await?;
    // Over the request as sent, before normalisation; after the attempt limit and
    // before the password hash, so a request without a valid proof costs no
    // Argon2 work.
    let challenge = check_proof(context, &username, &request.device).await?;
    // Stored as checked: in NFC.
    request.device.display_name = display_name;
    let user = store::find_user_by_username(&context.store, &username).await?;
    let password_matches = context
        .password_hasher
        .verify_password(
            request.password,
            user.as_ref().map(|user| user.password_hash.clone()),
        )
        .await?;
    let user = match user {
        Some(user) if password_matches => user,
        _ => {
            limiter
                .record_login_failure(username, source, context.now_ms())
                .await;
            return Err(AccountError::WrongCredentials);
        }
    };
    // The password was right: whatever happens to the enrolment below, this
    // source has stopped guessing.
    limiter.record_login_success(username.clone(), source).await;
    // Only after the password: the state of an account is not told to whoever
    // guesses its name.
    match user.state {
        AccountState::Active => {}
        AccountState::Suspended { .. } => return Err(AccountError::AccountSuspended),
        AccountState::Deactivated { .. } => return Err(AccountError::AccountDeactivated),
    }
    let transaction = context.store.begin().await?;
    let session = enrol_device(
        context,
        &transaction,
        user.key,
        &username,
        request.device,
        &challenge,
    )
    .await?;
    transaction.commit().await?;
    tracing::info!(user = %session.identity.user_id(), device = %session.identity.device_id(), "logged in");
    Ok(session)
}
