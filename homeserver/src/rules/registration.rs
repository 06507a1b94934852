//! Who may register: the homeserver's policy, and whether a registration token
//! can still be used.

use serde::Deserialize;

/// Who may create an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegistrationPolicy {
    /// Anyone who can reach the client API.
    Open,
    /// Only with a registration token made by `conclave-homeserver registration-token create`.
    Token,
    /// Nobody.
    Closed,
}

/// What a registration must still show once the policy let it through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission<'a> {
    /// Nothing more (the `open` policy).
    Open,
    /// This registration token, to be checked and spent (the `token` policy).
    Token(&'a str),
}

/// Why a registration is refused before any account is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RegistrationRefusal {
    /// The policy is `closed`.
    #[error("registration is closed on this homeserver")]
    Closed,
    /// The policy is `token` and the request carries none.
    #[error("this homeserver requires a registration token")]
    TokenMissing,
    /// The token is unknown, expired, used up or revoked (one refusal for all,
    /// as the token's holder needs a new one in each case).
    #[error("the registration token is unknown, expired, used up or revoked")]
    TokenRejected,
}

/// Applies the policy to a registration carrying `token` (empty if none).
pub(crate) fn admit(
    policy: RegistrationPolicy,
    token: &str,
) -> Result<Admission<'_>, RegistrationRefusal> {
    match policy {
        RegistrationPolicy::Open => Ok(Admission::Open),
        RegistrationPolicy::Closed => Err(RegistrationRefusal::Closed),
        RegistrationPolicy::Token if token.is_empty() => Err(RegistrationRefusal::TokenMissing),
        RegistrationPolicy::Token => Ok(Admission::Token(token)),
    }
}

/// A stored registration token, as far as the rules care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RegistrationToken {
    /// How many registrations the token allows in all.
    pub(crate) uses_allowed: u32,
    /// How many it has been spent on.
    pub(crate) uses_count: u32,
    /// Milliseconds since the Unix epoch; `None` never expires.
    pub(crate) expires_at_ms: Option<i64>,
    /// When an administrator revoked it; `None` if not revoked.
    pub(crate) revoked_at_ms: Option<i64>,
}

/// Where a token stands, as the admin API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum TokenState {
    /// It has a use left, has not expired and was not revoked.
    Usable,
    /// Every use is spent.
    UsedUp,
    /// Past its expiry.
    Expired,
    /// Revoked by an administrator (whatever else is true of it).
    Revoked,
}

impl RegistrationToken {
    /// True if the token has a use left, has not expired at `now_ms` and was not
    /// revoked. The
    /// store's conditional UPDATE that spends a use (`consume_registration_token`)
    /// states the same condition in SQL, so that concurrent registrations cannot
    /// overspend a token; a store test holds the two equal.
    pub(crate) fn is_usable(&self, now_ms: i64) -> bool {
        self.state(now_ms) == TokenState::Usable
    }

    /// Where the token stands at `now_ms`: a revocation says the most (an
    /// administrator's decision), then spent uses, then the expiry.
    pub(crate) fn state(&self, now_ms: i64) -> TokenState {
        if self.revoked_at_ms.is_some() {
            TokenState::Revoked
        } else if self.uses_count >= self.uses_allowed {
            TokenState::UsedUp
        } else if self
            .expires_at_ms
            .is_some_and(|expires_at_ms| expires_at_ms <= now_ms)
        {
            TokenState::Expired
        } else {
            TokenState::Usable
        }
    }

    /// Registrations the token still allows at `now_ms` (0 unless usable).
    pub(crate) fn uses_remaining(&self, now_ms: i64) -> u32 {
        if self.is_usable(now_ms) {
            self.uses_allowed - self.uses_count
        } else {
            0
        }
    }
}

/// Most registrations one token may allow.
pub(crate) const MAX_TOKEN_USES: u32 = 1_000_000;
/// Longest validity of a token, in days (ten years).
pub(crate) const MAX_TOKEN_VALID_DAYS: u32 = 3650;

/// The `valid_for_days` of a token that never expires.
pub(crate) const NEVER_EXPIRES: u32 = 0;

/// Why a new token's terms are refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TokenTermsError {
    #[error("uses must be 1 to {MAX_TOKEN_USES}, not {0}")]
    Uses(u32),
    #[error("valid_for_days must be 1 to {MAX_TOKEN_VALID_DAYS}, or 0 for never, not {0}")]
    ValidForDays(u32),
}

/// Checks a new token's terms: `uses` registrations, valid for
/// `valid_for_days` days (0: never expires). Returns the validity in
/// milliseconds (`None`: never expires).
pub(crate) fn check_token_terms(
    uses: u32,
    valid_for_days: u32,
) -> Result<Option<i64>, TokenTermsError> {
    if !(1..=MAX_TOKEN_USES).contains(&uses) {
        return Err(TokenTermsError::Uses(uses));
    }
    match valid_for_days {
        NEVER_EXPIRES => Ok(None),
        days if days <= MAX_TOKEN_VALID_DAYS => Ok(Some(i64::from(days) * 24 * 3600 * 1000)),
        days => Err(TokenTermsError::ValidForDays(days)),
    }
}

/// When a token made at `now_ms` and valid for `valid_for_ms` expires (`None`:
/// never). A validity beyond the end of time ends there.
pub(crate) fn token_expiry(now_ms: i64, valid_for_ms: Option<i64>) -> Option<i64> {
    valid_for_ms.map(|valid_for_ms| now_ms.saturating_add(valid_for_ms))
}

/// Tokens, and whether each is usable at [`cases::NOW_MS`]: the rule's table,
/// which the store's test also runs through the SQL that spends a use.
#[cfg(test)]
pub(crate) mod cases {
    use super::RegistrationToken;

    pub(crate) const NOW_MS: i64 = 1_000_000;

    /// A token allowing `uses_allowed`, spent `uses_count` times, expiring at
    /// `expires_at_ms`.
    fn token(uses_allowed: u32, uses_count: u32, expires_at_ms: Option<i64>) -> RegistrationToken {
        RegistrationToken {
            uses_allowed,
            uses_count,
            expires_at_ms,
            revoked_at_ms: None,
        }
    }

    /// The same token, revoked at `revoked_at_ms`.
    fn revoked(token: RegistrationToken, revoked_at_ms: i64) -> RegistrationToken {
        RegistrationToken {
            revoked_at_ms: Some(revoked_at_ms),
            ..token
        }
    }

    /// (case, token, usable at `NOW_MS`)
    pub(crate) fn usability() -> Vec<(&'static str, RegistrationToken, bool)> {
        vec![
            ("unused, no expiry", token(1, 0, None), true),
            ("one use left of many", token(5, 4, None), true),
            ("used up", token(1, 1, None), false),
            ("overspent", token(1, 2, None), false),
            ("allows no use at all", token(0, 0, None), false),
            ("expires later", token(1, 0, Some(NOW_MS + 1)), true),
            (
                "expires this very millisecond",
                token(1, 0, Some(NOW_MS)),
                false,
            ),
            ("expired", token(1, 0, Some(NOW_MS - 1)), false),
            ("expired and used up", token(1, 1, Some(NOW_MS - 1)), false),
            (
                "revoked, unused",
                revoked(token(5, 0, None), NOW_MS - 1),
                false,
            ),
            (
                "revoked, expires later",
                revoked(token(5, 2, Some(NOW_MS + 1)), NOW_MS - 10),
                false,
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_admits_or_refuses() {
        use RegistrationPolicy::{Closed, Open, Token};
        for (policy, token, expected) in [
            (Open, "", Ok(Admission::Open)),
            (Open, "ignored", Ok(Admission::Open)),
            (Token, "secret", Ok(Admission::Token("secret"))),
            (Token, "", Err(RegistrationRefusal::TokenMissing)),
            (Closed, "", Err(RegistrationRefusal::Closed)),
            (Closed, "secret", Err(RegistrationRefusal::Closed)),
        ] {
            assert_eq!(admit(policy, token), expected, "{policy:?} with {token:?}");
        }
    }

    #[test]
    fn a_token_is_usable_with_a_use_left_before_it_expires() {
        for (case, token, usable) in cases::usability() {
            assert_eq!(token.is_usable(cases::NOW_MS), usable, "{case}");
        }
    }

    #[test]
    fn a_token_states_where_it_stands_and_its_remaining_uses() {
        let at = cases::NOW_MS;
        let token = |allowed, count, expires, revoked| RegistrationToken {
            uses_allowed: allowed,
            uses_count: count,
            expires_at_ms: expires,
            revoked_at_ms: revoked,
        };
        for (case, token, state, remaining) in [
            ("fresh", token(5, 2, None, None), TokenState::Usable, 3),
            ("used up", token(2, 2, None, None), TokenState::UsedUp, 0),
            (
                "expired",
                token(2, 0, Some(at), None),
                TokenState::Expired,
                0,
            ),
            (
                "used up and expired",
                token(2, 2, Some(at - 1), None),
                TokenState::UsedUp,
                0,
            ),
            (
                "revoked beats the rest",
                token(2, 2, Some(at - 1), Some(at - 5)),
                TokenState::Revoked,
                0,
            ),
            (
                "revoked",
                token(9, 0, None, Some(at)),
                TokenState::Revoked,
                0,
            ),
        ] {
            assert_eq!(token.state(at), state, "{case}");
            assert_eq!(token.uses_remaining(at), remaining, "{case}");
        }
    }

    #[test]
    fn new_token_terms_are_checked() {
        for (uses, days, expected) in [
            (1, 0, Ok(None)),
            (MAX_TOKEN_USES, 1, Ok(Some(86_400_000))),
            (5, MAX_TOKEN_VALID_DAYS, Ok(Some(3650 * 86_400_000))),
            (0, 0, Err(TokenTermsError::Uses(0))),
            (
                MAX_TOKEN_USES + 1,
                0,
                Err(TokenTermsError::Uses(MAX_TOKEN_USES + 1)),
            ),
            (1, 3651, Err(TokenTermsError::ValidForDays(3651))),
        ] {
            assert_eq!(check_token_terms(uses, days), expected, "{uses} {days}");
        }
        assert_eq!(
            TokenTermsError::Uses(0).to_string(),
            "uses must be 1 to 1000000, not 0"
        );
    }

    #[test]
    fn expiry_is_now_plus_validity_and_saturates() {
        assert_eq!(token_expiry(1_000, None), None);
        assert_eq!(token_expiry(1_000, Some(500)), Some(1_500));
        assert_eq!(token_expiry(1_000, Some(i64::MAX)), Some(i64::MAX));
    }
}
