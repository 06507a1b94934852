//! Conclave's gRPC APIs, generated at build time from the versioned `.proto` files in
//! `proto/` (which document every service, RPC and field; `tests/documented.rs`
//! keeps it so). `proto/conclave/client/v1/status.proto` is the one table of which
//! gRPC status code a homeserver answers for which meaning, for both APIs.
//!
//! # Layout
//! - [`client::v1`]: `conclave.client.v1`, spoken between a device and its homeserver.
//! - [`admin::v1`]: `conclave.admin.v1`, a domain's administrators and the
//!   web console with its homeserver (served on the client port).
//! - [`federation::v1`]: `conclave.federation.v1`, spoken between the homeservers of
//!   different domains over mutual TLS.
//! - `redacted`: `Debug` for the messages that carry a password or token,
//!   printing everything but the secret.
//! - [`FILE_DESCRIPTOR_SET`]: the encoded descriptors of the client API, for gRPC
//!   server reflection on the client port.
//! - [`FEDERATION_FILE_DESCRIPTOR_SET`]: the encoded descriptors of the
//!   federation API, for the method names its server counts in its metrics.

pub mod client {
    pub mod v1 {
        #![allow(unreachable_pub, clippy::all)]
        tonic::include_proto!("conclave.client.v1");
    }
}

pub mod admin {
    pub mod v1 {
        #![allow(unreachable_pub, clippy::all)]
        tonic::include_proto!("conclave.admin.v1");
    }

    /// The address of the person behind an in-process call of the admin API,
    /// as a request extension: the web console sets it to its browser's
    /// address, for the audit log. A remote gRPC caller cannot set an
    /// extension, so for it the homeserver uses the connection's address.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct CallerAddress(pub std::net::IpAddr);
}

pub mod codec;
mod redacted;

pub mod federation {
    pub mod v1 {
        #![allow(unreachable_pub, clippy::all)]
        tonic::include_proto!("conclave.federation.v1");
    }
}

/// Encoded `FileDescriptorSet` of the client and admin APIs, `conclave.client.v1`
/// and `conclave.admin.v1` (with the well-known types they import), served by
/// gRPC reflection on the client port so `grpcurl` works without `.proto` files. The federation API is left out: the
/// client port does not serve it.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/conclave_descriptor.bin"));

/// Encoded `FileDescriptorSet` of the federation API, `conclave.federation.v1`
/// (with what it imports). Not served by reflection; the homeserver reads the
/// names of the methods it serves from it, so that its metrics name only those.
pub const FEDERATION_FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(
    env!("OUT_DIR"),
    "/conclave_federation_descriptor.bin"
));
