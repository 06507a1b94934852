//! Compiles the .proto files with protox (pure Rust, so no system `protoc` is needed)
//! and generates prost messages and tonic clients and servers from the result. The
//! encoded descriptor set is kept for gRPC server reflection.

use prost::Message;
use std::path::PathBuf;

const PROTO_FILES: &[&str] = &[
    "proto/conclave/client/v1/account.proto",
    "proto/conclave/client/v1/key_package.proto",
    "proto/conclave/client/v1/group.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let file_descriptor_set = protox::compile(PROTO_FILES, ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("conclave_descriptor.bin"),
        file_descriptor_set.encode_to_vec(),
    )?;
    tonic_prost_build::configure().compile_fds(file_descriptor_set)?;
    Ok(())
}
