//! How long the homeserver keeps what it no longer has to: the cut-offs the
//! janitor deletes below, from the time now and the configured retention.

/// Milliseconds in a day.
const DAY_MS: i64 = 24 * 3600 * 1000;

/// How long idempotency keys are remembered: a client retrying later than this
/// gets its submission accepted again.
const IDEMPOTENCY_RETENTION_MS: i64 = 7 * DAY_MS;

/// How long an expired key package is kept (a claim racing its expiry may still
/// name it in a commit).
const EXPIRED_KEY_PACKAGE_GRACE_MS: i64 = DAY_MS;

/// How long the use of an enrolment challenge is remembered after the challenge
/// expired: a replica whose clock runs behind still accepts the challenge for a
/// while, and must still find it used.
const ENROLMENT_CHALLENGE_GRACE_MS: i64 = 3600 * 1000;

/// Times (milliseconds since the Unix epoch) below which things may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cutoffs {
    /// Log entries made before this go, read or not (a device offline that long
    /// rejoins by external commit; a follower that long behind accepts the gap).
    pub(crate) events_before_ms: i64,
    /// Idempotency records made before this go.
    pub(crate) submissions_before_ms: i64,
    /// Key packages that expired before this go.
    pub(crate) key_packages_expired_before_ms: i64,
    /// Uses of enrolment challenges that expired before this go.
    pub(crate) enrolment_challenges_before_ms: i64,
}

/// The cut-offs at `now_ms` for a retention of `retention_days`.
pub(crate) fn cutoffs(now_ms: i64, retention_days: u64) -> Cutoffs {
    let retention_ms = i64::try_from(retention_days)
        .ok()
        .and_then(|days| days.checked_mul(DAY_MS));
    // A retention too long to count in milliseconds keeps everything.
    let events_before_ms = retention_ms.map_or(i64::MIN, |ms| now_ms.saturating_sub(ms));
    Cutoffs {
        events_before_ms,
        submissions_before_ms: now_ms.saturating_sub(IDEMPOTENCY_RETENTION_MS),
        key_packages_expired_before_ms: now_ms.saturating_sub(EXPIRED_KEY_PACKAGE_GRACE_MS),
        enrolment_challenges_before_ms: now_ms.saturating_sub(ENROLMENT_CHALLENGE_GRACE_MS),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cutoffs_follow_the_retention_and_saturate() {
        let now = 100 * DAY_MS;
        let cutoffs = cutoffs(now, 30);
        assert_eq!(cutoffs.events_before_ms, 70 * DAY_MS);
        assert_eq!(cutoffs.submissions_before_ms, 93 * DAY_MS);
        assert_eq!(cutoffs.key_packages_expired_before_ms, 99 * DAY_MS);
        assert_eq!(cutoffs.enrolment_challenges_before_ms, now - 3600 * 1000);
        // A retention too long to count in milliseconds keeps everything.
        assert_eq!(super::cutoffs(now, u64::MAX).events_before_ms, i64::MIN);
    }
}
