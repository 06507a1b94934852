//! Fuzzing entry points: one function per decoder of bytes that come from
//! outside (clients, peers, the operator's configuration). Each takes any bytes,
//! must never panic, and drives the code a real request reaches short of the
//! database: the prost decoding, the field parsing and the pure rules (`rules/`,
//! `conclave_core`'s key-package checks, the hub's MLS validation against a
//! fixture group), and the mapping of every refusal to its gRPC status.
//!
//! The cargo-fuzz targets in `fuzz/` are thin wrappers around these; the
//! in-workspace smoke (`tests/it/fuzz_smoke.rs`) runs them over the seed corpora
//! and the kept regression inputs in `fuzz/` plus deterministic mutations of them.
//! Always compiled (no cargo feature), so the workspace is built once.
//!
//! # Layout
//! - `fixture`: the hosted group every MLS input is judged against, loaded from
//!   `hub_group.bin` (made with the seed corpora; see `seeds`).
//! - `client_api`: `conclave.client.v1` requests ([`client_request`]), key-package
//!   uploads ([`key_package_upload`]) and the hub's handshake checks
//!   ([`hub_handshake`]).
//! - `federation_api`: `conclave.federation.v1` requests ([`federation_request`])
//!   and a follower's batch checks ([`follower_batch`]).
//! - `config_text`: configuration files ([`config`]).
//! - `seeds` (tests only): writes the seed corpora and the fixture.

mod client_api;
mod config_text;
mod federation_api;
mod fixture;
#[cfg(test)]
mod seeds;

pub use client_api::{client_request, hub_handshake, key_package_upload};
pub use config_text::config;
pub use federation_api::{federation_request, follower_batch};

/// A fuzz target: its name and the function it runs on each input.
pub type Target = (&'static str, fn(&[u8]));

/// The names of the fuzz targets, as `fuzz/fuzz_targets/<name>.rs` and
/// `fuzz/corpus/<name>/` know them, with the function each one runs.
pub const TARGETS: &[Target] = &[
    ("client_request", client_request),
    ("federation_request", federation_request),
    ("key_package_upload", key_package_upload),
    ("hub_handshake", hub_handshake),
    ("follower_batch", follower_batch),
    ("config", config),
];

/// The first byte of an input chooses among alternatives (which RPC, which
/// caller); the rest is the payload. An empty input chooses nothing.
fn split_selector(data: &[u8]) -> Option<(u8, &[u8])> {
    data.split_first().map(|(selector, rest)| (*selector, rest))
}
