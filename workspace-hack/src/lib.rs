//! No code: a dependency of `conclave-client` and `conclave-homeserver` that
//! gives the crates they share one feature set (see `Cargo.toml`), so that
//! building one of them leaves the other's dependencies built.
