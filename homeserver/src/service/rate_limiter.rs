//! Where the per-key rate limits keep their state: key-package claims per
//! claimer and, in a cluster, federation requests per peer. The
//! [`KeyedRateLimiter`] trait, its in-process implementation, and the adapter
//! that puts one behind the federation crate's `PeerGate`. The decision is
//! `rules::rate`; this only stores its state. A cluster's replicas share one
//! state through Redis (`cluster::limits`), behind the same trait.

use super::Clock;
use super::attempt_limiter::Generations;
use crate::rules::rate::{Rate, RateExceeded};
use conclave_core::ids::Domain;
use conclave_federation::server::PeerRateLimiter;
use futures::future::BoxFuture;
use std::sync::{Arc, Mutex};

/// Keeps the state of one rate per key, and applies it.
pub(crate) trait KeyedRateLimiter: Send + Sync + 'static {
    /// Counts one event for `key` at `now_ms`, atomically, or refuses it (a
    /// refusal counts nothing).
    fn check<'a>(&'a self, key: &'a str, now_ms: i64) -> BoxFuture<'a, Result<(), RateExceeded>>;
}

/// Most keys the in-process limiter keeps per generation (see
/// `attempt_limiter::Generations`): a full bucket is dropped first, so only a
/// spray of this many keys busy at once evicts anything.
const MAX_KEYS_PER_GENERATION: usize = 50_000;

/// One rate per key, in this process's memory.
pub(crate) struct LocalRateLimiter {
    rate: Rate,
    /// Per key, the time its bucket is full again.
    buckets: Mutex<Generations<String, i64>>,
}

impl LocalRateLimiter {
    pub(crate) fn new(rate: Rate) -> LocalRateLimiter {
        LocalRateLimiter {
            rate,
            buckets: Mutex::new(Generations::new(MAX_KEYS_PER_GENERATION)),
        }
    }

    pub(crate) fn check_now(&self, key: &str, now_ms: i64) -> Result<(), RateExceeded> {
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let key = key.to_owned();
        let full_again_at_ms = self.rate.take(buckets.get(&key), now_ms)?;
        buckets.insert(key, full_again_at_ms, |full_again_at_ms| {
            *full_again_at_ms <= now_ms
        });
        Ok(())
    }
}

impl KeyedRateLimiter for LocalRateLimiter {
    fn check<'a>(&'a self, key: &'a str, now_ms: i64) -> BoxFuture<'a, Result<(), RateExceeded>> {
        Box::pin(std::future::ready(self.check_now(key, now_ms)))
    }
}

/// Federation requests per peer domain, as the `PeerGate` counts them: a
/// homeserver's [`KeyedRateLimiter`] (shared by a cluster's replicas) on its
/// clock.
pub(crate) struct PeerRequestLimiter {
    pub(crate) limiter: Arc<dyn KeyedRateLimiter>,
    pub(crate) clock: Arc<dyn Clock>,
}

impl PeerRateLimiter for PeerRequestLimiter {
    fn check<'a>(&'a self, peer: &'a Domain) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            let key = peer.to_string();
            let now_ms = self.clock.now_ms();
            self.limiter.check(&key, now_ms).await.is_ok()
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// One step of a case: a check of `key` at `now_ms`, and its outcome
    /// (`Ok(())` or the wait the refusal names).
    pub(crate) type Step = (&'static str, i64, Result<(), u64>);

    /// The rate every case runs with: 3 at once, then one each 20 s.
    pub(crate) const RATE: Rate = Rate {
        interval_ms: 20_000,
        burst: 3,
    };

    /// The cases every [`KeyedRateLimiter`] must pass, each on its own keys
    /// (so all run on one limiter), at times from 1,000,000 ms on.
    pub(crate) const CASES: &[&[Step]] = &[
        // The burst, then the rate; a refusal spends nothing.
        &[
            ("burst", 1_000_000, Ok(())),
            ("burst", 1_000_000, Ok(())),
            ("burst", 1_000_000, Ok(())),
            ("burst", 1_000_000, Err(20_000)),
            ("burst", 1_019_999, Err(1)),
            ("burst", 1_020_000, Ok(())),
            ("burst", 1_020_000, Err(20_000)),
        ],
        // Keys are counted apart.
        &[
            ("one", 1_000_000, Ok(())),
            ("one", 1_000_000, Ok(())),
            ("one", 1_000_000, Ok(())),
            ("two", 1_000_000, Ok(())),
            ("one", 1_000_000, Err(20_000)),
        ],
        // An idle key's bucket fills up again, and no fuller than the burst.
        &[
            ("idle", 1_000_000, Ok(())),
            ("idle", 1_000_000, Ok(())),
            ("idle", 1_000_000, Ok(())),
            ("idle", 2_000_000, Ok(())),
            ("idle", 2_000_000, Ok(())),
            ("idle", 2_000_000, Ok(())),
            ("idle", 2_000_000, Err(20_000)),
        ],
    ];

    /// Runs every case against `limiters`, taking them in turn for each step
    /// (several replicas sharing one state must behave as one).
    pub(crate) async fn check_cases(limiters: &[&dyn KeyedRateLimiter], key_prefix: &str) {
        let mut turn = 0;
        for (case, steps) in CASES.iter().enumerate() {
            for (step, (key, now_ms, expected)) in steps.iter().enumerate() {
                let limiter = limiters[turn % limiters.len()];
                turn += 1;
                let key = format!("{key_prefix}{key}");
                let outcome = limiter
                    .check(&key, *now_ms)
                    .await
                    .map_err(|exceeded| exceeded.retry_after_ms);
                assert_eq!(&outcome, expected, "case {case}, step {step}");
            }
        }
    }

    #[tokio::test]
    async fn the_local_limiter_passes_the_cases() {
        let limiter = LocalRateLimiter::new(RATE);
        check_cases(&[&limiter], "").await;
    }

    #[tokio::test]
    async fn peers_are_counted_per_domain_on_the_clock() {
        #[derive(Debug)]
        struct Frozen;
        impl Clock for Frozen {
            fn now_ms(&self) -> i64 {
                1_000_000
            }
        }
        let peers = PeerRequestLimiter {
            limiter: Arc::new(LocalRateLimiter::new(Rate::per_minute(2, 2))),
            clock: Arc::new(Frozen),
        };
        let (b, c): (Domain, Domain) = ("b.example".parse().unwrap(), "c.example".parse().unwrap());
        assert!(peers.check(&b).await);
        assert!(peers.check(&b).await);
        assert!(!peers.check(&b).await);
        assert!(peers.check(&c).await);
    }

    #[test]
    fn full_buckets_make_room_first() {
        let limiter = LocalRateLimiter::new(Rate::per_minute(60_000, 1));
        for index in 0..(2 * MAX_KEYS_PER_GENERATION + 10) {
            // Each key's bucket is full again 1 ms later: expired by the next.
            let now_ms = i64::try_from(index).unwrap();
            limiter.check_now(&index.to_string(), now_ms).unwrap();
        }
        let buckets = limiter.buckets.lock().unwrap();
        // Never a second generation: full buckets were dropped to make room.
        assert!(
            buckets.len() <= MAX_KEYS_PER_GENERATION,
            "{}",
            buckets.len()
        );
    }
}
