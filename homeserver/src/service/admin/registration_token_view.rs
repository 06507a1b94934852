//! A registration token as administrators see it (never its secret), shared by
//! the token use cases.

use crate::rules::registration::TokenState;
use crate::store::RegistrationTokenRecord;

/// A token's record and where it stands.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct RegistrationTokenView {
    pub(crate) id: u64,
    pub(crate) uses_allowed: u32,
    pub(crate) uses_count: u32,
    /// 0 unless usable.
    pub(crate) uses_remaining: u32,
    /// Milliseconds since the Unix epoch, as the other times.
    pub(crate) created_at_ms: i64,
    /// `None`: never expires.
    pub(crate) expires_at_ms: Option<i64>,
    pub(crate) revoked_at_ms: Option<i64>,
    /// An administrator's user id, or `operator`.
    pub(crate) created_by: String,
    pub(crate) state: TokenState,
}

impl RegistrationTokenView {
    /// The token `record` at `now_ms`.
    pub(crate) fn at(record: RegistrationTokenRecord, now_ms: i64) -> RegistrationTokenView {
        RegistrationTokenView {
            id: record.id,
            uses_allowed: record.token.uses_allowed,
            uses_count: record.token.uses_count,
            uses_remaining: record.token.uses_remaining(now_ms),
            created_at_ms: record.created_at_ms,
            expires_at_ms: record.token.expires_at_ms,
            revoked_at_ms: record.token.revoked_at_ms,
            created_by: record.created_by,
            state: record.token.state(now_ms),
        }
    }
}
