//! cargo-fuzz target `client_request`: [`conclave_homeserver::fuzzing::client_request`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| conclave_homeserver::fuzzing::client_request(data));
