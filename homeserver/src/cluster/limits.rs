//! The rate limits a cluster's replicas share: Register and Login attempts
//! ([`SharedAttemptLimiter`]), key-package claims per claimer and federation
//! requests per peer ([`SharedRateLimiter`]). Each operation is one Lua script
//! run atomically by Redis (EVALSHA, loading the script on NOSCRIPT), so
//! replicas racing on one key never overspend it.
//!
//! # One rule
//! The decisions are `rules::rate` (GCRA) and `rules::attempt_limits` (the
//! back-off). The scripts do the comparisons those rules make, with the
//! numbers the rules compute passed in (the rate's interval and tolerance, the
//! back-off's table from `attempt_limits::backoff_schedule`), so the doubling,
//! the cap and the rounding live in Rust only. Both implementations pass the
//! same tables of cases (`service::attempt_limiter::tests::cases`,
//! `service::rate_limiter::tests::CASES`), the Redis one with two replicas
//! taking turns.
//!
//! # Whose clock
//! The caller's: every operation takes `now_ms` from the replica's clock, as
//! the in-process limiters do, and Redis only keeps the state (TTLs are relative,
//! so Redis's own clock only decides when a key that no longer matters goes).
//! So the limits follow a test's adjustable clock as before, and the tables run
//! against Redis at fixed times. The price is replicas' clock skew: a replica
//! whose clock runs δ ahead sees buckets full again δ early and failures
//! forgotten δ early, i.e. at most δ / interval extra attempts per source (NTP
//! keeps δ at milliseconds; the intervals are seconds).
//!
//! # Keys, and nothing grows without bound
//! Under the domain's prefix: `limits:{SOURCE}:attempts` (a source's bucket,
//! until it is full again), `limits:{SOURCE}:failures:ACCOUNT` (a hash of
//! consecutive failures and the last one's time, for a day after the last),
//! `limits:claims:IDENTITY` and `limits:peers:DOMAIN` (buckets). The braces
//! are Redis Cluster hash tags: the two keys one attempt touches share a slot.
//! Every key carries a TTL: a bucket lives until it is full again, failures
//! until they are forgotten.
//!
//! # When Redis is unreachable
//! Each operation falls back at once to the replica's own in-process limiter
//! (`RedisLink::connection` is `None` while Redis is down, and a command's
//! wait, reconnection included, is bounded by `RedisLink::bounded`); the link logs
//! the outage once. The limits then hold per replica, as without `[redis]`,
//! until Redis answers again; the state counted locally meanwhile is not
//! carried over (Redis restarted empty, or kept its own).

use super::RedisLink;
use crate::rules::attempt_limits::{self, Attempt, AttemptPolicy, AttemptRefusal, Limit, Source};
use crate::rules::rate::{Rate, RateExceeded};
use crate::service::attempt_limiter::{AttemptLimiter, LocalAttemptLimiter};
use crate::service::rate_limiter::{KeyedRateLimiter, LocalRateLimiter};
use conclave_core::ids::Username;
use futures::future::BoxFuture;
use redis::{FromRedisValue, Script, ScriptInvocation};
use std::sync::{Arc, LazyLock};

/// Spends one event from the bucket `KEYS[1]` unless the login back-off in
/// `KEYS[2]` (if given) is running; `rules::attempt_limits::admit` and
/// `rules::rate::Rate::take`.
/// ARGV: now_ms, interval_ms, tolerance_ms, then with `KEYS[2]`:
/// free_failures, memory_ms and the back-off table.
/// Returns {0, 0} (spent), {1, wait_ms} (backing off), {2, wait_ms} (empty).
const ADMIT_LUA: &str = r"
local now = tonumber(ARGV[1])
if #KEYS == 2 then
  local failures = redis.call('HMGET', KEYS[2], 'consecutive', 'last_failure_ms')
  local consecutive, last = tonumber(failures[1]), tonumber(failures[2])
  local free, memory = tonumber(ARGV[4]), tonumber(ARGV[5])
  if consecutive and last and now - last < memory and consecutive > free then
    local entry = math.min(consecutive - free, #ARGV - 5)
    local remaining = last + tonumber(ARGV[5 + entry]) - now
    if remaining > 0 then
      return {1, remaining}
    end
  end
end
local interval, tolerance = tonumber(ARGV[2]), tonumber(ARGV[3])
local full_again_at = math.max(tonumber(redis.call('GET', KEYS[1])) or now, now)
local ahead = full_again_at - now
if ahead > tolerance then
  return {2, ahead - tolerance}
end
local next_full_again_at = full_again_at + interval
redis.call('SET', KEYS[1], string.format('%d', next_full_again_at),
  'PX', string.format('%d', next_full_again_at - now))
return {0, 0}
";

/// Counts one failed login in the hash `KEYS[1]`, starting afresh if the
/// earlier ones are forgotten; `rules::attempt_limits::after_login_failure`.
/// ARGV: now_ms, memory_ms. The hash lives as long as it is remembered.
const RECORD_FAILURE_LUA: &str = r"
local now, memory = tonumber(ARGV[1]), tonumber(ARGV[2])
local failures = redis.call('HMGET', KEYS[1], 'consecutive', 'last_failure_ms')
local consecutive, last = tonumber(failures[1]) or 0, tonumber(failures[2]) or now
if now - last >= memory then
  consecutive = 0
end
redis.call('HSET', KEYS[1], 'consecutive', consecutive + 1,
  'last_failure_ms', string.format('%d', now))
redis.call('PEXPIRE', KEYS[1], memory)
return consecutive + 1
";

static ADMIT: LazyLock<Script> = LazyLock::new(|| Script::new(ADMIT_LUA));
static RECORD_FAILURE: LazyLock<Script> = LazyLock::new(|| Script::new(RECORD_FAILURE_LUA));

/// What [`ADMIT`] answered.
const ADMITTED: i64 = 0;
const BACKING_OFF: i64 = 1;
const BUCKET_EMPTY: i64 = 2;

/// Runs a script on the shared state: its answer, or `None` if Redis is down or
/// failed (the caller then falls back to its local limiter).
async fn run<T: FromRedisValue>(link: &RedisLink, invocation: &ScriptInvocation<'_>) -> Option<T> {
    let mut connection = link.connection()?;
    let result = link.bounded(invocation.invoke_async(&mut connection)).await;
    match result {
        Ok(answer) => Some(answer),
        Err(error) => {
            // An outage is logged once by `observe`; anything else (a script
            // error, a key of another type under our prefix) is a fault here.
            if link.is_up() {
                tracing::error!(%error, "a shared limit's script failed; counting in this replica");
            }
            None
        }
    }
}

/// A source as part of a key: stable and without spaces.
fn source_key(source: Source) -> String {
    match source {
        Source::V4(address) => format!("v4:{address}"),
        Source::V6Prefix(prefix) => format!("v6:{prefix:016x}"),
        Source::Unknown => "unknown".to_owned(),
    }
}

/// The attempt limits, shared by the replicas through Redis.
pub(crate) struct SharedAttemptLimiter {
    link: Arc<RedisLink>,
    policy: AttemptPolicy,
    /// `attempt_limits::backoff_schedule(policy)`, passed to every admission.
    backoff_schedule: Vec<u64>,
    /// Counts while Redis is unreachable.
    local: LocalAttemptLimiter,
}

impl SharedAttemptLimiter {
    pub(crate) fn new(link: Arc<RedisLink>, policy: AttemptPolicy) -> SharedAttemptLimiter {
        SharedAttemptLimiter {
            link,
            policy,
            backoff_schedule: attempt_limits::backoff_schedule(&policy),
            local: LocalAttemptLimiter::new(policy),
        }
    }

    fn bucket_key(&self, source: Source) -> String {
        self.link
            .key(&format!("limits:{{{}}}:attempts", source_key(source)))
    }

    fn failures_key(&self, account: &Username, source: Source) -> String {
        self.link.key(&format!(
            "limits:{{{}}}:failures:{account}",
            source_key(source)
        ))
    }

    async fn admit_shared(
        &self,
        attempt: &Attempt,
        now_ms: i64,
    ) -> Option<Result<(), AttemptRefusal>> {
        let rate = attempt_limits::bucket_rate(&self.policy);
        let mut invocation = ADMIT.prepare_invoke();
        invocation.key(self.bucket_key(attempt.source()));
        invocation
            .arg(now_ms)
            .arg(rate.interval_ms)
            .arg(rate.tolerance_ms());
        if let Attempt::Login { account, source } = attempt {
            invocation.key(self.failures_key(account, *source));
            invocation
                .arg(self.policy.free_login_failures)
                .arg(attempt_limits::LOGIN_FAILURE_MEMORY_MS)
                .arg(&self.backoff_schedule);
        }
        let (answer, wait_ms): (i64, u64) = run(&self.link, &invocation).await?;
        let refused = |limit| {
            Some(Err(AttemptRefusal {
                limit,
                retry_after_ms: wait_ms,
            }))
        };
        match answer {
            ADMITTED => Some(Ok(())),
            BACKING_OFF => refused(Limit::LoginBackoff),
            BUCKET_EMPTY => refused(Limit::SourceRate),
            _ => {
                tracing::error!(answer, "the attempt script gave an unknown answer");
                None
            }
        }
    }
}

impl AttemptLimiter for SharedAttemptLimiter {
    fn admit(&self, attempt: Attempt, now_ms: i64) -> BoxFuture<'_, Result<(), AttemptRefusal>> {
        Box::pin(async move {
            match self.admit_shared(&attempt, now_ms).await {
                Some(decision) => decision,
                None => self.local.admit(attempt, now_ms).await,
            }
        })
    }

    fn record_login_failure(
        &self,
        account: Username,
        source: Source,
        now_ms: i64,
    ) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let mut invocation = RECORD_FAILURE.prepare_invoke();
            invocation
                .key(self.failures_key(&account, source))
                .arg(now_ms)
                .arg(attempt_limits::LOGIN_FAILURE_MEMORY_MS);
            let counted: Option<u32> = run(&self.link, &invocation).await;
            if counted.is_none() {
                self.local
                    .record_login_failure(account, source, now_ms)
                    .await;
            }
        })
    }

    fn record_login_success(&self, account: Username, source: Source) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let key = self.failures_key(&account, source);
            if let Some(mut connection) = self.link.connection() {
                let mut delete = redis::cmd("DEL");
                delete.arg(key);
                let _: redis::RedisResult<u32> =
                    self.link.bounded(delete.query_async(&mut connection)).await;
            }
            // Failures counted here during an outage end too.
            self.local.record_login_success(account, source).await;
        })
    }
}

/// One rate per key (claims per claimer, requests per peer), shared by the
/// replicas through Redis.
pub(crate) struct SharedRateLimiter {
    link: Arc<RedisLink>,
    /// What is limited, in the keys: `claims`, `peers`.
    name: &'static str,
    rate: Rate,
    /// Counts while Redis is unreachable.
    local: LocalRateLimiter,
}

impl SharedRateLimiter {
    pub(crate) fn new(link: Arc<RedisLink>, name: &'static str, rate: Rate) -> SharedRateLimiter {
        SharedRateLimiter {
            link,
            name,
            rate,
            local: LocalRateLimiter::new(rate),
        }
    }

    async fn check_shared(&self, key: &str, now_ms: i64) -> Option<Result<(), RateExceeded>> {
        let mut invocation = ADMIT.prepare_invoke();
        invocation
            .key(self.link.key(&format!("limits:{}:{key}", self.name)))
            .arg(now_ms)
            .arg(self.rate.interval_ms)
            .arg(self.rate.tolerance_ms());
        let (answer, wait_ms): (i64, u64) = run(&self.link, &invocation).await?;
        match answer {
            ADMITTED => Some(Ok(())),
            BUCKET_EMPTY => Some(Err(RateExceeded {
                retry_after_ms: wait_ms,
            })),
            _ => {
                tracing::error!(answer, "the rate script gave an unknown answer");
                None
            }
        }
    }
}

impl KeyedRateLimiter for SharedRateLimiter {
    fn check<'a>(&'a self, key: &'a str, now_ms: i64) -> BoxFuture<'a, Result<(), RateExceeded>> {
        Box::pin(async move {
            match self.check_shared(key, now_ms).await {
                Some(decision) => decision,
                None => self.local.check_now(key, now_ms),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RedisConfig;
    use crate::service::attempt_limiter::tests::{POLICY, check_cases};
    use crate::service::rate_limiter::tests as rate_cases;
    use std::net::Ipv4Addr;
    use std::process::{Child, Command, Stdio};
    use std::time::Duration;

    /// The Redis the tests share (`scripts/services` starts it); each test
    /// keeps to a prefix of its own.
    const SHARED_REDIS: &str = "redis://127.0.0.1:6379";

    fn fresh_prefix(test: &str) -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        format!("test-{test}-{}-{nanos}", std::process::id())
    }

    /// A replica's link to the Redis at `url`, once it is up.
    async fn link(url: &str, key_prefix: &str) -> Arc<RedisLink> {
        let config = RedisConfig {
            url: Some(url.to_owned()),
            key_prefix: key_prefix.to_owned(),
            ..RedisConfig::default()
        };
        let (link, _pushes) = RedisLink::start(&config).unwrap();
        wait_until_up(&link, true).await;
        link
    }

    async fn wait_until_up(link: &RedisLink, up: bool) {
        let mut state = link.watch_up();
        tokio::time::timeout(Duration::from_secs(20), state.wait_for(|now| *now == up))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "Redis did not become {}",
                    if up {
                        "reachable (this test needs redis-server)"
                    } else {
                        "unreachable"
                    }
                )
            })
            .unwrap();
    }

    /// Every key under `prefix`, each with its time to live in milliseconds.
    async fn keys_and_ttls(link: &RedisLink, prefix: &str) -> Vec<(String, i64)> {
        let mut connection = link.connection().expect("Redis is up");
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}:*"))
            .query_async(&mut connection)
            .await
            .unwrap();
        let mut found = Vec::new();
        for key in keys {
            let ttl: i64 = redis::cmd("PTTL")
                .arg(&key)
                .query_async(&mut connection)
                .await
                .unwrap();
            found.push((key, ttl));
        }
        found
    }

    /// A redis-server of the test's own on a free loopback port, to stop and
    /// start again; killed when dropped.
    struct PrivateRedis {
        port: u16,
        process: Option<Child>,
    }

    impl PrivateRedis {
        fn start() -> PrivateRedis {
            let port = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let mut redis = PrivateRedis {
                port,
                process: None,
            };
            redis.resume();
            redis
        }

        fn url(&self) -> String {
            format!("redis://127.0.0.1:{}", self.port)
        }

        fn resume(&mut self) {
            let process = Command::new("redis-server")
                .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .stdout(Stdio::null())
                .spawn()
                .expect("this test needs redis-server on the PATH");
            self.process = Some(process);
        }

        fn stop(&mut self) {
            if let Some(mut process) = self.process.take() {
                let _ = process.kill();
                let _ = process.wait();
            }
        }
    }

    impl Drop for PrivateRedis {
        fn drop(&mut self) {
            self.stop();
        }
    }

    #[tokio::test]
    async fn the_shared_attempt_limiter_passes_the_cases_as_two_replicas() {
        let prefix = fresh_prefix("attempts");
        let replicas = [
            SharedAttemptLimiter::new(link(SHARED_REDIS, &prefix).await, POLICY),
            SharedAttemptLimiter::new(link(SHARED_REDIS, &prefix).await, POLICY),
        ];
        // Taking turns, the replicas pass only if they share every count (one
        // that fell back to its own counts would fail the second step of a case).
        check_cases(&[&replicas[0], &replicas[1]]).await;
        assert!(replicas.iter().all(|replica| replica.link.is_up()));
        let keys = keys_and_ttls(&replicas[0].link, &prefix).await;
        assert!(
            keys.iter()
                .any(|(key, _)| key == &format!("{prefix}:limits:{{v4:192.0.2.4}}:attempts")),
            "{keys:?}"
        );
        assert!(
            keys.iter().any(|(key, _)| key.ends_with(":failures:alice")),
            "{keys:?}"
        );
        // Nothing stays for ever: buckets until full again, failures a day.
        for (key, ttl) in keys {
            assert!(
                (1..=attempt_limits::LOGIN_FAILURE_MEMORY_MS).contains(&ttl),
                "{key} has no time to live ({ttl})"
            );
        }
    }

    #[tokio::test]
    async fn the_shared_rate_limiter_passes_the_cases_as_two_replicas() {
        let prefix = fresh_prefix("rates");
        let replicas = [
            SharedRateLimiter::new(
                link(SHARED_REDIS, &prefix).await,
                "claims",
                rate_cases::RATE,
            ),
            SharedRateLimiter::new(
                link(SHARED_REDIS, &prefix).await,
                "claims",
                rate_cases::RATE,
            ),
        ];
        rate_cases::check_cases(&[&replicas[0], &replicas[1]], "").await;
        let keys = keys_and_ttls(&replicas[0].link, &prefix).await;
        assert!(
            keys.iter()
                .any(|(key, _)| key == &format!("{prefix}:limits:claims:burst")),
            "{keys:?}"
        );
        let longest = rate_cases::RATE.interval_ms * i64::from(rate_cases::RATE.burst);
        for (key, ttl) in keys {
            assert!((1..=longest).contains(&ttl), "{key}: {ttl}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replicas_racing_on_one_source_never_overspend_it() {
        let prefix = fresh_prefix("race");
        let policy = AttemptPolicy {
            attempt_burst: 20,
            ..POLICY
        };
        let replicas = [
            Arc::new(SharedAttemptLimiter::new(
                link(SHARED_REDIS, &prefix).await,
                policy,
            )),
            Arc::new(SharedAttemptLimiter::new(
                link(SHARED_REDIS, &prefix).await,
                policy,
            )),
        ];
        let source = Source::V4(Ipv4Addr::new(198, 51, 100, 7));
        let now_ms = 1_700_000_000_000;
        let attempts = (0..60).map(|index| {
            let replica = replicas[index % 2].clone();
            tokio::spawn(async move {
                replica
                    .admit(Attempt::Register { source }, now_ms)
                    .await
                    .is_ok()
            })
        });
        let mut admitted = 0;
        for attempt in attempts.collect::<Vec<_>>() {
            admitted += usize::from(attempt.await.unwrap());
        }
        assert_eq!(admitted, 20);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn without_redis_each_replica_counts_on_its_own_until_it_is_back() {
        let mut redis = PrivateRedis::start();
        let prefix = fresh_prefix("fallback");
        let (a, b) = (
            SharedAttemptLimiter::new(link(&redis.url(), &prefix).await, POLICY),
            SharedAttemptLimiter::new(link(&redis.url(), &prefix).await, POLICY),
        );
        let source = Source::V4(Ipv4Addr::new(203, 0, 113, 9));
        let register = || Attempt::Register { source };
        let now_ms = 1_700_000_000_000;
        async fn spend_the_burst(limiter: &SharedAttemptLimiter, attempt: Attempt) -> [bool; 3] {
            let mut admitted = [false; 3];
            for outcome in &mut admitted {
                *outcome = limiter
                    .admit(attempt.clone(), 1_700_000_000_000)
                    .await
                    .is_ok();
            }
            admitted
        }
        // Shared: a spends the burst of 2, and b is refused.
        assert!(a.admit(register(), now_ms).await.is_ok());
        assert!(a.admit(register(), now_ms).await.is_ok());
        assert!(b.admit(register(), now_ms).await.is_err());

        redis.stop();
        // Each replica at once counts on its own: a fresh local bucket of 2
        // each, still limited.
        assert_eq!(spend_the_burst(&a, register()).await, [true, true, false]);
        assert!(!a.link.is_up(), "the outage was noticed");
        assert_eq!(spend_the_burst(&b, register()).await, [true, true, false]);

        redis.resume();
        wait_until_up(&a.link, true).await;
        wait_until_up(&b.link, true).await;
        // Shared again (the restarted Redis kept nothing): 2 in all.
        assert!(b.admit(register(), now_ms).await.is_ok());
        assert!(a.admit(register(), now_ms).await.is_ok());
        assert!(a.admit(register(), now_ms).await.is_err());
        assert!(b.admit(register(), now_ms).await.is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn claims_fall_back_to_local_counts_while_redis_is_down() {
        let mut redis = PrivateRedis::start();
        let prefix = fresh_prefix("claims-fallback");
        let rate = Rate::per_minute(1, 1);
        let (a, b) = (
            SharedRateLimiter::new(link(&redis.url(), &prefix).await, "claims", rate),
            SharedRateLimiter::new(link(&redis.url(), &prefix).await, "claims", rate),
        );
        let now_ms = 1_700_000_000_000;
        let claimer = "bob@a.example/1";
        assert!(a.check(claimer, now_ms).await.is_ok());
        assert!(b.check(claimer, now_ms).await.is_err());
        redis.stop();
        assert!(b.check(claimer, now_ms).await.is_ok());
        assert!(b.check(claimer, now_ms).await.is_err());
        assert!(!b.link.is_up());
    }
}
