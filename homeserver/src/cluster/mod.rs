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

mod link;

pub(crate) use link::{RedisLink, check_redis_url};
