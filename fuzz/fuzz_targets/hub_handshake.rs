//! cargo-fuzz target `hub_handshake`: [`conclave_homeserver::fuzzing::hub_handshake`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| conclave_homeserver::fuzzing::hub_handshake(data));
