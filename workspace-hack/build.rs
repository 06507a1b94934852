//! Empty: it exists so that the `[build-dependencies]` of `Cargo.toml` (the
//! features of crates compiled for build scripts and procedural macros) count.

fn main() {}
