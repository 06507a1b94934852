//! Conclave's gRPC APIs, generated at build time from the versioned `.proto` files in
//! `proto/` (which document every service, RPC and field).
//!
//! # Layout
//! - [`client::v1`]: `conclave.client.v1`, spoken between a device and its homeserver.
//! - [`FILE_DESCRIPTOR_SET`]: the encoded descriptors, for gRPC server reflection.

pub mod client {
    pub mod v1 {
        #![allow(unreachable_pub, clippy::all)]
        tonic::include_proto!("conclave.client.v1");
    }
}

/// Encoded `FileDescriptorSet` of every Conclave package (with the well-known types
/// they import), served by gRPC reflection so `grpcurl` works without `.proto` files.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/conclave_descriptor.bin"));
