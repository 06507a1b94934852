//! The homeserver's own rules, as plain functions: no async, no database, no clock,
//! no RNG. The service layer feeds them inputs and carries out their decisions.
//! (Rules that clients share, such as identifiers and KeyPackage checks, live in
//! `conclave-core`.)
//!
//! # Layout
//! - `account`: what a registration or login request must look like.
//! - `account_state`: an account's state (active, suspended, deactivated) and
//!   which administrator actions apply to it.
//! - `admin_overview`: the warnings of the admin overview.
//! - `admin_session`: when an admin session ends, and when a call renews it.
//! - `cipher_suites`: which MLS cipher suites this homeserver offers, and
//!   whether new groups must be post-quantum.
//! - `enrolment`: enrolment challenges and the proof of possession of the key a
//!   device enrols.
//! - `registration`: who may register (the policy) and whether a registration
//!   token can still be used.
//! - `key_package_upload`: whether a batch of KeyPackages may be stored.
//! - `key_package_stock`: a device's stock, and which packages were handed out.
//! - `key_package_claim`: where a claim is served (this directory, a peer, or
//!   nowhere).
//! - `credential_check`: which credential checks peers may ask.
//! - `departure`: departure notices (a device left its domain; the members
//!   commit its removal): their reason, one per device and group, who may
//!   announce one, what a follower accepts.
//! - `federation_doctor`: the federation doctor's judgements (certificate
//!   validity, names, clock skew, protocol version) and which checks a failure
//!   leaves impossible.
//! - `follower_batch`, `follower_mls`: what a follower accepts of a hub's batch,
//!   and the MLS checks it can make on each event without the group's state.
//! - `group_search`: an administrator's group search, the order groups are
//!   listed in, and how far a cursor is behind a log.
//! - `hub`: a hosted group's public MLS state and what the hub accepts into it.
//! - `limits`: how many entries each repeated field of a request may carry.
//! - `attempt_limits`: brute-force limits on Register and Login (a bucket per
//!   source address, a back-off per account and source after failed logins).
//! - `rate`: a rate with a burst (GCRA), for every per-key rate limit.
//! - `streams`: how many Subscribe streams a device and a connection may hold.

pub(crate) mod account;
pub(crate) mod account_state;
pub(crate) mod admin_overview;
pub(crate) mod admin_session;
pub(crate) mod attempt_limits;
pub(crate) mod cipher_suites;
pub(crate) mod credential_check;
pub(crate) mod delivery;
pub(crate) mod departure;
pub(crate) mod enrolment;
pub(crate) mod federation;
pub(crate) mod federation_doctor;
pub(crate) mod follower_batch;
pub(crate) mod follower_mls;
pub(crate) mod group_search;
pub(crate) mod hub;
pub(crate) mod ids;
pub(crate) mod key_package_claim;
pub(crate) mod key_package_stock;
pub(crate) mod key_package_upload;
pub(crate) mod limits;
pub(crate) mod rate;
pub(crate) mod registration;
pub(crate) mod retention;
pub(crate) mod streams;
