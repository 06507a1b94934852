//! One more replica of a test domain, in this process but on a tokio runtime of
//! its own, so that a test can kill it the way SIGKILL kills a process: every
//! one of its tasks stops where it is, and nothing of its shutdown runs (no
//! lease is released, no connection closed gracefully).
//!
//! For tests of a domain's replicas sharing one database (e.g. a
//! [`crate::TestNetwork`] domain on PostgreSQL plus a replica made from its
//! configuration); the process-level cluster harness runs the real binary.

use crate::homeserver::readyz_ok;
use crate::wait::eventually;
use conclave_homeserver::config::Config;
use conclave_homeserver::{Listeners, SystemClock};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Longest a replica may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A homeserver replica on a runtime of its own; killed when dropped.
pub struct KillableReplica {
    runtime: Option<tokio::runtime::Runtime>,
    config: Config,
}

impl KillableReplica {
    /// Starts `conclave_homeserver::run` with `config` (which names the shared
    /// database), its client API and HTTP endpoint on 127.0.0.1 ports chosen
    /// by the OS, and with federation on, its federation API on the host of
    /// `config.federation.listen`, on a port chosen by the OS.
    pub async fn start(mut config: Config) -> KillableReplica {
        let bind = |address: SocketAddr| {
            let listener = std::net::TcpListener::bind(address)
                .unwrap_or_else(|error| panic!("cannot bind {address}: {error}"));
            listener
                .set_nonblocking(true)
                .expect("a non-blocking listener");
            listener
        };
        let client_api = bind(SocketAddr::from(([127, 0, 0, 1], 0)));
        let http = bind(SocketAddr::from(([127, 0, 0, 1], 0)));
        let federation = config
            .federation
            .enabled()
            .then(|| bind(SocketAddr::new(config.federation.listen.ip(), 0)));
        let address = |listener: &std::net::TcpListener| listener.local_addr().expect("bound");
        config.client_api.listen = address(&client_api);
        config.http.listen = address(&http);
        if let Some(listener) = &federation {
            config.federation.listen = address(listener);
        }
        config
            .validate()
            .expect("the replica's configuration is valid");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("killable-replica")
            .enable_all()
            .build()
            .expect("a runtime for the replica");
        let run_config = config.clone();
        // The listeners join the replica's runtime's reactor, so they are made
        // into tokio listeners on it.
        runtime.spawn(async move {
            let tokio_listener =
                |listener| tokio::net::TcpListener::from_std(listener).expect("a tokio listener");
            let listeners = Listeners {
                client_api: tokio_listener(client_api),
                http: tokio_listener(http),
                federation: federation.map(tokio_listener),
            };
            let never = std::future::pending::<()>();
            if let Err(error) =
                conclave_homeserver::run(run_config, listeners, Arc::new(SystemClock), never).await
            {
                panic!("the replica failed: {error}");
            }
        });
        let replica = KillableReplica {
            runtime: Some(runtime),
            config,
        };
        let http_address = replica.config.http.listen;
        eventually(READY_TIMEOUT, "the replica becoming ready", || async {
            readyz_ok(http_address).await.then_some(())
        })
        .await;
        replica
    }

    /// Its configuration, with the addresses it listens on.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// `http://127.0.0.1:PORT` of its client API.
    pub fn client_url(&self) -> String {
        format!("http://{}", self.config.client_api.listen)
    }

    /// Kills it: its runtime stops at once, dropping every task where it is.
    pub fn kill(mut self) {
        self.stop_runtime();
    }

    fn stop_runtime(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for KillableReplica {
    fn drop(&mut self) {
        self.stop_runtime();
    }
}
