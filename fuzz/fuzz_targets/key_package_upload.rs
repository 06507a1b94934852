//! cargo-fuzz target `key_package_upload`: [`conclave_homeserver::fuzzing::key_package_upload`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| conclave_homeserver::fuzzing::key_package_upload(data));
