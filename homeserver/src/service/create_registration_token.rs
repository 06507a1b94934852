//! An operator creates a registration token: under the `token` policy,
//! registering needs one (`conclave-homeserver registration-token create`).

use super::{Context, secrets};
use crate::rules::registration::token_expiry;
use crate::store::{self, StoreError};

/// A freshly made token; the secret is shown once and only its hash is kept.
#[derive(Debug)]
pub struct NewRegistrationToken {
    pub token: String,
    pub uses_allowed: u32,
    /// Milliseconds since the Unix epoch; `None` never expires.
    pub expires_at_ms: Option<i64>,
}

/// Makes a token good for `uses_allowed` registrations, expiring after
/// `valid_for_ms` if given.
pub(crate) async fn create_registration_token(
    context: &Context,
    uses_allowed: u32,
    valid_for_ms: Option<i64>,
) -> Result<NewRegistrationToken, StoreError> {
    let token = secrets::new_token();
    let now_ms = context.now_ms();
    let expires_at_ms = token_expiry(now_ms, valid_for_ms);
    store::insert_registration_token(
        &context.store,
        &secrets::hash_token(&token),
        uses_allowed,
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
