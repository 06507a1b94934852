//! End-to-end tests of the client library and the `conclave` CLI against a real
//! homeserver running in this process (`conclave-test-support`).

mod cli;
mod failover;
mod fuzz_smoke;
mod groups;
mod kept_intents;
mod library;
mod recovery;
mod support;
mod tls;
