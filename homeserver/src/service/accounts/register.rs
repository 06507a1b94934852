//! Registering: a new user with its first device.

use super::enrolment::{check_enrolment, enrol_device};
use super::{AccountError, Enrolment, Session};
use crate::config::RegistrationPolicy;
use crate::rules::account::{AccountRuleError, check_password};
use crate::service::{Context, registration_tokens, secrets};
use crate::store;
use conclave_core::ids::Username;

pub(crate) struct Registration {
    pub(crate) username: String,
    pub(crate) password: String,
    pub(crate) registration_token: String,
    pub(crate) device: Enrolment,
}

pub(crate) async fn register(
    context: &Context,
    request: Registration,
) -> Result<Session, AccountError> {
    let username: Username = request.username.parse().map_err(AccountRuleError::from)?;
    check_password(&request.password)?;
    check_enrolment(&request.device)?;
    let token_hash = match context.config.registration.policy {
        RegistrationPolicy::Closed => return Err(AccountError::RegistrationClosed),
        RegistrationPolicy::Token if request.registration_token.is_empty() => {
            return Err(AccountError::RegistrationTokenMissing);
        }
        RegistrationPolicy::Token => Some(secrets::hash_token(&request.registration_token)),
        RegistrationPolicy::Open => None,
    };
    // Cheap refusals before the expensive hash; the transaction below re-checks
    // (spends the token, inserts through the unique keys), which is what actually
    // guarantees both. The token comes first so that without a valid one nobody
    // can probe which usernames exist.
    if let Some(token_hash) = &token_hash
        && !store::registration_token_usable(&context.store, token_hash, context.now_ms()).await?
    {
        return Err(AccountError::RegistrationTokenRejected);
    }
    if store::find_user_by_username(&context.store, &username)
        .await?
        .is_some()
    {
        return Err(AccountError::UsernameTaken(username.clone()));
    }
    let password_hash = secrets::hash_password(request.password).await?;
    let now_ms = context.now_ms();
    let transaction = context.store.begin().await?;
    if let Some(token_hash) = token_hash
        && !registration_tokens::consume(&transaction, &token_hash, now_ms).await?
    {
        return Err(AccountError::RegistrationTokenRejected);
    }
    let user = store::insert_user(&transaction, &username, &password_hash, now_ms)
        .await?
        .ok_or_else(|| AccountError::UsernameTaken(username.clone()))?;
    let session = enrol_device(context, &transaction, user.key, &username, request.device).await?;
    transaction.commit().await?;
    tracing::info!(user = %session.identity.user_id(), device = %session.identity.device_id(), "registered");
    Ok(session)
}
