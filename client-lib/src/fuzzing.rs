//! Fuzzing entry point of the client library: what the hub delivers, applied
//! as `Client::receive` applies a page's events (`client::sync::apply_event`:
//! the group lookup, MLS decoding and processing, Welcomes, held events and the
//! bookkeeping), to a fixture device that is the only member of a group. Each
//! input is applied in a transaction that is rolled back, so every input meets
//! the same state.
//!
//! The cargo-fuzz target `fuzz/fuzz_targets/delivery_event.rs` wraps
//! [`delivery_event`]; the in-workspace smoke (`tests/it/fuzz_smoke.rs`) runs it over
//! `fuzz/corpus/delivery_event/` and `fuzz/regressions/delivery_event/` plus
//! deterministic mutations. Always compiled (no cargo feature), so the
//! workspace is built once.

use crate::client::{PageOutcome, apply_event};
use crate::error::ClientError;
use crate::mls;
use crate::state::groups::{self as stored, GroupRow};
use crate::state::{GroupStatus, State};
use conclave_core::ids::CredentialIdentity;
use conclave_proto::client::v1 as proto;
use prost::Message as _;
use std::cell::RefCell;

/// A fuzz target: its name and the function it runs on each input.
pub type Target = (&'static str, fn(&[u8]));

/// The names of the fuzz targets, as `fuzz/fuzz_targets/<name>.rs` and
/// `fuzz/corpus/<name>/` know them, with the function each one runs.
pub const TARGETS: &[Target] = &[("delivery_event", delivery_event)];

/// The fixture group's id: fixed, so seeds made by another instance of the
/// fixture (the seeds test) name the same group. openmls's keys cannot be
/// seeded, so no seed decrypts or verifies here; they reach MLS processing.
const GROUP_ID: &[u8] = b"conclave fuzzing group";

/// The fixture device.
const MEMBER: &str = "alice@localhost/00000000000000a1";

/// The group's log as the device has processed it.
const LAST_SEQ: u64 = 1;

struct Fixture {
    state: RefCell<State>,
    me: CredentialIdentity,
}

impl Fixture {
    fn new() -> Result<Fixture, ClientError> {
        let mut state = State::in_memory()?;
        let me: CredentialIdentity = MEMBER.parse().expect("a valid identity");
        let signer = mls::generate_signer()?;
        state.transaction(|provider, connection| {
            mls::create_group_with_id(
                provider,
                &signer,
                &me,
                "fuzzing",
                conclave_core::mls::CipherSuite::Classic,
                Some(GROUP_ID),
            )?;
            stored::put_group(
                connection,
                &GroupRow {
                    group_id: GROUP_ID.to_vec(),
                    name: "fuzzing".to_owned(),
                    status: GroupStatus::Active,
                    last_seq: LAST_SEQ,
                    leaving_epoch: None,
                    needs_rejoin: false,
                },
                0,
            )?;
            Ok::<_, ClientError>(())
        })?;
        Ok(Fixture {
            state: RefCell::new(state),
            me,
        })
    }

    /// Applies one event as a page of one, then forgets what it did.
    fn apply(&self, event: proto::DeliveryEvent) -> Result<(), ClientError> {
        self.state
            .borrow_mut()
            .rolled_back(|provider, connection| {
                apply_event(
                    provider,
                    connection,
                    &self.me,
                    event,
                    &mut PageOutcome::default(),
                )
            })?
    }
}

thread_local! {
    /// One per thread: the SQLite connection is not shared between threads, and
    /// a fuzzer runs on one.
    static FIXTURE: Fixture = Fixture::new().expect("the fuzzing fixture builds");
}

/// A `DeliveryEvent` as prost decodes it from a Fetch or Subscribe answer,
/// applied to the fixture device.
pub fn delivery_event(data: &[u8]) {
    let Ok(event) = proto::DeliveryEvent::decode(data) else {
        return;
    };
    FIXTURE.with(|fixture| {
        let _ = fixture.apply(event);
    });
}

#[cfg(test)]
mod seeds {
    //! The seed corpus of `delivery_event`, made by another instance of the
    //! fixture's device (same identity, same group id): a commit, a proposal,
    //! an application message and a Welcome. The test checks that each is
    //! applied without an error and leaves the fixture as it was; with
    //! `CONCLAVE_WRITE_FUZZ_SEEDS=1` it also writes them to
    //! `fuzz/corpus/delivery_event/` (`scripts/fuzz seeds`).

    use super::*;
    use crate::mls::CommitKind;
    use openmls::prelude::tls_codec::Serialize as _;
    use std::path::Path;

    fn group_event(seq: u64, message: Vec<u8>) -> proto::DeliveryEvent {
        let (sender_user_id, sender_device_id) = MEMBER.rsplit_once('/').unwrap();
        proto::DeliveryEvent {
            event: Some(proto::delivery_event::Event::GroupEvent(
                proto::GroupEvent {
                    group_id: GROUP_ID.to_vec(),
                    seq,
                    message,
                    sender_user_id: sender_user_id.to_owned(),
                    sender_device_id: sender_device_id.to_owned(),
                    server_time: None,
                    departure: None,
                },
            )),
        }
    }

    fn make_seeds() -> Vec<(&'static str, Vec<u8>)> {
        let mut state = State::in_memory().unwrap();
        let me: CredentialIdentity = MEMBER.parse().unwrap();
        let bob: CredentialIdentity = "bob@localhost/00000000000000b1".parse().unwrap();
        let signer = mls::generate_signer().unwrap();
        let bob_signer = mls::generate_signer().unwrap();
        state
            .transaction(|provider, _| {
                let mut group = mls::create_group_with_id(
                    provider,
                    &signer,
                    &me,
                    "fuzzing",
                    conclave_core::mls::CipherSuite::Classic,
                    Some(GROUP_ID),
                )?
                .group;
                let message = mls::encrypt(&mut group, provider, &signer, b"seed")?;
                let self_update =
                    mls::build_commit(&mut group, provider, &signer, CommitKind::SelfUpdate)?;
                mls::discard_own_commit(&mut group, provider)?;
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs();
                let batch = mls::build_key_packages(
                    provider,
                    &bob_signer,
                    &bob,
                    conclave_core::mls::CipherSuite::Classic,
                    1,
                    false,
                    3600,
                )?;
                let bob_package =
                    mls::verify_claimed_key_package(&batch.ordinary[0], &bob, now).unwrap();
                let add = mls::build_commit(
                    &mut group,
                    provider,
                    &signer,
                    CommitKind::Add(vec![bob_package.key_package]),
                )?;
                mls::merge_own_commit(&mut group, provider)?;
                let proposal = mls::leave_proposal(&mut group, provider, &signer)?;
                let welcome = proto::DeliveryEvent {
                    event: Some(proto::delivery_event::Event::InboxEvent(
                        proto::InboxEvent {
                            seq: 1,
                            server_time: None,
                            event: Some(proto::inbox_event::Event::Welcome(proto::WelcomeEvent {
                                group_id: b"another group".to_vec(),
                                welcome: add.welcome.unwrap(),
                                ratchet_tree: group
                                    .export_ratchet_tree()
                                    .tls_serialize_detached()
                                    .unwrap(),
                                commit_seq: 3,
                            })),
                        },
                    )),
                };
                Ok::<_, ClientError>(vec![
                    (
                        "application-message",
                        group_event(2, message).encode_to_vec(),
                    ),
                    (
                        "commit-self-update",
                        group_event(2, self_update.commit).encode_to_vec(),
                    ),
                    ("commit-add", group_event(2, add.commit).encode_to_vec()),
                    ("proposal-leave", group_event(3, proposal).encode_to_vec()),
                    ("welcome", welcome.encode_to_vec()),
                ])
            })
            .unwrap()
    }

    /// Each seed is applied without an error and changes nothing that stays:
    /// the fixture's group is where it was.
    #[test]
    fn seeds_apply_and_leave_the_fixture_as_it_was() {
        let fixture = Fixture::new().unwrap();
        let seeds = make_seeds();
        for (name, data) in &seeds {
            let event = proto::DeliveryEvent::decode(data.as_slice()).unwrap();
            fixture
                .apply(event)
                .unwrap_or_else(|error| panic!("{name}: {error}"));
            let state = fixture.state.borrow();
            let row = state
                .read(|_, connection| stored::group(connection, GROUP_ID))
                .unwrap()
                .unwrap();
            assert_eq!(row.last_seq, LAST_SEQ, "{name}");
            assert!(!row.needs_rejoin, "{name}");
        }
        if std::env::var_os("CONCLAVE_WRITE_FUZZ_SEEDS").is_some() {
            let folder =
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/delivery_event");
            if folder.exists() {
                std::fs::remove_dir_all(&folder).unwrap();
            }
            std::fs::create_dir_all(&folder).unwrap();
            for (name, data) in &seeds {
                std::fs::write(folder.join(name), data).unwrap();
            }
        }
    }
}
