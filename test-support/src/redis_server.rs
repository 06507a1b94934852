//! A private `redis-server` for one test: on 127.0.0.1, a port of its own,
//! nothing saved to disk, so the test may stop and start it at will (Redis
//! outages) without touching anyone else's Redis. A test that needs it fails
//! loudly when `redis-server` is not installed; it never skips.
//!
//! It speaks to the server with a few raw RESP commands (PING, PUBSUB NUMSUB),
//! so this crate needs no Redis client.

use crate::wait::eventually;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest a fresh `redis-server` may take to answer PING.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A `redis-server` process this test started, killed when dropped.
pub struct TestRedis {
    address: SocketAddr,
    child: Option<Child>,
}

impl TestRedis {
    /// Starts a `redis-server` on a free 127.0.0.1 port and waits until it answers.
    pub async fn start() -> TestRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("cannot find a free port")
            .port();
        let mut redis = TestRedis {
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            child: None,
        };
        redis.start_again().await;
        redis
    }

    /// `redis://127.0.0.1:PORT/?protocol=resp3`, for `redis.url`.
    pub fn url(&self) -> String {
        format!("redis://{}/?protocol=resp3", self.address)
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Kills the server (SIGKILL, as a crash would) and waits until it is gone:
    /// connections to it break, and it loses everything it held.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (after [`TestRedis::stop`]),
    /// empty, and waits until it answers PING.
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "the test redis-server is running");
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port"])
            .arg(self.address.port().to_string())
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!("this test needs `redis-server` on the PATH (see README.md): {error}")
            });
        self.child = Some(child);
        let address = self.address;
        eventually(
            START_TIMEOUT,
            "the test redis-server answering",
            || async move {
                command(address, &["PING"])
                    .await
                    .filter(|reply| reply.starts_with("+PONG"))
                    .map(|_| ())
            },
        )
        .await;
    }

    /// How many connections are subscribed to `channel` (`PUBSUB NUMSUB`);
    /// `None` while the server does not answer.
    pub async fn subscribers(&self, channel: &str) -> Option<u64> {
        let reply = command(self.address, &["PUBSUB", "NUMSUB", channel]).await?;
        // *2 $len channel :count
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

/// Sends one command and returns the server's reply as text; `None` when the
/// server cannot be reached.
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
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .ok()
        .flatten()
}
