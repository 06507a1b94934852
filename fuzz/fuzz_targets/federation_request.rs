//! cargo-fuzz target `federation_request`: [`conclave_homeserver::fuzzing::federation_request`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| conclave_homeserver::fuzzing::federation_request(data));
