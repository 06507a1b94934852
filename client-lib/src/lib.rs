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
//! Groups live at a hub (the homeserver that created them), which orders
//! everything: [`Client::create_group`], [`Client::invite`], [`Client::remove`],
//! [`Client::leave`], [`Client::rotate`] and [`Client::send`] submit to it;
//! [`Client::receive`] and [`Client::listen`] apply what it delivers, in log
//! order, and keep each group's timeline: messages and the membership changes
//! its commits make ([`Listener::next_event`], [`Client::history`]), as
//! history unless [`Client::set_keeps_history`] turns it off. Every submission
//! is stored with its intent and idempotency key before it is sent, so a crash
//! is followed by a resend that the hub answers with the original result; a
//! commit that loses its epoch to another member's is rebuilt for the next; a
//! group whose local state is lost or diverged is rejoined by external commit.
//!
//! # Layout
//! - [`client`]: [`Client`], one file per use case (account and devices, key
//!   packages, groups, messages, receiving, durable submissions, rejoining); the
//!   thin layer that moves bytes between the MLS core, the state and the server.
//! - `mls`: the openmls core (signature keys, credentials, key packages, group
//!   configuration and metadata, commits, proposals, application messages, what
//!   incoming messages do to a group, the membership changes of a commit, the
//!   message envelope) with no network and no clock.
//! - [`key_package_stock`]: the server-side stock and the pure rule for when to
//!   replenish it.
//! - `state`: the SQLite file: schema migrations, settings, session, wipe, the
//!   group bookkeeping (groups, pending submissions, the timeline of messages
//!   and membership changes, held events, cursors), and the hand-written `OpenMlsProvider` (RustCrypto +
//!   `SqliteStorageProvider`).
//! - `call_tracing`: a span per gRPC call, its trace context sent along; a
//!   certificate refused when the channel reconnects, explained.
//! - `connection`: gRPC channels (TLS, or plain HTTP/2 to loopback only) and the
//!   bearer-token interceptor.
//! - `trust`: which server certificates are trusted (the system's trust store
//!   plus the CA files given to [`Client::with_ca_files`]), and a refused one
//!   explained in plain words ([`CertificateRefusal`]).
//! - `endpoints`: the addresses of one homeserver (its replicas), the one in
//!   use, and the jittered back-off before reconnecting to the next.
//! - [`server_url`]: parsing a homeserver URL and the loopback rule for `http://`.
//! - [`session`]: the stored session of this device.
//! - [`error`]: [`ClientError`], one line per failure.
//! - `fuzzing` (hidden): the fuzz target's entry point (delivery events applied
//!   to a fixture device), for `fuzz/` and the in-workspace smoke.
//!
//! **Architecture invariant:** the network layer (`connection`, `client`) never
//! builds or parses MLS structures itself; it calls `mls`. `mls` never does I/O
//! beyond the storage provider it is handed.
//!
//! **Architecture invariant:** an openmls operation and the client's own
//! bookkeeping about it commit in one SQLite transaction; a commit is merged only
//! after the hub accepted it; events are acknowledged only after the
//! transaction that applied them committed.

mod call_tracing;
pub mod client;
mod connection;
mod endpoints;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod key_package_stock;
mod mls;
pub mod server_url;
pub mod session;
mod state;
mod trust;

pub use client::{
    ClaimedKeyPackage, Client, CommitOutcome, ConnectionNotice, Device, Enrolment, FailPoint,
    GroupId, GroupRef, GroupSummary, Listener, LoggedOut, Member, MembershipChange,
    MembershipEvent, PublishOutcome, ReceiveReport, ReceivedMessage, RefusedSubmission,
    SentMessage, TimelineEvent, WhoAmI,
};
pub use conclave_core::mls::CipherSuite;
pub use connection::ConnectError;
pub use error::{ClientError, RpcError};
pub use key_package_stock::{KeyPackageStock, ReplenishPolicy};
pub use mls::{MembershipKind, MessageBody, MlsError};
pub use server_url::{ServerUrl, ServerUrlError};
pub use session::Session;
pub use state::{GroupStatus, STATE_FILE_NAME, StateError};
pub use trust::{CaFileError, CertificateRefusal};
