//! Cluster mode: what replicas of one domain share besides the database. Each
//! replica keeps one connection to Redis ([`RedisLink`]); wake-ups and shared
//! limits go through it. Redis holds hints and counters only, never the truth:
//! when it is down, replicas keep serving from the database and count their
//! limits on their own until it is back.
//!
//! The only module that knows the `redis` crate.
//!
//! # Layout
//! - `link.rs`: the connection (RESP3, reconnecting, re-subscribing), whether
//!   Redis is up, and the key prefix.
//! - `limits.rs`: the rate limits the replicas share (attempts, claims, peer
//!   requests), one Lua script per operation, with local fallback.
//! - `pubsub.rs`: publishing, subscribing and reading push messages on the
//!   link, for the wake-ups across replicas (`notify::ClusterNotifier`).

mod limits;
mod link;
mod pubsub;

pub(crate) use limits::{SharedAttemptLimiter, SharedRateLimiter};
pub(crate) use link::{RedisLink, check_redis_url, describe_redis_url, ping};
pub(crate) use pubsub::{PushEvent, Pushes, next_push};
