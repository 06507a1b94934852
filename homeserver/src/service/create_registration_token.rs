//! An operator creates a registration token: under the `token` policy,
//! registering needs one (`conclave-homeserver registration-token create`).

use super::{Context, secrets};
use crate::rules::registration::token_expiry;
use crate::store::{self, StoreError};

/// A freshly made token; the secret is shown once and only its hash is kept.
pub struct NewRegistrationToken {
    pub token: String,
    pub uses_allowed: u32,
    /// Milliseconds since the Unix epoch; `None` never expires.
    pub expires_at_ms: Option<i64>,
}

/// By hand: the token must never reach a log or a panic message.
impl std::fmt::Debug for NewRegistrationToken {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("NewRegistrationToken")
            .field("token", &"<redacted>")
            .field("uses_allowed", &self.uses_allowed)
            .field("expires_at_ms", &self.expires_at_ms)
            .finish()
    }
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
        store::NewRegistrationTokenRow {
            token_hash: &secrets::hash_token(&token),
            uses_allowed,
            expires_at_ms,
            created_by: "operator",
            now_ms,
        },
    )
    .await?;
    Ok(NewRegistrationToken {
        token,
        uses_allowed,
        expires_at_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_token_is_debugged_without_its_secret() {
        let token = NewRegistrationToken {
            token: "token-4f2a9b".to_owned(),
            uses_allowed: 5,
            expires_at_ms: None,
        };
        let shown = format!("{token:?}");
        assert!(!shown.contains("token-4f2a9b"), "{shown}");
        assert!(shown.contains("uses_allowed: 5"), "{shown}");
    }
}
