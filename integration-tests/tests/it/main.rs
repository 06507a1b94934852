//! Multi-domain end-to-end tests: a homeserver per domain (a.example,
//! b.example, c.example) in this process, each with a database of its own and a
//! federation listener on a loopback address of its own, peered with the others
//! over mutual TLS; users on each domain drive them through the real client
//! library. Every test runs on SQLite and on PostgreSQL. The cluster tests
//! (`cluster_*`) run one domain as several processes of the real
//! `conclave-homeserver` binary instead, on PostgreSQL (and Redis).
//!
//! # Layout
//! - [`harness`]: users with client state of their own on a
//!   `conclave_test_support::TestNetwork` (the development PKI and the
//!   homeservers, which stop and restart one domain on its database and
//!   addresses), and the checks of raw federation calls.
//! - [`admin_console`]: the admin console in a headless Chromium on a
//!   two-domain network: login, user search, a device revoked (its CLI
//!   refused), a registration token created and revoked, the group inspector
//!   after a real chat, the federation doctor against a healthy and a
//!   misnamed peer, the overview at 375 px, logout; a screenshot per page.
//! - [`browser_harness`]: the headless-Chromium harness the admin console's
//!   tests use, on a tiny axum page: forms, in-place swaps, cookies, the
//!   phone's viewport, screenshots, and a wait that times out.
//! - [`chart_deployment`]: the Helm chart rendered with values of its CI
//!   matrix and its two-domain example; the migration hook Job,
//!   `check-config` init containers and two replicas per domain run as
//!   processes of the real binary exactly as rendered
//!   (`conclave_test_support::rendered_pod`); a CLI user's message crosses
//!   the replicas through Redis, and the domains over mutual TLS.
//! - [`cluster_smoke`]: replicas of one domain, each a process of the real
//!   binary (`conclave_test_support::TestCluster`), sharing accounts; a
//!   replica killed and restarted.
//! - [`cluster_commit_races`]: devices on two replicas committing in the same
//!   epoch, 500 rounds.
//! - [`cluster_crash`]: a replica killed while clients on both send; clients
//!   reach the survivor through a `TestBalancer`.
//! - [`cluster_limits`]: login failures spread over three replicas meet one
//!   shared back-off; without Redis each replica counts its own.
//! - [`cluster_outbox`]: the replica sending a federated domain's outbox
//!   killed; the other takes over, the peer receives everything once.
//! - [`cluster_wakeups`]: a message streamed from another replica than the
//!   one it was sent through; delivery through a Redis outage and instant
//!   again after it.
//! - [`cluster_restart_chat`]: the homeserver's only process stopped and
//!   started again during a CLI chat; lines typed meanwhile wait and go out in
//!   order, the listener reconnects and shows each message once.
//! - [`cluster_rolling_restart`]: every replica stopped (SIGTERM) and
//!   restarted in turn while three users on different replicas chat; clients
//!   know every replica's address and fail over.
//! - [`container_image`]: the Dockerfile's runtime stage built with podman
//!   from the test binaries, run read-only as uid:gid 10001:10001 on
//!   PostgreSQL and Redis until a CLI user registers, stopped with SIGTERM;
//!   hadolint on the Dockerfiles.
//! - [`log_hygiene`]: the README's walkthrough over two domains with the
//!   real binaries at trace level; no password, token, key or message text
//!   in any log line, and the homeservers' lines are JSON.
//! - [`helm_chart`]: the Helm chart rendered offline with its CI values
//!   matrix: lint, Kubernetes' and the CRDs' schemas, and the rendered
//!   objects (security, probes, ports, selectors, secrets, the hook Job).
//! - [`observability`]: the alert rules pass promtool's check and unit
//!   tests; rules and dashboard query only metrics a homeserver exports.
//! - [`tls_reload`]: renewed certificates, keys and trust roots of a process
//!   of the real binary, in Kubernetes' Secret volume layout, taken without a
//!   restart; broken renewals kept out, counted and logged.
//! - [`federation_smoke`]: claiming key packages of users of other domains, a
//!   domain's restart.
//! - [`federation_metrics`]: a hub's and a follower's federation metrics
//!   (calls, peer up, outbox backlog, certificate expiry) through the
//!   follower's outage.
//! - [`departures`]: a member's device logged out (deleted by its homeserver)
//!   is removed by the remaining members' clients on their own, after the
//!   hub's departure notice; across domains too, with the hub down when the
//!   device goes.
//! - [`federated_groups`]: one group with members on three domains:
//!   invitations, ordered messages, removal, rotation.
//! - [`membership`]: the membership changes a member's client shows, across
//!   three domains: two join in one commit, one leaves, one is removed, each
//!   with who did it, then a message with its sender's clock.
//! - [`rejoin`]: devices of a follower domain rejoining by external commit.
//! - [`commit_races`]: members on different domains committing in the same
//!   epoch.
//! - [`outages`]: a follower down while the group is busy; the hub restarting
//!   mid-burst.
//! - [`outbox_leases`]: two replicas of a domain on one PostgreSQL database:
//!   one sends its outbox to a peer, another takes over when it stops or is
//!   killed.
//! - [`federation_refusals`]: federation calls that act for another domain, or
//!   come without a trusted certificate, refused with nothing stored.
//! - [`rogue_hub`]: a peer delivering groups it made up (garbage, Welcomes for
//!   key packages it never claimed, groups another domain hosts), refused with
//!   nothing stored.
//! - [`admin_groups`]: the group inspector (`conclave-homeserver admin groups`)
//!   after a real chat over two domains: the hub's view and a follower's copy.
//! - [`admin_users`]: an account's groups (`conclave-homeserver admin users
//!   show`), named where hosted, and left when a device is revoked.
//! - [`conformance`]: a foreign client written from `docs/protocol.md` and
//!   the `.proto` files alone ([`conformance_client`], on openmls, none of the
//!   client library's code) registers, publishes key packages, joins, chats
//!   with client-library users, commits and is removed; every documented
//!   rejection it provokes must match the specification's error table.
//! - [`traces`]: one send from the `conclave` CLI is one trace across both
//!   domains' homeserver processes, down to the recipient's stream, exported
//!   over OTLP; JSON logs carry its ids.

/// Turns each `async fn name(database: DatabaseChoice)` into a module `name` with
/// the tests `sqlite` and `postgres`, each under the harness's timeout;
/// attributes before a name go on both (see
/// `conclave_test_support::on_both_databases`).
macro_rules! on_both_databases {
    ($($names:tt)*) => {
        conclave_test_support::on_both_databases!(within crate::harness::within_timeout; $($names)*);
    };
}

mod admin_console;
mod admin_groups;
mod admin_users;
mod browser_harness;
mod chart_deployment;
mod cluster_commit_races;
mod cluster_crash;
mod cluster_limits;
mod cluster_outbox;
mod cluster_restart_chat;
mod cluster_rolling_restart;
mod cluster_smoke;
mod cluster_wakeups;
mod commit_races;
mod conformance;
mod conformance_client;
mod container_image;
mod departures;
mod federated_groups;
mod federation_metrics;
mod federation_refusals;
mod federation_smoke;
mod harness;
mod helm_chart;
mod log_hygiene;
mod membership;
mod observability;
mod outages;
mod outbox_leases;
mod pq_groups;
mod rejoin;
mod rogue_hub;
mod tls_reload;
mod traces;
