//! cargo-fuzz target `delivery_event`: [`conclave_client::fuzzing::delivery_event`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| conclave_client::fuzzing::delivery_event(data));
