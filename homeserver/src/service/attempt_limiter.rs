//! Where the brute-force limits on Register and Login keep their state: the
//! [`AttemptLimiter`] trait, and its in-process implementation. The decisions
//! are `rules::attempt_limits`; this only stores their state.
//!
//! The in-process limiter counts per replica. A cluster's replicas share one
//! state through Redis (`cluster::limits`), behind the same trait: each method
//! is one atomic step there (a Lua script over the source's bucket key and the
//! (account, source) failure key), which is why the check and the spending are
//! one method. Every implementation passes the same table of cases
//! (`tests::CASES`).

use crate::rules::attempt_limits::{
    self, Attempt, AttemptPolicy, AttemptRefusal, LoginFailures, Source, SourceBucket,
};
use conclave_core::ids::Username;
use futures::future::BoxFuture;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;

/// Keeps the state of the attempt limits, and applies them.
pub(crate) trait AttemptLimiter: Send + Sync + 'static {
    /// Check and spend, atomically: refuses the attempt if its (account,
    /// source) is backing off from failed logins or its source's bucket is
    /// empty; otherwise spends one attempt from the bucket. An implementation
    /// that cannot reach its shared state applies its own local limits instead
    /// (and logs the outage): the limits guard the password hashing, they must
    /// neither stop all logins nor fall away.
    fn admit(&self, attempt: Attempt, now_ms: i64) -> BoxFuture<'_, Result<(), AttemptRefusal>>;

    /// Counts a failed login to `account` from `source`.
    fn record_login_failure(
        &self,
        account: Username,
        source: Source,
        now_ms: i64,
    ) -> BoxFuture<'_, ()>;

    /// A correct login to `account` from `source` ends that pair's back-off
    /// (and that pair's only: other sources' failures stand).
    fn record_login_success(&self, account: Username, source: Source) -> BoxFuture<'_, ()>;
}

/// Most entries each of the in-process limiter's maps keeps per generation, so
/// an attacker spraying addresses or account names cannot grow its memory
/// without bound (see [`Generations`]).
const MAX_ENTRIES_PER_GENERATION: usize = 50_000;

/// The limits' state in this process's memory.
pub(crate) struct LocalAttemptLimiter {
    policy: AttemptPolicy,
    state: Mutex<LocalState>,
}

struct LocalState {
    buckets: Generations<Source, SourceBucket>,
    failures: Generations<(Username, Source), LoginFailures>,
}

impl LocalAttemptLimiter {
    pub(crate) fn new(policy: AttemptPolicy) -> LocalAttemptLimiter {
        LocalAttemptLimiter::with_capacity(policy, MAX_ENTRIES_PER_GENERATION)
    }

    fn with_capacity(policy: AttemptPolicy, entries_per_generation: usize) -> LocalAttemptLimiter {
        LocalAttemptLimiter {
            policy,
            state: Mutex::new(LocalState {
                buckets: Generations::new(entries_per_generation),
                failures: Generations::new(entries_per_generation),
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, LocalState> {
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn admit_now(&self, attempt: &Attempt, now_ms: i64) -> Result<(), AttemptRefusal> {
        let mut state = self.state();
        let source = attempt.source();
        let bucket = state.buckets.get(&source);
        let failures = match attempt {
            Attempt::Register { .. } => None,
            Attempt::Login { account, source } => state.failures.get(&(account.clone(), *source)),
        };
        let bucket = attempt_limits::admit(&self.policy, bucket, failures, now_ms)?;
        state
            .buckets
            .insert(source, bucket, |bucket| bucket.is_full(now_ms));
        Ok(())
    }

    fn record_failure_now(&self, account: Username, source: Source, now_ms: i64) {
        let mut state = self.state();
        let key = (account, source);
        let failures = attempt_limits::after_login_failure(state.failures.get(&key), now_ms);
        state
            .failures
            .insert(key, failures, |failures| failures.is_forgotten(now_ms));
    }
}

impl AttemptLimiter for LocalAttemptLimiter {
    fn admit(&self, attempt: Attempt, now_ms: i64) -> BoxFuture<'_, Result<(), AttemptRefusal>> {
        let decision = self.admit_now(&attempt, now_ms);
        Box::pin(std::future::ready(decision))
    }

    fn record_login_failure(
        &self,
        account: Username,
        source: Source,
        now_ms: i64,
    ) -> BoxFuture<'_, ()> {
        self.record_failure_now(account, source, now_ms);
        Box::pin(std::future::ready(()))
    }

    fn record_login_success(&self, account: Username, source: Source) -> BoxFuture<'_, ()> {
        self.state().failures.remove(&(account, source));
        Box::pin(std::future::ready(()))
    }
}

/// A map bounded by two generations (also the per-key rate limits'): entries go into the current one; when it
/// is full, the entries that no longer matter (a full bucket, forgotten
/// failures) are dropped, and if it is still full it becomes the previous
/// generation, replacing (evicting) the one before. An entry read from the
/// previous generation moves back into the current one when written. So at
/// most twice the capacity is held, and what is evicted is what was least
/// recently written.
///
/// Evicting an entry forgets its limits (a full bucket, no failures). Under a
/// spray of more sources than the capacity, that favours the sprayer's oldest
/// sources, which it already had a full budget for by owning them; a login's
/// own back-off entry is evicted only after that many newer entries.
pub(crate) struct Generations<K, V> {
    current: HashMap<K, V>,
    previous: HashMap<K, V>,
    capacity: usize,
}

impl<K: Eq + Hash, V: Copy> Generations<K, V> {
    pub(crate) fn new(capacity: usize) -> Generations<K, V> {
        Generations {
            current: HashMap::new(),
            previous: HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    pub(crate) fn get(&self, key: &K) -> Option<V> {
        self.current
            .get(key)
            .or_else(|| self.previous.get(key))
            .copied()
    }

    /// Stores `value` for `key`; `expired` tells entries that may be dropped
    /// when room is needed.
    pub(crate) fn insert(&mut self, key: K, value: V, expired: impl Fn(&V) -> bool) {
        self.previous.remove(&key);
        if !self.current.contains_key(&key) && self.current.len() >= self.capacity {
            self.current.retain(|_, value| !expired(value));
            if self.current.len() >= self.capacity {
                self.previous = std::mem::take(&mut self.current);
            }
        }
        self.current.insert(key, value);
    }

    pub(crate) fn remove(&mut self, key: &K) {
        self.current.remove(key);
        self.previous.remove(key);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use attempt_limits::Limit;
    use std::net::Ipv4Addr;

    /// The policy every case runs with: 2 attempts at once, then one a second;
    /// one free failure, then 10 s doubling up to 60 s.
    pub(crate) const POLICY: AttemptPolicy = AttemptPolicy {
        attempts_per_minute: 60,
        attempt_burst: 2,
        free_login_failures: 1,
        login_backoff_initial_ms: 10_000,
        login_backoff_max_ms: 60_000,
    };

    /// When the cases start (any time works; not 0, to be unlike "no state").
    const T: i64 = 1_700_000_000_000;
    const DAY: i64 = attempt_limits::LOGIN_FAILURE_MEMORY_MS;

    /// One step of a case.
    pub(crate) enum Step {
        /// An attempt at a time, and its outcome: let through, or refused by
        /// that limit with that wait.
        Admit(Attempt, i64, Result<(), (Limit, u64)>),
        /// A failed login to the account from the source, at a time.
        Failure(Username, Source, i64),
        /// A correct login to the account from the source.
        Success(Username, Source),
    }

    fn source(last: u8) -> Source {
        Source::V4(Ipv4Addr::new(192, 0, 2, last))
    }

    fn alice() -> Username {
        "alice".parse().unwrap()
    }

    fn login(from: Source) -> Attempt {
        Attempt::Login {
            source: from,
            account: alice(),
        }
    }

    /// The cases every [`AttemptLimiter`] must pass, each on sources of its
    /// own, so that all run one after the other on one limiter.
    pub(crate) fn cases() -> Vec<(&'static str, Vec<Step>)> {
        use Step::{Admit, Failure, Success};
        let backoff = |wait| Err((Limit::LoginBackoff, wait));
        let empty = |wait| Err((Limit::SourceRate, wait));
        let (attacker, alice_at_home) = (source(1), source(2));
        let home = source(3);
        let (busy, other) = (source(4), source(5));
        let growing = source(6);
        let (forgetful, mindful) = (source(7), source(8));
        let v6 = Source::V6Prefix(0x2001_0db8_0000_0001);
        vec![
            (
                "failures slow only their own source",
                vec![
                    Admit(login(attacker), T, Ok(())),
                    Failure(alice(), attacker, T),
                    Admit(login(attacker), T, Ok(())),
                    Failure(alice(), attacker, T),
                    Admit(login(attacker), T, backoff(10_000)),
                    Admit(login(alice_at_home), T, Ok(())),
                    // Her success does not lift the attacker's back-off.
                    Success(alice(), alice_at_home),
                    Admit(login(attacker), T + 9_999, backoff(1)),
                    // The attacker's own wait ends it for the attacker too;
                    // the refusals spent nothing of its bucket.
                    Admit(login(attacker), T + 10_000, Ok(())),
                    Admit(login(attacker), T + 10_000, Ok(())),
                    Admit(login(attacker), T + 10_000, empty(1000)),
                ],
            ),
            (
                "a success ends the back-off of its source",
                vec![
                    Failure(alice(), home, T),
                    Failure(alice(), home, T),
                    Admit(login(home), T, backoff(10_000)),
                    Success(alice(), home),
                    Admit(login(home), T, Ok(())),
                    // Counting starts afresh: one free failure again.
                    Failure(alice(), home, T),
                    Admit(login(home), T, Ok(())),
                ],
            ),
            (
                "the bucket is per source and shared by register and login",
                vec![
                    Admit(Attempt::Register { source: busy }, T, Ok(())),
                    Admit(login(busy), T, Ok(())),
                    Admit(Attempt::Register { source: busy }, T, empty(1000)),
                    Admit(Attempt::Register { source: other }, T, Ok(())),
                    Admit(login(busy), T + 999, empty(1)),
                    Admit(login(busy), T + 1000, Ok(())),
                    Admit(login(busy), T + 1000, empty(1000)),
                    // Idle long enough: full again, and no fuller.
                    Admit(login(busy), T + 60_000, Ok(())),
                    Admit(login(busy), T + 60_000, Ok(())),
                    Admit(login(busy), T + 60_000, empty(1000)),
                ],
            ),
            (
                "the back-off doubles up to its cap",
                vec![
                    Failure(alice(), growing, T),
                    Failure(alice(), growing, T),
                    Admit(login(growing), T, backoff(10_000)),
                    Failure(alice(), growing, T),
                    Admit(login(growing), T, backoff(20_000)),
                    Failure(alice(), growing, T),
                    Admit(login(growing), T, backoff(40_000)),
                    Failure(alice(), growing, T),
                    Admit(login(growing), T, backoff(60_000)),
                    Failure(alice(), growing, T),
                    Admit(login(growing), T, backoff(60_000)),
                    Admit(login(growing), T + 60_000, Ok(())),
                ],
            ),
            (
                "failures are forgotten a day after the last one",
                vec![
                    Failure(alice(), forgetful, T),
                    Failure(alice(), forgetful, T),
                    Failure(alice(), forgetful, T),
                    Failure(alice(), forgetful, T + DAY),
                    Admit(login(forgetful), T + DAY, Ok(())),
                    Failure(alice(), mindful, T),
                    Failure(alice(), mindful, T),
                    Failure(alice(), mindful, T),
                    Failure(alice(), mindful, T + DAY - 1),
                    Admit(login(mindful), T + DAY - 1, backoff(40_000)),
                ],
            ),
            (
                "unknown and IPv6 sources have buckets too",
                vec![
                    Admit(
                        Attempt::Register {
                            source: Source::Unknown,
                        },
                        T,
                        Ok(()),
                    ),
                    Admit(
                        Attempt::Register {
                            source: Source::Unknown,
                        },
                        T,
                        Ok(()),
                    ),
                    Admit(
                        Attempt::Register {
                            source: Source::Unknown,
                        },
                        T,
                        empty(1000),
                    ),
                    Admit(Attempt::Register { source: v6 }, T, Ok(())),
                    Admit(Attempt::Register { source: v6 }, T, Ok(())),
                    Admit(Attempt::Register { source: v6 }, T, empty(1000)),
                ],
            ),
        ]
    }

    /// Runs every case against `limiters` (made with [`POLICY`]), taking them
    /// in turn for each step: replicas sharing one state must behave as one
    /// limiter.
    pub(crate) async fn check_cases(limiters: &[&dyn AttemptLimiter]) {
        let mut turn = 0;
        for (name, steps) in cases() {
            for (index, step) in steps.into_iter().enumerate() {
                let limiter = limiters[turn % limiters.len()];
                turn += 1;
                match step {
                    Step::Admit(attempt, now_ms, expected) => {
                        let outcome = limiter
                            .admit(attempt, now_ms)
                            .await
                            .map_err(|refusal| (refusal.limit, refusal.retry_after_ms));
                        assert_eq!(outcome, expected, "{name}, step {index}");
                    }
                    Step::Failure(account, source, now_ms) => {
                        limiter.record_login_failure(account, source, now_ms).await;
                    }
                    Step::Success(account, source) => {
                        limiter.record_login_success(account, source).await;
                    }
                }
            }
        }
    }

    #[tokio::test]
    async fn the_local_limiter_passes_the_cases() {
        check_cases(&[&LocalAttemptLimiter::new(POLICY)]).await;
    }

    #[tokio::test]
    async fn memory_stays_bounded_under_a_spray_of_sources() {
        let limiter = LocalAttemptLimiter::with_capacity(POLICY, 100);
        for index in 0..10_000u32 {
            let sprayed = Source::V4(Ipv4Addr::from(index));
            limiter.admit(login(sprayed), 0).await.unwrap();
            limiter.record_login_failure(alice(), sprayed, 0).await;
        }
        let state = limiter.state();
        assert!(state.buckets.len() <= 200, "{}", state.buckets.len());
        assert!(state.failures.len() <= 200, "{}", state.failures.len());
    }

    #[test]
    fn generations_drop_expired_entries_before_evicting_live_ones() {
        let mut map = Generations::new(2);
        map.insert(1, 1, |_| false);
        map.insert(2, 0, |_| false);
        // Entry 2 is expired (value 0): dropped to make room, 1 stays current.
        map.insert(3, 3, |value| *value == 0);
        assert_eq!(
            (map.get(&1), map.get(&2), map.get(&3)),
            (Some(1), None, Some(3))
        );
        // Nothing expired: the current generation becomes the previous one.
        map.insert(4, 4, |_| false);
        assert_eq!((map.get(&1), map.get(&4)), (Some(1), Some(4)));
        // Writing an old entry brings it into the current generation...
        map.insert(1, 10, |_| false);
        // ...so the next turn-over evicts 3, not 1.
        map.insert(5, 5, |_| false);
        assert_eq!(
            (map.get(&1), map.get(&3), map.get(&4), map.get(&5)),
            (Some(10), None, Some(4), Some(5))
        );
    }
}
