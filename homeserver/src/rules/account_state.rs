//! Where an account stands (active, suspended, deactivated) and which
//! administrator actions apply to it: suspending, unsuspending, deactivating.
//! The store records the state; the admin use cases ask these rules first and
//! change nothing when they refuse.

/// Where an account stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AccountState {
    /// Can log in and use its devices.
    Active,
    /// Suspended by an administrator at `since_ms`: its devices stay enrolled
    /// and in their groups, but every call of theirs is refused until it is
    /// unsuspended.
    Suspended { since_ms: i64 },
    /// Deactivated for good at `since_ms`: its devices are gone and its
    /// username stays taken.
    Deactivated { since_ms: i64 },
}

impl AccountState {
    /// The state the two stored times describe. Deactivation wins: it is
    /// final, whatever the suspension column still says.
    pub(crate) fn from_times(
        suspended_at_ms: Option<i64>,
        deactivated_at_ms: Option<i64>,
    ) -> AccountState {
        match (deactivated_at_ms, suspended_at_ms) {
            (Some(since_ms), _) => AccountState::Deactivated { since_ms },
            (None, Some(since_ms)) => AccountState::Suspended { since_ms },
            (None, None) => AccountState::Active,
        }
    }

    /// When it was suspended or deactivated; `None` while active.
    pub(crate) fn changed_at_ms(self) -> Option<i64> {
        match self {
            AccountState::Active => None,
            AccountState::Suspended { since_ms } | AccountState::Deactivated { since_ms } => {
                Some(since_ms)
            }
        }
    }

    /// True if the account's devices may call and it may log in.
    pub(crate) fn is_active(self) -> bool {
        self == AccountState::Active
    }

    /// `active`, `suspended` or `deactivated`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            AccountState::Active => "active",
            AccountState::Suspended { .. } => "suspended",
            AccountState::Deactivated { .. } => "deactivated",
        }
    }
}

/// Longest reason an administrator may give for suspending or deactivating,
/// in characters.
pub(crate) const MAX_REASON_CHARS: usize = 500;

/// Why an administrator action does not apply to an account. The messages
/// name the account's state, as FAILED_PRECONDITION asks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum StateRefusal {
    /// The action would lock the administrator out of their own account.
    #[error("you cannot {action} your own account")]
    OwnAccount { action: &'static str },
    /// The account is not in a state the action applies to.
    #[error("the account is {state}, so it cannot be {done}")]
    WrongState {
        state: &'static str,
        done: &'static str,
    },
}

/// Whether an active account other than the caller's may be suspended.
pub(crate) fn check_suspend(state: AccountState, is_own: bool) -> Result<(), StateRefusal> {
    if is_own {
        return Err(StateRefusal::OwnAccount { action: "suspend" });
    }
    expect(state, AccountState::is_active, "suspended")
}

/// Whether the account is suspended, so that the suspension can be lifted.
pub(crate) fn check_unsuspend(state: AccountState) -> Result<(), StateRefusal> {
    expect(
        state,
        |state| matches!(state, AccountState::Suspended { .. }),
        "unsuspended",
    )
}

/// Whether an account other than the caller's may be deactivated: an active
/// or a suspended one (deactivating a suspended account is the usual end of a
/// suspension that is not lifted).
pub(crate) fn check_deactivate(state: AccountState, is_own: bool) -> Result<(), StateRefusal> {
    if is_own {
        return Err(StateRefusal::OwnAccount {
            action: "deactivate",
        });
    }
    expect(
        state,
        |state| !matches!(state, AccountState::Deactivated { .. }),
        "deactivated",
    )
}

fn expect(
    state: AccountState,
    applies: impl Fn(AccountState) -> bool,
    done: &'static str,
) -> Result<(), StateRefusal> {
    if applies(state) {
        Ok(())
    } else {
        Err(StateRefusal::WrongState {
            state: state.name(),
            done,
        })
    }
}

/// The reason as stored: trimmed, at most [`MAX_REASON_CHARS`] characters.
pub(crate) fn check_reason(reason: &str) -> Result<&str, String> {
    let reason = reason.trim();
    let chars = reason.chars().count();
    if chars > MAX_REASON_CHARS {
        return Err(format!(
            "reason must be at most {MAX_REASON_CHARS} characters, got {chars}"
        ));
    }
    if reason.chars().any(char::is_control) {
        return Err("reason may not contain control characters".to_owned());
    }
    Ok(reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACTIVE: AccountState = AccountState::Active;
    const SUSPENDED: AccountState = AccountState::Suspended { since_ms: 5 };
    const DEACTIVATED: AccountState = AccountState::Deactivated { since_ms: 9 };

    #[test]
    fn the_stored_times_give_the_state_and_deactivation_wins() {
        assert_eq!(AccountState::from_times(None, None), ACTIVE);
        assert_eq!(AccountState::from_times(Some(5), None), SUSPENDED);
        assert_eq!(AccountState::from_times(None, Some(9)), DEACTIVATED);
        assert_eq!(AccountState::from_times(Some(5), Some(9)), DEACTIVATED);
        assert_eq!(ACTIVE.changed_at_ms(), None);
        assert_eq!(SUSPENDED.changed_at_ms(), Some(5));
    }

    /// (state, own account) -> (suspend, unsuspend, deactivate) allowed.
    #[test]
    fn each_action_applies_to_its_states_only() {
        let table = [
            (ACTIVE, false, (true, false, true)),
            (SUSPENDED, false, (false, true, true)),
            (DEACTIVATED, false, (false, false, false)),
            (ACTIVE, true, (false, false, false)),
            (SUSPENDED, true, (false, true, false)),
        ];
        for (state, own, expected) in table {
            let got = (
                check_suspend(state, own).is_ok(),
                check_unsuspend(state).is_ok(),
                check_deactivate(state, own).is_ok(),
            );
            assert_eq!(got, expected, "{state:?}, own {own}");
        }
    }

    #[test]
    fn refusals_name_the_state_or_the_own_account() {
        let refusal = check_suspend(SUSPENDED, false).unwrap_err();
        assert_eq!(
            refusal.to_string(),
            "the account is suspended, so it cannot be suspended"
        );
        let refusal = check_unsuspend(ACTIVE).unwrap_err();
        assert_eq!(
            refusal.to_string(),
            "the account is active, so it cannot be unsuspended"
        );
        let refusal = check_deactivate(DEACTIVATED, false).unwrap_err();
        assert_eq!(
            refusal.to_string(),
            "the account is deactivated, so it cannot be deactivated"
        );
        let refusal = check_deactivate(ACTIVE, true).unwrap_err();
        assert_eq!(
            refusal.to_string(),
            "you cannot deactivate your own account"
        );
    }

    #[test]
    fn a_reason_is_trimmed_and_bounded() {
        assert_eq!(check_reason("  spam  "), Ok("spam"));
        assert_eq!(check_reason(""), Ok(""));
        assert!(check_reason(&"x".repeat(MAX_REASON_CHARS)).is_ok());
        let long = check_reason(&"x".repeat(MAX_REASON_CHARS + 1)).unwrap_err();
        assert!(long.contains("at most 500"), "{long}");
        assert!(check_reason("a\nb").is_err());
    }
}
