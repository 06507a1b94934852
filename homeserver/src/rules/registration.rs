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
    /// The token is unknown, expired or used up (one refusal for all three, as
    /// the token's holder needs a new one in each case).
    #[error("the registration token is unknown, expired or used up")]
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
}

impl RegistrationToken {
    /// True if the token has a use left and has not expired at `now_ms`. The
    /// store's conditional UPDATE that spends a use (`consume_registration_token`)
    /// states the same condition in SQL, so that concurrent registrations cannot
    /// overspend a token; a store test holds the two equal.
    pub(crate) fn is_usable(&self, now_ms: i64) -> bool {
        self.uses_count < self.uses_allowed
            && self
                .expires_at_ms
                .is_none_or(|expires_at_ms| expires_at_ms > now_ms)
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
    fn expiry_is_now_plus_validity_and_saturates() {
        assert_eq!(token_expiry(1_000, None), None);
        assert_eq!(token_expiry(1_000, Some(500)), Some(1_500));
        assert_eq!(token_expiry(1_000, Some(i64::MAX)), Some(i64::MAX));
    }
}
