//! The homeserver's integration tests: the real server started in-process on
//! 127.0.0.1 ports chosen by the OS, driven through the generated gRPC clients,
//! each behaviour on SQLite and on PostgreSQL.
//!
//! # Layout
//! - [`harness`]: servers, clients, registered devices, KeyPackage building.
//! - [`accounts`]: register, login, whoami, devices, logout.
//! - [`registration`]: the open, closed and token registration policies.
//! - [`account_input`]: malformed account requests and bad credentials.
//! - [`key_package_input`]: refused uploads and claims.
//! - [`key_packages`]: the directory: stock, claims, last resort, rate limit.
//! - [`concurrency`]: racing claims, uploads, logins and registrations.
//! - [`server`]: health, reflection, HTTP probes, restart, TLS.

/// Turns each `async fn name(database: DatabaseChoice)` into a module `name` with
/// the tests `sqlite` and `postgres`. The PostgreSQL variant fails, never skips,
/// when PostgreSQL is unreachable.
macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use conclave_homeserver::test_support::DatabaseChoice;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                crate::harness::within_timeout(super::$name(DatabaseChoice::Sqlite)).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                crate::harness::within_timeout(super::$name(DatabaseChoice::Postgres)).await;
            }
        }
    )*};
}

mod account_input;
mod accounts;
mod concurrency;
mod harness;
mod key_package_input;
mod key_packages;
mod registration;
mod server;
