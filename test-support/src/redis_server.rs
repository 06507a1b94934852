//! A private `redis-server` for one test: on 127.0.0.1, on a port of its own,
//! saving nothing to disk, so the test may kill it and start it again (a Redis
//! outage) without touching anyone else's Redis. A test that needs it fails
//! loudly when `redis-server` is not installed; it never skips.
//!
//! The server's output goes to a log file in a temporary directory of its own,
//! whose end is shown when it fails to start. The harness talks to it with a
//! few raw RESP commands (PING, PUBSUB NUMSUB), so this crate needs no Redis
//! client.

use crate::cluster::{free_address, wait_for_service};
use std::fs::OpenOptions;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Longest a fresh `redis-server` may take to answer PING.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Longest one command to the server may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// A `redis-server` process this test started; killed when dropped.
pub struct TestRedis {
    address: SocketAddr,
    child: Option<Child>,
    log_path: PathBuf,
    /// Holds the log and the server's working directory.
    directory: tempfile::TempDir,
}

impl TestRedis {
    /// Starts `redis-server` on a free 127.0.0.1 port and waits until it
    /// answers PING.
    pub async fn start() -> TestRedis {
        let directory = tempfile::Builder::new()
            .prefix("conclave-redis-")
            .tempdir()
            .expect("cannot create a temporary directory");
        let mut redis = TestRedis {
            address: free_address(Ipv4Addr::LOCALHOST),
            child: None,
            log_path: directory.path().join("redis.log"),
            directory,
        };
        redis.start_again().await;
        redis
    }

    /// `redis://127.0.0.1:PORT`, for `[redis] url` (the homeserver speaks
    /// RESP3 on its own).
    pub fn url(&self) -> String {
        format!("redis://{}", self.address)
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn port(&self) -> u16 {
        self.address.port()
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills the server (SIGKILL, as a crash would: not a shutdown) and waits
    /// until it is gone. Connections to it break, and whatever it held is
    /// lost: it keeps nothing on disk. Does nothing if it is stopped already.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (after [`TestRedis::stop`]),
    /// empty, and waits until it answers PING; panics, with the end of its
    /// log, if it exits or does not answer in time.
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "the test redis-server is running");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("cannot open the Redis log");
        let stderr = log.try_clone().expect("cannot share the Redis log");
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port"])
            .arg(self.address.port().to_string())
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(self.directory.path())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(stderr))
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "this test needs redis-server on the PATH (scripts/services installs it; see README.md): {error}"
                )
            });
        let address = self.address;
        let child = self.child.insert(child);
        wait_for_service(
            &format!("redis-server at {address}"),
            "answer PING",
            child,
            &self.log_path,
            START_TIMEOUT,
            || async move {
                command(address, &["PING"])
                    .await
                    .is_some_and(|reply| reply.starts_with("+PONG"))
            },
        )
        .await;
    }

    /// How many connections are subscribed to `channel` (`PUBSUB NUMSUB`);
    /// `None` while the server does not answer.
    pub async fn subscribers(&self, channel: &str) -> Option<u64> {
        let reply = command(self.address, &["PUBSUB", "NUMSUB", channel]).await?;
        // An array of the channel's name and its count: `:COUNT` is the last
        // integer line.
        reply
            .lines()
            .rev()
            .find_map(|line| line.strip_prefix(':'))
            .and_then(|count| count.parse().ok())
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sends one command (as a RESP array of bulk strings) and returns the reply's
/// first read as text; `None` when the server cannot be reached or is silent.
async fn command(address: SocketAddr, words: &[&str]) -> Option<String> {
    let mut request = format!("*{}\r\n", words.len());
    for word in words {
        request.push_str(&format!("${}\r\n{word}\r\n", word.len()));
    }
    let exchange = async {
        let mut stream = TcpStream::connect(address).await.ok()?;
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut reply = vec![0u8; 4096];
        let read = stream.read(&mut reply).await.ok()?;
        reply.truncate(read);
        (read > 0).then(|| String::from_utf8_lossy(&reply).into_owned())
    };
    tokio::time::timeout(COMMAND_TIMEOUT, exchange)
        .await
        .ok()
        .flatten()
}
