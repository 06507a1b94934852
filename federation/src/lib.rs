//! Federation between Conclave homeservers: mutually authenticated gRPC
//! (`conclave.federation.v1`) over rustls, with the rules that decide which domain
//! a calling peer may act for.
//!
//! A peer is trusted for a domain only if its client certificate chains to one of
//! the configured trust roots (checked in the TLS handshake) and is valid for that
//! domain's DNS name (checked per request, against the domain the request names),
//! the domain is a configured peer, and the certificate is the pinned one if the
//! peer is pinned. In the other direction this homeserver accepts a peer's server
//! certificate only if it chains to the same roots, is valid for the peer's
//! domain, and matches the pin.
//!
//! The RPCs themselves are served by the homeserver (it owns the use cases); this
//! crate gives it the TLS configurations, the connection stream, the per-request
//! gate, and the client for calling peers.
//!
//! # Layout
//! - [`peers`]: pure: the peer registry from configuration, endpoints, certificate pins.
//! - [`identity`]: pure: does a client certificate speak for the domain a request names?
//! - [`tls`]: PEM loading and the rustls server and client configurations.
//! - [`reloadable`]: [`reloadable::ReloadableTls`], the material in use now,
//!   replaced when its files are renewed, for every new handshake.
//! - [`server`]: the TLS connection stream for tonic and the per-request [`server::PeerGate`]
//!   (identity, pin, per-peer rate limit, logged refusals).
//! - [`client`]: [`client::FederationClient`], one reused channel per peer, with
//!   deadlines and keepalive, and failures as [`client::CallError`].
//! - [`observer`]: [`observer::CallObserver`], told how each client call ended and
//!   which certificate each peer presented (for the homeserver's metrics).
//! - [`diagnosis`]: what the federation doctor needs: a handshake that reads a
//!   peer's chain without judging it, the chain judged on its own, and
//!   GetServerInfo over that connection; [`diagnosis::PROTOCOL_VERSION`].
//! - [`dev_certs`]: a development CA and per-domain certificates (rcgen).
//! - [`trace_context`]: W3C trace context on federation calls: injected into
//!   outgoing requests, and the parent of each served request's span.

pub mod client;
pub mod dev_certs;
pub mod diagnosis;
pub mod identity;
pub mod observer;
pub mod peers;
pub mod reloadable;
pub mod server;
#[cfg(test)]
mod test_tls;
pub mod tls;
pub mod trace_context;
