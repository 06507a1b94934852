//! Brute-force limits on Register and Login: a token bucket per source address,
//! and per account a growing back-off after consecutive failed logins. Plain
//! state in, decision and new state out; time is an argument.
//!
//! # Whose failures slow whom
//! The back-off after failed logins is kept per (account, source), never per
//! account alone. A back-off per account would let anyone lock alice out by
//! failing against her name from anywhere, which is exactly what must not
//! happen: alice logging in correctly from her own address is never slowed by
//! someone else's failures from another address. What bounds an attacker who
//! spreads guesses against one account over many addresses is then the bucket
//! of each address (every attempt, for any account, spends from it) together
//! with each address's own back-off: per address, a handful of free failures,
//! then waits doubling up to the cap. IPv6 sources are grouped by /64, so one
//! host cannot multiply its budget by rotating through its prefix.
//!
//! A looser per-account ceiling was considered and left out: to be of any use
//! against a spray it would have to refuse some correct logins, so an attacker
//! could trip it on purpose.

use super::rate::Rate;
use conclave_core::ids::Username;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Failures older than this are forgotten: the back-off starts afresh a day
/// after the last failure, and an implementation may drop the state then.
pub(crate) const LOGIN_FAILURE_MEMORY_MS: i64 = 24 * 60 * 60 * 1000;

/// The configured limits (`[limits]`), checked by `Config::validate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AttemptPolicy {
    /// Register and Login attempts one source may make per minute, sustained.
    pub(crate) attempts_per_minute: u32,
    /// Attempts one idle source may make at once before the rate applies.
    pub(crate) attempt_burst: u32,
    /// Consecutive failed logins from one source to one account that cost no
    /// wait (typing mistakes).
    pub(crate) free_login_failures: u32,
    /// The first wait after the free failures; each further failure doubles it.
    pub(crate) login_backoff_initial_ms: u64,
    /// The longest wait.
    pub(crate) login_backoff_max_ms: u64,
}

/// Where attempts come from, as far as limits go: an IPv4 address, or the /64
/// prefix of an IPv6 address (one host usually owns a whole /64). An
/// IPv4-mapped IPv6 address counts as its IPv4 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Source {
    V4(Ipv4Addr),
    /// The first 64 bits of the address.
    V6Prefix(u64),
    /// The transport gave no peer address. Every such request shares one
    /// bucket: better too strict than unlimited.
    Unknown,
}

impl Source {
    pub(crate) fn of(address: IpAddr) -> Source {
        match address {
            IpAddr::V4(v4) => Source::V4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source::V4(v4),
                None => Source::V6Prefix((v6.to_bits() >> 64) as u64),
            },
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::V4(v4) => write!(f, "{v4}"),
            Source::V6Prefix(prefix) => {
                write!(f, "{}/64", Ipv6Addr::from_bits(u128::from(*prefix) << 64))
            }
            Source::Unknown => f.write_str("an unknown address"),
        }
    }
}

/// One Register or Login attempt, as the limits see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Attempt {
    Register {
        source: Source,
    },
    Login {
        source: Source,
        /// The account the login names (it may not exist: unknown names are
        /// limited alike, so the limits do not tell which exist).
        account: Username,
    },
}

impl Attempt {
    pub(crate) fn source(&self) -> Source {
        match self {
            Attempt::Register { source } | Attempt::Login { source, .. } => *source,
        }
    }
}

/// A source's token bucket, kept as the generic cell rate algorithm's one
/// number: the time at which the bucket is full again. A source with no state
/// has a full bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SourceBucket {
    pub(crate) full_again_at_ms: i64,
}

impl SourceBucket {
    /// Whether the bucket is full, i.e. the same as having no state at all.
    pub(crate) fn is_full(&self, now_ms: i64) -> bool {
        self.full_again_at_ms <= now_ms
    }
}

/// Consecutive failed logins to one account from one source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LoginFailures {
    pub(crate) consecutive: u32,
    pub(crate) last_failure_ms: i64,
}

impl LoginFailures {
    /// Whether the failures are old enough to be forgotten.
    pub(crate) fn is_forgotten(&self, now_ms: i64) -> bool {
        now_ms.saturating_sub(self.last_failure_ms) >= LOGIN_FAILURE_MEMORY_MS
    }
}

/// Which limit refused an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Limit {
    /// The source's bucket is empty.
    SourceRate,
    /// The account is backing off after failed logins from this source.
    LoginBackoff,
}

/// An attempt refused by a limit, and when the same attempt would be let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{}; try again in {} s", self.what(), self.retry_after_ms.div_ceil(1000))]
pub(crate) struct AttemptRefusal {
    pub(crate) limit: Limit,
    pub(crate) retry_after_ms: u64,
}

impl AttemptRefusal {
    fn what(&self) -> &'static str {
        match self.limit {
            Limit::SourceRate => "too many register and login attempts from this address",
            Limit::LoginBackoff => "too many failed logins to this account from this address",
        }
    }
}

/// Decides an attempt: refused while the (account, source) backs off from
/// failed logins (this costs the source nothing), else refused if the
/// source's bucket is empty, else let through with the bucket it leaves.
pub(crate) fn admit(
    policy: &AttemptPolicy,
    bucket: Option<SourceBucket>,
    failures: Option<LoginFailures>,
    now_ms: i64,
) -> Result<SourceBucket, AttemptRefusal> {
    if let Some(wait_ms) = backoff_remaining_ms(policy, failures, now_ms) {
        return Err(AttemptRefusal {
            limit: Limit::LoginBackoff,
            retry_after_ms: wait_ms,
        });
    }
    take_from_bucket(policy, bucket, now_ms)
}

/// The rate of each source's bucket.
pub(crate) fn bucket_rate(policy: &AttemptPolicy) -> Rate {
    Rate::per_minute(policy.attempts_per_minute, policy.attempt_burst)
}

/// Spends one attempt from the source's bucket (see [`Rate::take`]).
fn take_from_bucket(
    policy: &AttemptPolicy,
    bucket: Option<SourceBucket>,
    now_ms: i64,
) -> Result<SourceBucket, AttemptRefusal> {
    bucket_rate(policy)
        .take(bucket.map(|bucket| bucket.full_again_at_ms), now_ms)
        .map(|full_again_at_ms| SourceBucket { full_again_at_ms })
        .map_err(|exceeded| AttemptRefusal {
            limit: Limit::SourceRate,
            retry_after_ms: exceeded.retry_after_ms,
        })
}

/// How long the (account, source) must still wait, if at all.
fn backoff_remaining_ms(
    policy: &AttemptPolicy,
    failures: Option<LoginFailures>,
    now_ms: i64,
) -> Option<u64> {
    let failures = failures.filter(|failures| !failures.is_forgotten(now_ms))?;
    // The first failure past the free ones waits the initial delay.
    let beyond_free = failures
        .consecutive
        .checked_sub(policy.free_login_failures)?
        .checked_sub(1)?;
    let delay_ms = backoff_delay_ms(policy, beyond_free);
    let retry_at_ms = failures
        .last_failure_ms
        .saturating_add(i64::try_from(delay_ms).unwrap_or(i64::MAX)); // tidy: saturating
    let remaining_ms = retry_at_ms - now_ms;
    (remaining_ms > 0).then(|| u64::try_from(remaining_ms).unwrap_or(u64::MAX)) // tidy: saturating (positive here)
}

/// The wait after the failure `beyond_free + 1` past the free ones: the
/// initial delay, doubled for each further failure, up to the cap.
fn backoff_delay_ms(policy: &AttemptPolicy, beyond_free: u32) -> u64 {
    policy
        .login_backoff_initial_ms
        .checked_shl(beyond_free)
        .filter(|delay| delay >> beyond_free == policy.login_backoff_initial_ms)
        .map_or(policy.login_backoff_max_ms, |delay| {
            delay.min(policy.login_backoff_max_ms)
        })
}

/// [`backoff_delay_ms`] as a table, for an implementation that cannot call it
/// (the Redis limiter's Lua script): entry `i` is the wait after the failure
/// `i + 1` past the free ones; the table ends with the first entry at the cap,
/// and every failure beyond its end waits that last entry. At most 65 entries
/// (a shift by 64 overflows, which is the cap).
pub(crate) fn backoff_schedule(policy: &AttemptPolicy) -> Vec<u64> {
    let mut schedule = Vec::new();
    for beyond_free in 0..=64 {
        let delay_ms = backoff_delay_ms(policy, beyond_free);
        schedule.push(delay_ms);
        if delay_ms >= policy.login_backoff_max_ms {
            break;
        }
    }
    schedule
}

/// The failures after one more failed login at `now_ms`.
pub(crate) fn after_login_failure(failures: Option<LoginFailures>, now_ms: i64) -> LoginFailures {
    let earlier = failures
        .filter(|failures| !failures.is_forgotten(now_ms))
        .map_or(0, |failures| failures.consecutive);
    LoginFailures {
        consecutive: earlier.saturating_add(1),
        last_failure_ms: now_ms,
    }
}

// A successful login ends the back-off of its (account, source): the state is
// removed, which `admit` treats as no failures.

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: i64 = 1000;
    const MINUTE: i64 = 60 * SECOND;

    fn policy() -> AttemptPolicy {
        AttemptPolicy {
            attempts_per_minute: 10,
            attempt_burst: 3,
            free_login_failures: 2,
            login_backoff_initial_ms: 1000,
            login_backoff_max_ms: 8000,
        }
    }

    /// Runs `admit` with the bucket and failures given, and checks the outcome:
    /// `Ok(full_again_at)` or the refusal.
    fn check(
        bucket_full_again_at: Option<i64>,
        failures: Option<(u32, i64)>,
        now_ms: i64,
        expected: Result<i64, (Limit, u64)>,
    ) {
        let bucket = bucket_full_again_at.map(|full_again_at_ms| SourceBucket { full_again_at_ms });
        let failures = failures.map(|(consecutive, last_failure_ms)| LoginFailures {
            consecutive,
            last_failure_ms,
        });
        let outcome = admit(&policy(), bucket, failures, now_ms)
            .map(|bucket| bucket.full_again_at_ms)
            .map_err(|refusal| (refusal.limit, refusal.retry_after_ms));
        assert_eq!(
            outcome, expected,
            "bucket {bucket:?}, failures {failures:?}, at {now_ms}"
        );
    }

    #[test]
    fn the_bucket_allows_the_burst_then_the_rate() {
        let interval = 6 * SECOND;
        // An unknown source has a full bucket: three at once, then one per interval.
        check(None, None, 0, Ok(interval));
        check(Some(interval), None, 0, Ok(2 * interval));
        check(Some(2 * interval), None, 0, Ok(3 * interval));
        check(
            Some(3 * interval),
            None,
            0,
            Err((Limit::SourceRate, interval as u64)),
        );
        check(
            Some(3 * interval),
            None,
            interval - 1,
            Err((Limit::SourceRate, 1)),
        );
        check(Some(3 * interval), None, interval, Ok(4 * interval));
        // A bucket idle long enough is full again, and no fuller.
        check(
            Some(3 * interval),
            None,
            10 * MINUTE,
            Ok(10 * MINUTE + interval),
        );
    }

    #[test]
    fn the_back_off_grows_after_the_free_failures_up_to_the_cap() {
        let at = 100 * MINUTE;
        // No wait during the free failures.
        check(None, Some((1, at)), at, Ok(at + 6 * SECOND));
        check(None, Some((2, at)), at, Ok(at + 6 * SECOND));
        // After the 2 free: 1 s, 2 s, 4 s, then the 8 s cap.
        for (consecutive, wait) in [
            (3, 1),
            (4, 2),
            (5, 4),
            (6, 8),
            (7, 8),
            (40, 8),
            (u32::MAX, 8),
        ] {
            let wait_ms = wait * SECOND;
            check(
                None,
                Some((consecutive, at)),
                at,
                Err((Limit::LoginBackoff, wait_ms as u64)),
            );
            check(
                None,
                Some((consecutive, at)),
                at + wait_ms - 1,
                Err((Limit::LoginBackoff, 1)),
            );
            check(
                None,
                Some((consecutive, at)),
                at + wait_ms,
                Ok(at + wait_ms + 6 * SECOND),
            );
        }
    }

    #[test]
    fn the_schedule_tabulates_the_back_off() {
        assert_eq!(backoff_schedule(&policy()), [1000, 2000, 4000, 8000]);
        let at_cap = AttemptPolicy {
            login_backoff_max_ms: 1000,
            ..policy()
        };
        assert_eq!(backoff_schedule(&at_cap), [1000]);
        // Each entry, and the last beyond the end, is the wait the rule gives.
        for policy in [policy(), at_cap] {
            let schedule = backoff_schedule(&policy);
            for beyond_free in 0..70u32 {
                let index = usize::try_from(beyond_free)
                    .unwrap()
                    .min(schedule.len() - 1);
                assert_eq!(schedule[index], backoff_delay_ms(&policy, beyond_free));
            }
        }
    }

    #[test]
    fn a_back_off_refusal_costs_the_source_nothing() {
        // The bucket is full again at 0 and stays so: the refusal consumed nothing.
        check(Some(0), Some((3, 0)), 0, Err((Limit::LoginBackoff, 1000)));
        // The back-off is checked first, so its wait is the one reported.
        check(
            Some(60 * SECOND),
            Some((5, 0)),
            0,
            Err((Limit::LoginBackoff, 4000)),
        );
    }

    #[test]
    fn failures_count_up_and_are_forgotten_after_a_day() {
        let first = after_login_failure(None, 0);
        assert_eq!(
            first,
            LoginFailures {
                consecutive: 1,
                last_failure_ms: 0
            }
        );
        let second = after_login_failure(Some(first), 5 * SECOND);
        assert_eq!(second.consecutive, 2);
        assert_eq!(second.last_failure_ms, 5 * SECOND);
        let much_later = 5 * SECOND + LOGIN_FAILURE_MEMORY_MS;
        assert!(second.is_forgotten(much_later));
        assert_eq!(after_login_failure(Some(second), much_later).consecutive, 1);
        // Forgotten failures cost no wait, however many there were.
        check(
            None,
            Some((1000, 0)),
            LOGIN_FAILURE_MEMORY_MS,
            Ok(LOGIN_FAILURE_MEMORY_MS + 6 * SECOND),
        );
    }

    #[test]
    fn sources_are_addresses_and_ipv6_prefixes() {
        let source = |text: &str| Source::of(text.parse().unwrap());
        assert_eq!(source("192.0.2.1"), source("::ffff:192.0.2.1"));
        assert_ne!(source("192.0.2.1"), source("192.0.2.2"));
        assert_eq!(
            source("2001:db8:1:2::1"),
            source("2001:db8:1:2:ffff:ffff:ffff:ffff")
        );
        assert_ne!(source("2001:db8:1:2::1"), source("2001:db8:1:3::1"));
        assert_eq!(source("2001:db8:1:2::1").to_string(), "2001:db8:1:2::/64");
        assert_eq!(source("192.0.2.1").to_string(), "192.0.2.1");
    }

    #[test]
    fn refusals_say_which_limit_and_when_to_retry() {
        let refusal = AttemptRefusal {
            limit: Limit::SourceRate,
            retry_after_ms: 1001,
        };
        assert_eq!(
            refusal.to_string(),
            "too many register and login attempts from this address; try again in 2 s"
        );
        let refusal = AttemptRefusal {
            limit: Limit::LoginBackoff,
            retry_after_ms: 60_000,
        };
        assert_eq!(
            refusal.to_string(),
            "too many failed logins to this account from this address; try again in 60 s"
        );
    }
}
