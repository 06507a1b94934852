//! TLS of this server's two gRPC listeners from PEM files that are read at
//! start and then re-read every `[tls] reload_interval_seconds`, so renewed
//! certificates, keys and trust roots (cert-manager rewriting a Kubernetes
//! Secret volume) take effect without a restart.
//!
//! # Layout
//! - `files`: the watched files of one listener, read together with a digest
//!   of their contents.
//! - `client_api`: the client API's server configuration, replaceable.
//! - `federation`: the federation material ([`ReloadableTls`]) as a reload
//!   target.
//! - `reload`: the background task that notices changed files and swaps in
//!   usable ones, keeping the old material when the new files are not.
//!
//! [`ReloadableTls`]: conclave_federation::reloadable::ReloadableTls

mod client_api;
mod federation;
mod files;
mod reload;

pub(crate) use client_api::ClientApiTls;
pub(crate) use federation::FederationTls;
pub(crate) use reload::{Watched, run};
