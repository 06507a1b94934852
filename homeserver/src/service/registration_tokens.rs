//! Registration tokens: under the `token` policy, registering needs one. An
//! operator makes them with `conclave-homeserver registration-token create`.

use super::{Context, secrets};
use crate::store::{self, Connection, StoreError};

/// A freshly made token; the secret is shown once and only its hash is kept.
#[derive(Debug)]
pub struct NewRegistrationToken {
    pub token: String,
    pub uses_allowed: u32,
    pub expires_at_ms: Option<i64>,
}

/// Makes a token good for `uses_allowed` registrations, optionally expiring.
pub(crate) async fn create(
    context: &Context,
    uses_allowed: u32,
    valid_for_ms: Option<i64>,
) -> Result<NewRegistrationToken, StoreError> {
    let token = secrets::new_token();
    let now_ms = context.now_ms();
    let expires_at_ms = valid_for_ms.map(|valid_for| now_ms.saturating_add(valid_for));
    let uses = i32::try_from(uses_allowed).unwrap_or(i32::MAX);
    store::insert_registration_token(
        &context.store,
        &secrets::hash_token(&token),
        uses,
        expires_at_ms,
        now_ms,
    )
    .await?;
    Ok(NewRegistrationToken {
        token,
        uses_allowed,
        expires_at_ms,
    })
}

/// Spends one use of a token inside the registration's transaction, so a failed
/// registration gives the use back.
pub(crate) async fn consume(
    db: &impl Connection,
    token_hash: &[u8],
    now_ms: i64,
) -> Result<bool, StoreError> {
    store::consume_registration_token(db, token_hash, now_ms).await
}
