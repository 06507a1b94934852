//! A TCP load balancer for tests, in front of the replicas of a
//! [`TestCluster`](crate::TestCluster): clients connect to one loopback
//! address, and each connection is forwarded, bytes as they are (HTTP/2 end to
//! end, as a gRPC balancer must), to the first backend that accepts it, in the
//! order of preference given. A replica that is down refuses connections, so
//! new connections (a client reconnecting after its replica died) go to the
//! next one; connections to a replica end when it dies, as they would behind
//! a real balancer.
//!
//! It lets a test's clients, which know one server URL, move to a surviving
//! replica without anything in the client library; it is also how the README
//! tells operators to put replicas behind one address.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Forwards connections from its own loopback port to the first backend that
/// accepts. Stops (closing every forwarded connection) when dropped.
pub struct TestBalancer {
    address: SocketAddr,
    backends: Arc<Mutex<Vec<SocketAddr>>>,
    /// Accepts, and owns the forwarding tasks (see [`serve`]).
    task: JoinHandle<()>,
}

impl TestBalancer {
    /// Listens on 127.0.0.1 on a port chosen by the OS, forwarding to
    /// `backends` in this order of preference.
    pub async fn start(backends: Vec<SocketAddr>) -> TestBalancer {
        assert!(!backends.is_empty(), "a balancer needs a backend");
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("cannot bind the test balancer");
        let address = listener
            .local_addr()
            .expect("a bound socket has an address");
        let backends = Arc::new(Mutex::new(backends));
        let task = tokio::spawn(serve(listener, Arc::clone(&backends)));
        TestBalancer {
            address,
            backends,
            task,
        }
    }

    /// `http://127.0.0.1:PORT`, for the client library.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Forwards new connections to `backends` from now on (open ones stay
    /// where they are).
    pub fn set_backends(&self, backends: Vec<SocketAddr>) {
        assert!(!backends.is_empty(), "a balancer needs a backend");
        *self.backends.lock().unwrap_or_else(PoisonError::into_inner) = backends;
    }
}

impl Drop for TestBalancer {
    fn drop(&mut self) {
        // Aborting `serve` drops its JoinSet, which aborts every forwarding
        // task and so closes both sides of each connection.
        self.task.abort();
    }
}

/// Accepts connections and forwards each in a task of its own.
async fn serve(listener: TcpListener, backends: Arc<Mutex<Vec<SocketAddr>>>) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else { continue };
                let backends = backends
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone();
                connections.spawn(forward(client, backends));
            }
            // Forget finished connections, so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Connects to the first backend that accepts and copies bytes both ways until
/// either side closes; with no backend up, closes the client's connection (it
/// sees the server unreachable, as behind a real balancer).
async fn forward(mut client: TcpStream, backends: Vec<SocketAddr>) {
    for backend in backends {
        if let Ok(mut server) = TcpStream::connect(backend).await {
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            return;
        }
    }
}
