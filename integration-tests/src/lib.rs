//! Conclave's multi-domain end-to-end tests. This library is empty: the tests
//! are one binary, `tests/it/`, which starts a homeserver per domain in this
//! process (each with a database of its own, federated over mutual TLS with a
//! development CA made at test time) and drives them with the real client
//! library, as users on different domains would.
//!
//! Run them with `cargo test -p conclave-integration-tests` (PostgreSQL must be
//! reachable at `CONCLAVE_TEST_POSTGRES_URL`, by default
//! `postgres://postgres@127.0.0.1:5432/postgres`; the SQLite variants need
//! nothing).
