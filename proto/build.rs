//! Compiles the .proto files with protox (pure Rust, so no system `protoc` is needed)
//! and generates prost messages and tonic clients and servers from the result. The
//! encoded descriptor set of the client API is kept for gRPC server reflection, and
//! that of the federation API for the names its metrics may carry.

use prost::Message;
use std::path::PathBuf;

/// The client API, served (and described by reflection) on the client port.
const CLIENT_PROTO_FILES: &[&str] = &[
    "proto/conclave/client/v1/account.proto",
    "proto/conclave/client/v1/key_package.proto",
    "proto/conclave/client/v1/group.proto",
    "proto/conclave/client/v1/status.proto",
];

/// The admin API, served on the client port too (when `[admin] enabled`), and
/// called in-process by the web console.
const ADMIN_PROTO_FILES: &[&str] = &[
    "proto/conclave/admin/v1/session.proto",
    "proto/conclave/admin/v1/users.proto",
    "proto/conclave/admin/v1/registration_tokens.proto",
    "proto/conclave/admin/v1/groups.proto",
    "proto/conclave/admin/v1/federation.proto",
    "proto/conclave/admin/v1/audit.proto",
];

/// The federation API, served on the federation port to other homeservers only.
const FEDERATION_PROTO_FILES: &[&str] = &["proto/conclave/federation/v1/federation.proto"];

/// Messages whose generated `Debug` would print a secret.
const REDACTED_MESSAGES: &[&str] = &[
    ".conclave.client.v1.RegisterRequest",
    ".conclave.client.v1.LoginRequest",
    ".conclave.client.v1.Session",
    ".conclave.admin.v1.AdminLoginRequest",
    ".conclave.admin.v1.AdminSession",
    ".conclave.admin.v1.CreateRegistrationTokenResponse",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    // The client port serves both the client and the admin API, and its
    // reflection describes both.
    let client_port_files = CLIENT_PROTO_FILES.iter().chain(ADMIN_PROTO_FILES);
    let client_descriptors = protox::compile(client_port_files, ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("conclave_descriptor.bin"),
        client_descriptors.encode_to_vec(),
    )?;
    let federation_descriptors = protox::compile(FEDERATION_PROTO_FILES, ["proto"])?;
    std::fs::write(
        out_dir.join("conclave_federation_descriptor.bin"),
        federation_descriptors.encode_to_vec(),
    )?;
    let all_files = CLIENT_PROTO_FILES
        .iter()
        .chain(ADMIN_PROTO_FILES)
        .chain(FEDERATION_PROTO_FILES);
    let all_descriptors = protox::compile(all_files, ["proto"])?;
    // Messages that carry a password or token get a `Debug` of their own that
    // leaves the secret out (src/redacted.rs), so none can reach a log.
    // Every service encodes with src/codec.rs (smaller buffers per call).
    tonic_prost_build::configure()
        .codec_path("crate::codec::ConclaveCodec")
        .skip_debug(REDACTED_MESSAGES.iter().copied())
        .compile_fds(all_descriptors)?;
    Ok(())
}
