//! Where the brute-force limits on Register and Login keep their state: the
//! [`AttemptLimiter`] trait, and its in-process implementation. The decisions
//! are `rules::attempt_limits`; this only stores their state.
//!
//! The in-process limiter counts per replica, so N replicas allow up to N times
//! the rate. The cluster issue adds a Redis implementation behind the same
//! trait; each method is one atomic step there (a Lua script over the source's
//! bucket key and the (account, source) failure key), which is why the check
//! and the spending are one method.

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
    /// that cannot reach its shared state lets the attempt through and logs it:
    /// the limits guard the password hashing, they must not stop all logins.
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

/// A map bounded by two generations: entries go into the current one; when it
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
struct Generations<K, V> {
    current: HashMap<K, V>,
    previous: HashMap<K, V>,
    capacity: usize,
}

impl<K: Eq + Hash, V: Copy> Generations<K, V> {
    fn new(capacity: usize) -> Generations<K, V> {
        Generations {
            current: HashMap::new(),
            previous: HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    fn get(&self, key: &K) -> Option<V> {
        self.current
            .get(key)
            .or_else(|| self.previous.get(key))
            .copied()
    }

    /// Stores `value` for `key`; `expired` tells entries that may be dropped
    /// when room is needed.
    fn insert(&mut self, key: K, value: V, expired: impl Fn(&V) -> bool) {
        self.previous.remove(&key);
        if !self.current.contains_key(&key) && self.current.len() >= self.capacity {
            self.current.retain(|_, value| !expired(value));
            if self.current.len() >= self.capacity {
                self.previous = std::mem::take(&mut self.current);
            }
        }
        self.current.insert(key, value);
    }

    fn remove(&mut self, key: &K) {
        self.current.remove(key);
        self.previous.remove(key);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const POLICY: AttemptPolicy = AttemptPolicy {
        attempts_per_minute: 60,
        attempt_burst: 2,
        free_login_failures: 1,
        login_backoff_initial_ms: 10_000,
        login_backoff_max_ms: 60_000,
    };

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

    #[tokio::test]
    async fn failures_slow_only_their_own_source() {
        let limiter = LocalAttemptLimiter::new(AttemptPolicy {
            attempt_burst: 100,
            ..POLICY
        });
        let (attacker, alice_at_home) = (source(1), source(2));
        for _ in 0..2 {
            limiter.admit(login(attacker), 0).await.unwrap();
            limiter.record_login_failure(alice(), attacker, 0).await;
        }
        let refusal = limiter.admit(login(attacker), 0).await.unwrap_err();
        assert_eq!(refusal.limit, attempt_limits::Limit::LoginBackoff);
        assert_eq!(refusal.retry_after_ms, 10_000);
        limiter.admit(login(alice_at_home), 0).await.unwrap();
        // Her success does not lift the attacker's back-off.
        limiter.record_login_success(alice(), alice_at_home).await;
        assert!(limiter.admit(login(attacker), 0).await.is_err());
        // The attacker's own wait ends it for the attacker too, until it fails again.
        limiter.admit(login(attacker), 10_000).await.unwrap();
    }

    #[tokio::test]
    async fn success_ends_the_back_off_of_its_source() {
        let limiter = LocalAttemptLimiter::new(POLICY);
        let home = source(2);
        limiter.record_login_failure(alice(), home, 0).await;
        limiter.record_login_failure(alice(), home, 0).await;
        assert!(limiter.admit(login(home), 0).await.is_err());
        limiter.record_login_success(alice(), home).await;
        limiter.admit(login(home), 0).await.unwrap();
    }

    #[tokio::test]
    async fn the_bucket_is_per_source_and_shared_by_register_and_login() {
        let limiter = LocalAttemptLimiter::new(POLICY);
        let (busy, other) = (source(1), source(2));
        limiter
            .admit(Attempt::Register { source: busy }, 0)
            .await
            .unwrap();
        limiter.admit(login(busy), 0).await.unwrap();
        let refusal = limiter
            .admit(Attempt::Register { source: busy }, 0)
            .await
            .unwrap_err();
        assert_eq!(refusal.limit, attempt_limits::Limit::SourceRate);
        assert_eq!(refusal.retry_after_ms, 1000);
        limiter
            .admit(Attempt::Register { source: other }, 0)
            .await
            .unwrap();
        limiter.admit(login(busy), 1000).await.unwrap();
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
