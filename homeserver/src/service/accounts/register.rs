//! Registering: a new user with its first device.

use super::enrolment::{check_proof, enrol_device};
use super::{AccountError, Enrolment, Session};
use crate::rules::account::{AccountRuleError, check_device, check_password};
use crate::rules::attempt_limits::{Attempt, Source};
use crate::rules::registration::{Admission, RegistrationRefusal, admit};
use crate::service::{Context, secrets};
use crate::store;
use conclave_core::ids::Username;

pub(crate) struct Registration {
    pub(crate) username: String,
    pub(crate) password: String,
    /// Empty if the request carries none.
    pub(crate) registration_token: String,
    pub(crate) device: Enrolment,
}

/// Registers from `source`. The attempt limit comes after the cheap checks of
/// the request and before anything else: a refused attempt reads nothing (so
/// it cannot probe usernames), writes nothing and hashes nothing.
pub(crate) async fn register(
    context: &Context,
    source: Source,
    mut request: Registration,
) -> Result<Session, AccountError> {
    let username: Username = request.username.parse().map_err(AccountRuleError::from)?;
    check_password(&request.password)?;
    let display_name = check_device(
        &request.device.signature_public_key,
        &request.device.display_name,
    )?;
    let token_hash = match admit(
        context.config.registration.policy,
        &request.registration_token,
    )? {
        Admission::Open => None,
        Admission::Token(token) => Some(secrets::hash_token(token)),
    };
    super::admit_attempt(context, Attempt::Register { source }).await?;
    // The proof is over the request as sent, so it is checked before the display
    // name is normalised; after the attempt limit and before any
    // database work but reading whether its challenge was used.
    let challenge = check_proof(context, &username, &request.device).await?;
    // Stored as checked: in NFC.
    request.device.display_name = display_name;
    // Cheap refusals before the expensive hash; the transaction below re-checks
    // (spends the token, inserts through the unique keys), which is what actually
    // guarantees both. The token comes first so that without a valid one nobody
    // can probe which usernames exist.
    if let Some(token_hash) = &token_hash {
        let token = store::find_registration_token(&context.store, token_hash).await?;
        if !token.is_some_and(|token| token.is_usable(context.now_ms())) {
            return Err(RegistrationRefusal::TokenRejected.into());
        }
    }
    if store::find_user_by_username(&context.store, &username)
        .await?
        .is_some()
    {
        return Err(AccountError::UsernameTaken(username));
    }
    let password_hash = context
        .password_hasher
        .hash_password(request.password)
        .await?;
    let now_ms = context.now_ms();
    let transaction = context.store.begin().await?;
    // Spending the use inside the registration's transaction gives it back if
    // the registration fails.
    if let Some(token_hash) = token_hash
        && !store::consume_registration_token(&transaction, &token_hash, now_ms).await?
    {
        return Err(RegistrationRefusal::TokenRejected.into());
    }
    let user = store::insert_user(&transaction, &username, &password_hash, now_ms)
        .await?
        .ok_or_else(|| AccountError::UsernameTaken(username.clone()))?;
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
    tracing::info!(user = %session.identity.user_id(), device = %session.identity.device_id(), "registered");
    Ok(session)
}
