//! The homeserver's fuzz targets (`conclave_homeserver::fuzzing`), each over its
//! seed corpus, its kept crash inputs and deterministic mutations of them; and
//! each a cargo-fuzz target in `fuzz/`.

use conclave_homeserver::fuzzing::TARGETS;
use conclave_test_support::fuzz_smoke;
use std::path::Path;

#[test]
fn every_target_is_a_cargo_fuzz_target() {
    let targets = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/fuzz_targets");
    for (name, _) in TARGETS {
        let file = targets.join(format!("{name}.rs"));
        assert!(file.is_file(), "{} is missing", file.display());
    }
}

#[test]
fn client_request() {
    smoke("client_request");
}

#[test]
fn federation_request() {
    smoke("federation_request");
}

#[test]
fn key_package_upload() {
    smoke("key_package_upload");
}

#[test]
fn hub_handshake() {
    smoke("hub_handshake");
}

#[test]
fn follower_batch() {
    smoke("follower_batch");
}

#[test]
fn config() {
    smoke("config");
}

/// A test per target (so they run in parallel and fail apart), and none
/// forgotten: the name must be one of [`TARGETS`].
fn smoke(name: &str) {
    let (_, function) = TARGETS
        .iter()
        .find(|(target, _)| *target == name)
        .unwrap_or_else(|| panic!("no fuzz target {name}"));
    fuzz_smoke::run(name, *function);
}

#[test]
fn every_target_has_a_smoke_test() {
    let names: Vec<&str> = TARGETS.iter().map(|(name, _)| *name).collect();
    assert_eq!(
        names,
        [
            "client_request",
            "federation_request",
            "key_package_upload",
            "hub_handshake",
            "follower_batch",
            "config"
        ]
    );
}
