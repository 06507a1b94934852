//! CreateRegistrationToken: a token for `registration.policy = "token"`, good
//! for some registrations and, if asked, for some days. The secret is shown
//! once, to the caller; the server keeps its SHA-256. The audit entry names
//! the token's id, never its secret. The operator's
//! `conclave-homeserver registration-token create` and `admin tokens create`
//! come here too.

use super::registration_token_view::RegistrationTokenView;
use super::{AdminCaller, AdminError, audit};
use crate::rules::registration::{check_token_terms, token_expiry};
use crate::service::{Context, secrets};
use crate::store::{self, NewRegistrationTokenRow};

/// The audit log's action.
const ACTION: &str = "registration_token.create";

/// A new token: the secret, shown this once, and its record.
#[derive(Clone, serde::Serialize)]
pub(crate) struct CreatedRegistrationToken {
    pub(crate) token: String,
    pub(crate) registration_token: RegistrationTokenView,
}

/// By hand: the secret must never reach a log or a panic message.
impl std::fmt::Debug for CreatedRegistrationToken {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("CreatedRegistrationToken")
            .field("token", &"<redacted>")
            .field("registration_token", &self.registration_token)
            .finish()
    }
}

/// Makes a token good for `uses` registrations (1 to 1,000,000), expiring
/// after `valid_for_days` days (1 to 3650; 0: never).
pub(crate) async fn create_registration_token(
    context: &Context,
    caller: &AdminCaller,
    uses: u32,
    valid_for_days: u32,
) -> Result<CreatedRegistrationToken, AdminError> {
    let valid_for_ms = match check_token_terms(uses, valid_for_days) {
        Ok(valid_for_ms) => valid_for_ms,
        Err(refusal) => {
            let refusal = refusal.to_string();
            audit::record(context, caller, ACTION, "", &Err(refusal.clone())).await?;
            return Err(AdminError::Invalid(refusal));
        }
    };
    let token = secrets::new_token();
    let now_ms = context.now_ms();
    let record = store::insert_registration_token(
        &context.store,
        NewRegistrationTokenRow {
            token_hash: &secrets::hash_token(&token),
            uses_allowed: uses,
            expires_at_ms: token_expiry(now_ms, valid_for_ms),
            created_by: &caller.actor_name(),
            now_ms,
        },
    )
    .await?;
    let detail = match record.token.expires_at_ms {
        Some(expires_at_ms) => format!("uses {uses}, expires at {expires_at_ms} ms"),
        None => format!("uses {uses}, never expires"),
    };
    audit::record(context, caller, ACTION, &record.id.to_string(), &Ok(detail)).await?;
    Ok(CreatedRegistrationToken {
        token,
        registration_token: RegistrationTokenView::at(record, now_ms),
    })
}
