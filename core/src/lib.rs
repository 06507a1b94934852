//! Protocol rules that the homeserver and the client library must agree on, as plain
//! functions and types: no async, no network, no database, no clock (time is an
//! argument), no RNG.
//!
//! # Layout
//! - [`ids`]: identifier newtypes (`Username`, `Domain`, `UserId`, `DeviceId`) and the
//!   MLS credential identity `name@domain/device_id` that binds them together;
//!   the rule for names shown to people (display names): no controls,
//!   bidirectional controls or invisible characters, normalised to NFC; and
//!   `echo`, how an error message shows an input (cut at a fixed length).
//! - [`mls`]: the cipher suite Conclave speaks and the crypto provider used for
//!   verification.
//! - [`key_package`]: the checks every uploaded or claimed KeyPackage must pass.
//! - [`group_metadata`]: the group's name in its group context (extension
//!   `0xf0c1`), written by clients and read by them and the hub.
//! - [`enrolment`]: the transcript a device signs at enrolment to prove it holds
//!   the private key of the signature key it enrols.

pub mod enrolment;
pub mod group_metadata;
pub mod ids;
pub mod key_package;
pub mod mls;
