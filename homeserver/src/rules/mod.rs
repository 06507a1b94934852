//! The homeserver's own rules, as plain functions: no async, no database, no clock,
//! no RNG. The service layer feeds them inputs and carries out their decisions.
//! (Rules that clients share, such as identifiers and KeyPackage checks, live in
//! `conclave-core`.)
//!
//! # Layout
//! - `account`: what a registration or login request must look like.
//! - `key_package_upload`: whether a batch of KeyPackages may be stored.
//! - `hub`: a hosted group's public MLS state and what the hub accepts into it.

pub(crate) mod account;
pub(crate) mod delivery;
pub(crate) mod federation;
pub(crate) mod follower_batch;
pub(crate) mod hub;
pub(crate) mod ids;
pub(crate) mod key_package_upload;
pub(crate) mod retention;
