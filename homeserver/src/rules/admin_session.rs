//! When an admin session ends, and when a call renews it: an idle timeout
//! counted from the last call and an absolute end fixed at login. Time is an
//! argument.

/// A call renews its session's idle timer in the database at most this
/// often, so a busy console does not write on every call. The idle timeout
/// may then end a session up to this much early, which is at least a minute
/// and so far below it.
pub(crate) const RENEW_EVERY_MS: i64 = 60_000;

/// A session's times and the configured limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SessionTimes {
    pub(crate) last_used_at_ms: i64,
    pub(crate) expires_at_ms: i64,
    /// `[admin] session_idle_minutes`, in milliseconds.
    pub(crate) idle_timeout_ms: i64,
}

/// What a call finds its session to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SessionState {
    /// Usable; `renew` if the idle timer is due to be written again.
    Open { renew: bool },
    /// Idle for the idle timeout, or past its absolute end.
    Ended,
}

/// The state at `now_ms` of a session with `times`.
pub(crate) fn session_state(times: SessionTimes, now_ms: i64) -> SessionState {
    let idle_ms = now_ms.saturating_sub(times.last_used_at_ms);
    if now_ms >= times.expires_at_ms || idle_ms >= times.idle_timeout_ms {
        return SessionState::Ended;
    }
    SessionState::Open {
        renew: idle_ms >= RENEW_EVERY_MS,
    }
}

/// The absolute end of a session opened at `now_ms`.
pub(crate) fn expires_at_ms(now_ms: i64, max_hours: u32) -> i64 {
    now_ms.saturating_add(i64::from(max_hours) * 3_600_000)
}

/// The idle timeout of `idle_minutes`, in milliseconds.
pub(crate) fn idle_timeout_ms(idle_minutes: u32) -> i64 {
    i64::from(idle_minutes) * 60_000
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: i64 = 60_000;

    fn check(last_used_at_ms: i64, now_ms: i64, expected: SessionState) {
        let times = SessionTimes {
            last_used_at_ms,
            expires_at_ms: 120 * MINUTE,
            idle_timeout_ms: idle_timeout_ms(30),
        };
        assert_eq!(
            session_state(times, now_ms),
            expected,
            "last used {last_used_at_ms}, now {now_ms}"
        );
    }

    #[test]
    fn sessions_end_when_idle_or_at_their_absolute_end() {
        check(0, 0, SessionState::Open { renew: false });
        check(0, MINUTE - 1, SessionState::Open { renew: false });
        check(0, MINUTE, SessionState::Open { renew: true });
        check(0, 30 * MINUTE - 1, SessionState::Open { renew: true });
        check(0, 30 * MINUTE, SessionState::Ended);
        // Busy all along, yet the absolute end comes.
        check(
            120 * MINUTE - 1,
            120 * MINUTE - 1,
            SessionState::Open { renew: false },
        );
        check(120 * MINUTE - 1, 120 * MINUTE, SessionState::Ended);
        assert_eq!(expires_at_ms(1000, 12), 1000 + 12 * 60 * MINUTE);
    }
}
