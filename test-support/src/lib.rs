//! Fixtures for Conclave's tests (and its benchmark): homeservers running in the
//! test's process, each on a database of its own, alone or as a network of
//! federated domains with a development CA made at test time. A dev-dependency
//! only: nothing of this crate is compiled into the homeserver.
//!
//! # Layout
//! - [`browser`]: a headless Chromium driven over the DevTools protocol,
//!   with deadlines on every wait and screenshots kept as test artifacts.
//! - [`balancer`]: a TCP load balancer in front of a cluster's replicas, so
//!   that clients move to a surviving replica as they would in production.
//! - [`chart`]: the Helm chart rendered offline, and the Python tools
//!   (Helm, kubernetes-validate, hadolint) the chart and image tests run.
//! - [`clock`]: a clock tests can move forward.
//! - [`command_line`]: a binary's shell completions and manual pages, checked
//!   with bash and groff.
//! - [`cluster`]: replicas of one domain, each a process of the real
//!   `conclave-homeserver` binary, on one PostgreSQL database and a private
//!   Redis; killed, terminated and restarted one by one.
//! - [`container`]: podman with the configuration of
//!   `scripts/container-images`; the runtime image built from the test
//!   binaries and containers of it, removed afterwards.
//! - [`database`]: a fresh SQLite file or PostgreSQL database per server,
//!   removed afterwards.
//! - [`homeserver`]: one homeserver in this process, started, stopped,
//!   restarted on its database and addresses.
//! - [`metrics`]: scraping a homeserver's `/metrics`, reading samples, and
//!   `promtool check metrics`.
//! - [`prometheus`]: a real Prometheus scraping homeservers, queried through
//!   its HTTP API.
//! - [`otlp`]: an in-process OTLP receiver keeping the spans it is sent.
//! - [`pki`]: a development CA and the certificates it issues, as files.
//! - [`network`]: homeservers of several domains, each a federation peer of all
//!   the others, on loopback addresses of their own.
//! - [`redis_server`]: a private `redis-server` per test, stopped and started
//!   again on its port (Redis outages).
//! - [`rendered_pod`]: the pods a rendered chart describes, made local: a
//!   container's command and environment as rendered, its volumes local
//!   directories, its Secrets filled by the test.
//! - [`rendered_deployment`]: a rendered release installed locally: its
//!   hook Jobs, then the Deployment's replicas as processes of the real
//!   binary, each after its init containers.
//! - [`replica`]: one more replica of a domain, on a runtime of its own, so a
//!   test can kill it as SIGKILL would.
//! - [`wait`]: deadlines, and waiting for a condition with one (never a fixed
//!   sleep).
//! - [`fuzz_smoke`]: the fuzz targets run over their corpora, kept crash inputs
//!   and deterministic mutations of them.

pub mod balancer;
pub mod browser;
pub mod chart;
pub mod clock;
pub mod cluster;
pub mod command_line;
pub mod container;
pub mod database;
pub mod fuzz_smoke;
pub mod homeserver;
pub mod metrics;
pub mod network;
pub mod otlp;
pub mod pki;
pub mod prometheus;
pub mod redis_server;
pub mod rendered_deployment;
pub mod rendered_pod;
pub mod replica;
pub mod wait;

pub use balancer::TestBalancer;
pub use browser::TestBrowser;
pub use clock::AdjustableClock;
pub use cluster::{ClusterOptions, ReplicaProcess, TestCluster};
pub use database::{DatabaseChoice, TableLock, TestDatabase};
pub use homeserver::{StoredGroup, TestFederation, TestHomeserver, TestOptions};
pub use network::{RawFailure, TestNetwork};
pub use otlp::{OtlpReceiver, ReceivedSpan};
pub use pki::{IssuedCertificate, TestPki, handshake_only_listener};
pub use prometheus::TestPrometheus;
pub use redis_server::TestRedis;
pub use rendered_deployment::LocalDeployment;
pub use rendered_pod::{LocalPod, RenderedRelease, SecretValues};
pub use replica::KillableReplica;
pub use wait::{Backoff, eventually, within};

/// The password of every test account (the homeserver wants at least 8 bytes).
pub const PASSWORD: &str = "correct horse battery staple";

/// Logs to the test output when `RUST_LOG` is set (e.g.
/// `RUST_LOG=conclave_homeserver=debug`); once per process.
pub fn init_logging() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() {
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_test_writer()
                .init();
        }
    });
}

/// Turns each `async fn name(database: DatabaseChoice)` into a module `name`
/// with the tests `sqlite` and `postgres`, each run by `$within` (a function
/// that awaits the test, e.g. under a deadline). Attributes before a name go on
/// both tests. The PostgreSQL variant fails, never skips, when PostgreSQL is
/// unreachable.
///
/// Without `within ...;`, the tests await the function as it is.
///
/// ```ignore
/// conclave_test_support::on_both_databases!(within crate::harness::within_timeout; a_test);
/// ```
#[macro_export]
macro_rules! on_both_databases {
    (within $within:path; $($(#[$attribute:meta])* $name:ident),* $(,)?) => {$(
        mod $name {
            $(#[$attribute])*
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                $within(super::$name($crate::DatabaseChoice::Sqlite)).await;
            }

            $(#[$attribute])*
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                $within(super::$name($crate::DatabaseChoice::Postgres)).await;
            }
        }
    )*};
    ($($(#[$attribute:meta])* $name:ident),* $(,)?) => {
        $crate::on_both_databases!(within ::std::convert::identity; $($(#[$attribute])* $name),*);
    };
}
