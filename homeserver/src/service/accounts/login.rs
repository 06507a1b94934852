//! Logging in: a new device of an existing user.

use super::enrolment::{check_proof, enrol_device};
use super::{AccountError, Enrolment, Session};
use crate::rules::account::{check_device, parse_login_name};
use crate::service::Context;
use crate::store;

pub(crate) struct Login {
    pub(crate) username: String,
    pub(crate) password: String,
    pub(crate) device: Enrolment,
}

pub(crate) async fn login(context: &Context, mut request: Login) -> Result<Session, AccountError> {
    let username = parse_login_name(&request.username, &context.domain)?;
    let display_name = check_device(
        &request.device.signature_public_key,
        &request.device.display_name,
    )?;
    // Over the request as sent, before normalisation; and before the password
    // hash, so a request without a valid proof costs no Argon2 work.
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
        _ => return Err(AccountError::WrongCredentials),
    };
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
