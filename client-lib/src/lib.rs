//! Conclave's client library: one device's durable MLS state and its conversation
//! with its homeserver, under a small async API ([`Client`]). The `conclave` CLI is
//! built on it.
//!
//! A device lives in a state directory holding one SQLite file: the client's own
//! tables plus openmls's storage, so a restart loses nothing. Register or login
//! enrols the device (its Ed25519 signature key bound to the credential identity
//! `name@domain/device_id` by the homeserver) and publishes key packages; others
//! claim those packages to add the device to groups.
//!
//! # Layout
//! - [`client`]: [`Client`], one file per use case (account and devices, key
//!   packages); the thin layer that moves bytes between the MLS core, the state
//!   and the server.
//! - `mls`: the openmls core (signature keys, credentials, building and checking
//!   key packages) with no network and no clock.
//! - [`key_package_stock`]: the server-side stock and the pure rule for when to
//!   replenish it.
//! - `state`: the SQLite file: schema migrations, settings, session, wipe, and the
//!   hand-written `OpenMlsProvider` (RustCrypto + `SqliteStorageProvider`).
//! - `connection`: gRPC channels (TLS, or plain HTTP/2 to loopback only) and the
//!   bearer-token interceptor.
//! - [`server_url`]: parsing a homeserver URL and the loopback rule for `http://`.
//! - [`session`]: the stored session of this device.
//! - [`error`]: [`ClientError`], one line per failure.
//!
//! **Architecture invariant:** the network layer (`connection`, `client`) never
//! builds or parses MLS structures itself; it calls `mls`. `mls` never does I/O
//! beyond the storage provider it is handed.

pub mod client;
mod connection;
pub mod error;
pub mod key_package_stock;
mod mls;
pub mod server_url;
pub mod session;
mod state;

pub use client::{ClaimedKeyPackage, Client, Device, Enrolment, PublishOutcome, WhoAmI};
pub use connection::ConnectError;
pub use error::{ClientError, RpcError};
pub use key_package_stock::{KeyPackageStock, ReplenishPolicy};
pub use mls::MlsError;
pub use server_url::{ServerUrl, ServerUrlError};
pub use session::Session;
pub use state::{STATE_FILE_NAME, StateError};
