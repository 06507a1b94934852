//! cargo-fuzz target `config`: [`conclave_homeserver::fuzzing::config`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| conclave_homeserver::fuzzing::config(data));
