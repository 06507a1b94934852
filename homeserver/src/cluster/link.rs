//! One replica's connection to Redis: a `ConnectionManager` over RESP3, which
//! reconnects on its own and, because the connection carries pub/sub, subscribes
//! again to every channel after a reconnect. Pub/sub messages arrive on the
//! receiver [`RedisLink::start`] returns.
//!
//! Whether Redis is up is tracked from every command's result (`observe`) and a
//! PING every second, so an outage is noticed (and logged once) even when
//! nothing else talks to Redis, and users of the link can fall back at once
//! instead of waiting on a dead connection.

use crate::config::RedisConfig;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{IntoConnectionInfo as _, ProtocolVersion, PushInfo, RedisResult};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// How often the link checks that Redis answers.
const HEALTH_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// How long one connection attempt, and one command's answer, may take: a dead
/// Redis must not hold up a request that only wanted a hint or a counter.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(500);
/// Reconnection attempts per failed command, and the longest wait between two;
/// the health check starts a new round every second anyway.
const RECONNECT_RETRIES: usize = 2;
const RECONNECT_MAX_DELAY: Duration = Duration::from_millis(500);
/// Longest a command may take in all, waiting for a reconnection included (the
/// response timeout bounds only the answer): past it the command counts as an
/// outage, and the caller falls back.
const COMMAND_DEADLINE: Duration = Duration::from_secs(1);

/// Why a `[redis] url` cannot be used.
pub(crate) fn check_redis_url(url: &str) -> Result<(), String> {
    if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
        return Err("must start with redis:// or rediss://".to_owned());
    }
    url.into_connection_info()
        .map(|_| ())
        .map_err(|error| format!("not a Redis URL: {error}"))
}

/// The client for `url`, speaking RESP3 (pub/sub messages arrive on the
/// connection); not connected yet. Refuses what [`check_redis_url`] refuses.
fn redis_client(url: &str) -> Result<redis::Client, String> {
    check_redis_url(url)?;
    let info = url
        .into_connection_info()
        .map_err(|error| error.to_string())?;
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(ProtocolVersion::RESP3);
    let info = info.set_redis_settings(settings);
    redis::Client::open(info).map_err(|error| error.to_string())
}

/// `redis at HOST:PORT, database N` (`rediss` with TLS): the URL without its
/// credentials, for reports and logs.
pub(crate) fn describe_redis_url(url: &str) -> Result<String, String> {
    check_redis_url(url)?;
    let info = url
        .into_connection_info()
        .map_err(|error| error.to_string())?;
    let database = info.redis_settings().db();
    let place = match info.addr() {
        redis::ConnectionAddr::Tcp(host, port) => format!("redis at {host}:{port}"),
        redis::ConnectionAddr::TcpTls { host, port, .. } => {
            format!("rediss (TLS) at {host}:{port}")
        }
        redis::ConnectionAddr::Unix(path) => format!("redis at the socket {}", path.display()),
        // Not made by a redis:// or rediss:// URL.
        _ => "redis".to_owned(),
    };
    Ok(format!("{place}, database {database}"))
}

/// Connects to the Redis of `url` (with its credentials) and PINGs it,
/// within `timeout` in all: for `check-config --connect`. Returns the reply.
pub(crate) async fn ping(url: &str, timeout: Duration) -> Result<String, String> {
    let client = redis_client(url)?;
    let exchange = async {
        let mut connection = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(reply)) => Ok(reply),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("no answer within {} s", timeout.as_secs())),
    }
}

/// A replica's connection to Redis, shared by everything that uses Redis.
pub(crate) struct RedisLink {
    manager: ConnectionManager,
    key_prefix: String,
    /// Whether the last command (or health check) reached Redis.
    up: watch::Sender<bool>,
}

impl RedisLink {
    /// Starts connecting to the Redis of `config` (in the background: a replica
    /// starts and serves while Redis is down). Fails only on a URL that
    /// `check_redis_url` refuses.
    pub(crate) fn start(
        config: &RedisConfig,
    ) -> Result<(Arc<RedisLink>, mpsc::UnboundedReceiver<PushInfo>), String> {
        let url = config.url.as_deref().ok_or("redis.url is not set")?;
        let client = redis_client(url)?;
        let (push_sender, pushes) = mpsc::unbounded_channel();
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(RECONNECT_RETRIES)
            .set_max_delay(RECONNECT_MAX_DELAY)
            .set_push_sender(push_sender)
            .set_automatic_resubscription();
        let manager = ConnectionManager::new_lazy_with_config(client, manager_config)
            .map_err(|error| error.to_string())?;
        let link = Arc::new(RedisLink {
            manager,
            key_prefix: config.key_prefix.clone(),
            up: watch::Sender::new(false),
        });
        tokio::spawn(check_health(Arc::downgrade(&link)));
        Ok((link, pushes))
    }

    /// The connection to send commands on, while Redis is up; `None` while it
    /// is down (use the local fallback).
    pub(crate) fn connection(&self) -> Option<ConnectionManager> {
        self.is_up().then(|| self.manager.clone())
    }

    /// The connection whatever the state: for what must be attempted even
    /// while Redis looks down (subscribing, so the subscription is in place
    /// when it returns).
    pub(crate) fn connection_even_if_down(&self) -> ConnectionManager {
        self.manager.clone()
    }

    /// `suffix` under this domain's prefix: the name of a key or channel.
    pub(crate) fn key(&self, suffix: &str) -> String {
        format!("{}:{suffix}", self.key_prefix)
    }

    /// Whether Redis answered the last command or health check.
    pub(crate) fn is_up(&self) -> bool {
        *self.up.borrow()
    }

    /// Changes of [`RedisLink::is_up`], e.g. to subscribe again once Redis is
    /// back.
    pub(crate) fn watch_up(&self) -> watch::Receiver<bool> {
        self.up.subscribe()
    }

    /// Runs `command` within [`COMMAND_DEADLINE`] and records its outcome
    /// (`observe`): a command caught in a reconnection to a Redis that went
    /// away fails after the deadline instead of holding up its request.
    pub(crate) async fn bounded<T>(
        &self,
        command: impl std::future::Future<Output = RedisResult<T>>,
    ) -> RedisResult<T> {
        let result = match tokio::time::timeout(COMMAND_DEADLINE, command).await {
            Ok(result) => result,
            Err(_) => Err(redis::RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "Redis did not answer within the command deadline",
            ))),
        };
        self.observe(&result);
        result
    }

    /// Records what a command's result says about Redis: an answer (even an
    /// error reply) means it is up; a connection failure or timeout that it is
    /// down. Each change is logged once.
    pub(crate) fn observe<T>(&self, result: &RedisResult<T>) {
        match result {
            Ok(_) => self.set_up(true, None),
            Err(error) if is_outage(error) => self.set_up(false, Some(error)),
            Err(_) => self.set_up(true, None),
        }
    }

    fn set_up(&self, up: bool, error: Option<&redis::RedisError>) {
        let changed = self.up.send_if_modified(|state| {
            let changed = *state != up;
            *state = up;
            changed
        });
        if !changed {
            return;
        }
        match error {
            None => tracing::info!(
                "Redis is reachable: wake-ups across replicas and shared limits are on"
            ),
            Some(error) => tracing::warn!(
                %error,
                "Redis is unreachable: serving on, with wake-ups from polling the database and limits counted per replica until it is back"
            ),
        }
    }
}

/// An error that means Redis could not be reached (rather than a refused command).
fn is_outage(error: &redis::RedisError) -> bool {
    error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_unrecoverable_error()
}

/// PINGs Redis every second while the link lives, so that an outage, and the
/// end of one, are noticed without traffic, and a lazy connection is made.
async fn check_health(link: Weak<RedisLink>) {
    let mut interval = tokio::time::interval(HEALTH_CHECK_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Some(link) = link.upgrade() else {
            return;
        };
        let mut connection = link.manager.clone();
        let result: RedisResult<String> = redis::cmd("PING").query_async(&mut connection).await;
        link.observe(&result);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        assert!(check_redis_url("redis://127.0.0.1:6379").is_ok());
        assert!(check_redis_url("rediss://redis.internal:6380/2").is_ok());
        assert!(check_redis_url("redis://:secret@127.0.0.1").is_ok());
        assert!(check_redis_url("http://127.0.0.1:6379").is_err());
        assert!(check_redis_url("redis://127.0.0.1:notaport").is_err());
    }

    #[test]
    fn keys_carry_the_prefix() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let config = RedisConfig {
                url: Some("redis://127.0.0.1:1".to_owned()),
                key_prefix: "tenant-a".to_owned(),
                ..RedisConfig::default()
            };
            let (link, _pushes) = RedisLink::start(&config).unwrap();
            assert_eq!(link.key("wake:group:7"), "tenant-a:wake:group:7");
        });
    }

    /// Against the Redis the tests use (127.0.0.1:6379, started by
    /// `scripts/services`): the link comes up by itself; a link to a port
    /// where nothing listens stays down, and hands out no connection.
    #[tokio::test]
    async fn the_link_knows_whether_redis_answers() {
        let config = |url: &str| RedisConfig {
            url: Some(url.to_owned()),
            ..RedisConfig::default()
        };
        let (link, _pushes) = RedisLink::start(&config("redis://127.0.0.1:6379")).unwrap();
        let mut up = link.watch_up();
        tokio::time::timeout(Duration::from_secs(10), up.wait_for(|up| *up))
            .await
            .expect("this test needs Redis on 127.0.0.1:6379 (scripts/services starts it)")
            .unwrap();
        assert!(link.connection().is_some());

        // Port 1 on loopback: nothing listens there.
        let (dead, _pushes) = RedisLink::start(&config("redis://127.0.0.1:1")).unwrap();
        let mut connection = dead.connection_even_if_down();
        let result: RedisResult<String> = redis::cmd("PING").query_async(&mut connection).await;
        dead.observe(&result);
        assert!(result.is_err());
        assert!(!dead.is_up());
        assert!(dead.connection().is_none());
    }
}
