//! The hosted group every fuzzed MLS input is judged against: three members
//! (alice, bob and carol `@localhost`) at epoch 1, as `seeds` made it together
//! with the seed corpora, so the seeds' commits and proposals verify against it
//! and a mutation can get past the signature to the Welcome and GroupInfo
//! checks. Kept as a file because openmls's key generation cannot be seeded:
//! a group made afresh would verify none of the seeds.

use crate::rules::enrolment::{CHALLENGE_KEY_LENGTH, ChallengeKey};
use crate::rules::hub::{HubGroup, MemberLeaf};
use conclave_core::ids::{CredentialIdentity, Domain};

/// `seeds` writes it: the time it was made (milliseconds since the Unix epoch,
/// 8 bytes little-endian), then the group's state as the hub stores it.
const HUB_GROUP: &[u8] = include_bytes!("hub_group.bin");

/// The domain of the fixture's members: the hub's own.
pub(super) const OWN_DOMAIN: &str = "localhost";

pub(super) struct Fixture {
    /// The group as this hub stores it, to load a copy that may change
    /// (the file may hold an older format, converted once here).
    state: Vec<u8>,
    /// The group, for checks that change nothing.
    pub(super) hub: HubGroup,
    /// Its members, in leaf order.
    pub(super) members: Vec<MemberLeaf>,
    /// The clock every time-dependent check reads: a minute after the fixture
    /// and the seeds were made, so the seeds' key packages are current and a
    /// run's outcome never depends on the day it runs.
    pub(super) now_ms: i64,
    pub(super) own_domain: Domain,
    /// The key of the enrolment challenges the fuzzed Register and Login check
    /// (the seeds' challenges are made with it).
    pub(super) challenge_key: ChallengeKey,
}

/// The bytes of [`Fixture::challenge_key`]: fixed, so seeds stay valid.
pub(super) const CHALLENGE_KEY: [u8; CHALLENGE_KEY_LENGTH] = [0x5a; CHALLENGE_KEY_LENGTH];

impl Fixture {
    fn load() -> Fixture {
        Fixture::from_bytes(HUB_GROUP)
    }

    /// A fixture from bytes in `hub_group.bin`'s format.
    pub(super) fn from_bytes(bytes: &'static [u8]) -> Fixture {
        let (time, state) = bytes.split_at(8);
        let made_at_ms = i64::from_le_bytes(time.try_into().expect("8 bytes"));
        // The file is part of the source: if it does not load (an openmls
        // upgrade changed the state's format), every fuzz run fails here until
        // `seeds` makes it again.
        let hub = HubGroup::from_state(state)
            .unwrap_or_else(|error| panic!("fuzzing/hub_group.bin does not load: {error}"));
        Fixture {
            state: hub.to_state(),
            members: hub.members(),
            hub,
            now_ms: made_at_ms + 60_000,
            own_domain: OWN_DOMAIN.parse().expect("a valid domain"),
            challenge_key: ChallengeKey::from_bytes(&CHALLENGE_KEY).expect("a key's length"),
        }
    }

    /// A copy of the group that a decision may be applied to.
    pub(super) fn fresh_copy(&self) -> HubGroup {
        HubGroup::from_state(&self.state).expect("the fixture loaded once already")
    }

    /// The member an input's selector byte names as the calling device.
    pub(super) fn caller(&self, selector: u8) -> &CredentialIdentity {
        &self.members[usize::from(selector) % self.members.len()].identity
    }

    /// Whether `group_id` names the fixture group (any other is unknown to the
    /// hub, as a group without a row is).
    pub(super) fn is_the_group(&self, group_id: &[u8]) -> bool {
        self.hub.group_id() == group_id
    }
}

thread_local! {
    /// One per thread: openmls's public group is not shared between threads,
    /// and a fuzzer runs on one.
    static FIXTURE: Fixture = Fixture::load();
}

/// Runs `check` against the fixture.
pub(super) fn with_fixture<T>(check: impl FnOnce(&Fixture) -> T) -> T {
    FIXTURE.with(check)
}
