//! The homeserver under test: `conclave_test_support`'s in-process server on
//! 127.0.0.1, on a fresh database, with the limits that would get in
//! the benchmark's way raised and everything else at its defaults (notably a
//! pool of 10 database connections).

use conclave_homeserver::config::Config;
use conclave_test_support::{DatabaseChoice, TestHomeserver, TestOptions};
use std::time::Duration;

/// How long a graceful stop may take.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Starts a homeserver on a fresh database of this kind.
pub(crate) async fn start(database: DatabaseChoice) -> TestHomeserver {
    TestHomeserver::start_with(TestOptions::on(database).configure(raise_limits)).await
}

/// The limits every homeserver of the benchmark runs with, raised from the
/// defaults: building a 10,000-member group claims key packages faster than a
/// person would, the default limit is exactly 10,000 members, and the fan-out
/// multiplexes 50 Subscribe streams (of different devices) per HTTP/2
/// connection where a real device opens one or two (default limit 8).
pub(crate) fn raise_limits(config: &mut Config) {
    config.key_packages.claims_per_minute = 1_000_000;
    config.groups.max_members = 100_000;
    config.limits.subscribe_streams_per_connection = 50;
}

/// Stops the server gracefully and drops its database. A server that does not
/// stop within a while is dropped instead, which aborts it.
pub(crate) async fn stop(server: TestHomeserver) {
    if tokio::time::timeout(STOP_TIMEOUT, server.stop())
        .await
        .is_err()
    {
        eprintln!("  the homeserver did not stop within {STOP_TIMEOUT:?}; aborted it");
    }
}

/// The name used in tables.
pub(crate) fn database_name(database: DatabaseChoice) -> &'static str {
    match database {
        DatabaseChoice::Sqlite => "SQLite",
        DatabaseChoice::Postgres => "PostgreSQL",
    }
}
