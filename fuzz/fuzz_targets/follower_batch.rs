//! cargo-fuzz target `follower_batch`: [`conclave_homeserver::fuzzing::follower_batch`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| conclave_homeserver::fuzzing::follower_batch(data));
