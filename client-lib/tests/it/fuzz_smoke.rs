//! The client library's fuzz target (`conclave_client::fuzzing`) over its seed
//! corpus, its kept crash inputs and deterministic mutations of them; and a
//! cargo-fuzz target in `fuzz/`.

use conclave_client::fuzzing::TARGETS;
use conclave_test_support::fuzz_smoke;
use std::path::Path;

#[test]
fn delivery_event() {
    let [(name, function)] = TARGETS else {
        panic!("one smoke test per target: add one for the new target");
    };
    assert_eq!(*name, "delivery_event");
    let target = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/fuzz_targets")
        .join(format!("{name}.rs"));
    assert!(target.is_file(), "{} is missing", target.display());
    fuzz_smoke::run(name, *function);
}
