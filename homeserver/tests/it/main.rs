//! The homeserver's integration tests: the real server started in-process on
//! 127.0.0.1 ports chosen by the OS, driven through the generated gRPC clients,
//! each behaviour on SQLite and on PostgreSQL.
//!
//! # Layout
//! - [`harness`]: servers, clients, registered devices, KeyPackage building.
//! - [`accounts`]: register, login, whoami, devices, logout.
//! - [`admin_api`]: `conclave.admin.v1` on the client port: admin sessions,
//!   the overview, the audit log.
//! - [`admin_cli`]: the binary's `admin ...` commands: the admin role and the
//!   audit log, as an operator runs them.
//! - [`admin_console`]: the admin web console over the real admin API: login,
//!   the overview, the audit of the login; not mounted when the API is off.
//! - [`registration`]: the open, closed and token registration policies.
//! - [`admin_groups_api`]: GroupAdminService and RegistrationTokenAdminService
//!   through the client port, as an administrator.
//! - [`admin_tokens`]: `admin tokens create|list|revoke` as a process; a
//!   revoked token registers no one.
//! - [`account_input`]: malformed account requests and bad credentials.
//! - [`attempt_limits`]: brute-force limits on Register and Login, per address
//!   and per account and address.
//! - [`cluster_limits`]: two replicas on one database and one Redis meet one
//!   attempt, back-off and claim budget.
//! - [`possession`]: proof of possession of the enrolled key: challenges,
//!   forged, stale and misdirected proofs.
//! - [`key_package_input`]: refused uploads and claims.
//! - [`key_packages`]: the directory: stock, claims, last resort, rate limit.
//! - [`concurrency`]: racing claims, uploads, logins and registrations.
//! - [`federation`]: homeservers of several domains: forwarded claims, credential
//!   checks, and the refusals of mutual TLS.
//! - [`admin_federation`]: `admin federation ...` as a process: peers, the
//!   doctor, the own certificate, exit codes and `--json`.
//! - [`cluster`]: replicas of one domain on one database and Redis: wake-ups
//!   across replicas, through a Redis outage and after it.
//! - [`server`]: health, reflection, HTTP probes, restart, TLS.
//! - [`groups_harness`]: group clients holding real openmls groups.
//! - [`groups`]: the hub's happy paths: invite, join, messages, acks, removal, rejoin.
//! - [`commit_races`]: one commit per epoch, for a pair and for many at once;
//!   concurrent retries of one submission.
//! - [`message_batches`]: many messages to one group at once (group commit):
//!   each its own seq or refusal, retries, no message poisoning another.
//! - [`group_input`]: refused submissions, idempotent retries, the size limit.
//! - [`hub_state`]: the hub's in-memory group state: another replica's
//!   commits and proposals are seen, refused commits leave it unchanged.
//! - [`delivery`]: Subscribe's replay and live push, streams per device, removal,
//!   offline catch-up.
//! - [`crash`]: the binary killed under load, restarted, retries landing once.
//! - [`command_line`]: the binary's completions and manual pages, one-shot
//!   commands' quiet output, unknown variables and unreadable files refused
//!   in one line, a port in use reported once.
//! - [`check_config`]: the binary's `check-config`: what it reports, that it
//!   binds and creates nothing, that a start refuses what it refuses, and
//!   `--connect`'s schema state, Redis PING and exit codes.
//! - [`admin_suspension`]: a suspended account's calls, logins and stream,
//!   and a revoked device, with the operator's command acting.
//! - [`admin_users_api`]: UserAdminService through the client port: the
//!   actions, their refusals, streams and admin sessions ended.
//! - [`admin_users_cli`]: the binary's `admin users|devices|key-stock`, as
//!   JSON lines, with their refusals.
//! - [`migrate`]: the binary's `migrate`, concurrent runs, and the refusal of a
//!   database migrated by a newer release.
//! - [`request_limits`]: repeated fields over their limits, and long input
//!   echoed into short error messages.
//! - [`connection_limits`]: Subscribe streams per device and per connection,
//!   the call deadline, and the listeners' HTTP/2 settings.
//! - [`shutdown`]: graceful shutdown: streams told to reconnect, calls in
//!   progress finished, `/readyz` 503, the deadline.
//! - [`metrics`]: `/metrics` on the hub's and the listeners' events: commit
//!   conflicts, accepted messages, calls by status code, open streams,
//!   delivery lag, the federation listener, metrics off.
//! - [`fuzz_smoke`]: every fuzz target over its corpus, its kept crash inputs
//!   and mutations of them.
//! - [`operator_metrics`]: rejections per limit, devices low on key packages,
//!   the database pool, Redis and process metrics, the `/metrics` formats.
//! - [`prometheus`]: a real Prometheus scraping a homeserver, and `promtool
//!   check metrics` on its exposition.

/// Turns each `async fn name(database: DatabaseChoice)` into a module `name` with
/// the tests `sqlite` and `postgres`, each under the harness's timeout (see
/// `conclave_test_support::on_both_databases`).
macro_rules! on_both_databases {
    ($($names:tt)*) => {
        conclave_test_support::on_both_databases!(within crate::harness::within_timeout; $($names)*);
    };
}

mod account_input;
mod accounts;
mod admin_api;
mod admin_cli;
mod admin_console;
mod admin_federation;
mod admin_groups_api;
mod admin_suspension;
mod admin_tokens;
mod admin_users_api;
mod admin_users_cli;
mod attempt_limits;
mod check_config;
mod cluster;
mod cluster_limits;
mod command_line;
mod commit_races;
mod concurrency;
mod connection_limits;
mod crash;
mod delivery;
mod federation;
mod fuzz_smoke;
mod group_input;
mod groups;
mod groups_harness;
mod harness;
mod hub_state;
mod key_package_input;
mod key_packages;
mod message_batches;
mod metrics;
mod migrate;
mod operator_metrics;
mod possession;
mod prometheus;
mod registration;
mod request_limits;
mod server;
mod shutdown;
