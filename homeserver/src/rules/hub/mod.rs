//! The hub's rules for a group it hosts: its public MLS state (openmls's
//! `PublicGroup`) and what may change it. Pure code: no async, no database, no clock;
//! the only randomness is the seed openmls's crypto provider holds and never uses for
//! verification.
//!
//! The service layer, for each submission: locks the group's row, loads the state
//! with [`HubGroup::from_state`] (for commits, unless it kept that exact state in
//! memory, see [`reuse`]), asks for a decision ([`HubGroup::check_commit`] and
//! friends), does the database lookups the decision calls for (are the new leaves
//! registered devices, were the added key packages claimed), applies it
//! ([`HubGroup::apply_commit`]), saves [`HubGroup::to_state`], appends to the log and
//! commits. Nothing here changes the group unless the caller applies a decision.
//!
//! What the hub cannot check, because it holds no group secrets: membership tags of
//! PublicMessages (openmls's `PublicGroup` checks only that they are present),
//! confirmation tags, path secrets, the ExternalInit KEM output of external commits,
//! and anything inside PrivateMessages. A signed commit that is wrong in those parts
//! is accepted here and refused by the members; the signature still names its author.
//!
//! # Layout
//! - `error`: [`HubRejection`] and [`CorruptState`].
//! - `messages`: decoding untrusted MLSMessages, framing checks before cryptography.
//! - `storage`: the storage provider openmls writes the public state through.
//! - `state`: the group's public state as one blob, and back.
//! - `create`: a new group from its creator's GroupInfo and ratchet tree.
//! - `commit`: whether a commit may end the epoch ([`CommitDecision`]), and merging it.
//! - `commit_plan`: what an accepted commit changes besides the MLS state (members,
//!   Welcome recipients, follower domains), the group size and proposal limits.
//! - `leaves`: which leaves a staged commit adds, changes and removes, and Conclave's
//!   rules on them.
//! - `welcome` and `group_info`: the checks on what travels with a commit.
//! - `proposal`: proposals by reference.
//! - `reuse`: when a state kept in memory may stand for the stored one.
//! - `application`: application messages.

mod application;
mod commit;
mod commit_plan;
mod create;
mod error;
mod group_info;
mod leaves;
mod messages;
mod proposal;
mod reuse;
mod state;
mod storage;
#[cfg(test)]
pub(crate) mod tests;
mod welcome;

pub(crate) use application::{PastEpochWindow, check_application_message};
pub(crate) use commit::{CommitDecision, CommitSubmission, NewLeaf};
pub(crate) use commit_plan::{CommitPlan, check_group_size, check_proposal_room, plan_commit};
#[allow(
    unused_imports,
    reason = "the service reads `from_state` errors through Display; tests match on it"
)]
pub(crate) use error::CorruptState;
pub(crate) use error::HubRejection;
pub(crate) use reuse::{Reuse, StatePosition, reuse};
// The decoding a follower shares with the hub (`rules::follower_mls`).
pub(crate) use error::describe;
pub(crate) use messages::{content_type_name, decode_message, decoding_error, wire_format_name};

use conclave_core::ids::CredentialIdentity;
use conclave_core::mls::verification_crypto;
use openmls::prelude::PublicGroup;
use openmls::prelude::tls_codec::Serialize as _;
use openmls_rust_crypto::RustCrypto;

use messages::device_identity;
use storage::GroupStorage;

/// One group hosted here: its public state as openmls keeps it, and the newest
/// GroupInfo for devices that join by external commit.
pub(crate) struct HubGroup {
    public_group: PublicGroup,
    /// Where openmls writes `public_group` as it changes; [`HubGroup::to_state`]
    /// serialises all of it, so the two must only change together.
    storage: GroupStorage,
    /// Verification only (signatures and hashes).
    crypto: RustCrypto,
    /// The newest GroupInfo MLSMessage, exactly as its signer submitted it.
    group_info: Vec<u8>,
}

/// A member of the group: one device in one leaf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MemberLeaf {
    pub(crate) leaf_index: u32,
    pub(crate) identity: CredentialIdentity,
    /// The leaf's signature public key (raw Ed25519 key bytes).
    pub(crate) signature_key: Vec<u8>,
}

impl HubGroup {
    fn from_parts(public_group: PublicGroup, storage: GroupStorage, group_info: Vec<u8>) -> Self {
        HubGroup {
            public_group,
            storage,
            crypto: verification_crypto(),
            group_info,
        }
    }

    /// The MLS group id.
    pub(crate) fn group_id(&self) -> Vec<u8> {
        self.public_group.group_id().to_vec()
    }

    /// The current epoch.
    pub(crate) fn epoch(&self) -> u64 {
        self.public_group.group_context().epoch().as_u64()
    }

    /// Every member device, by leaf index. Who receives what comes from here.
    pub(crate) fn members(&self) -> Vec<MemberLeaf> {
        self.public_group
            .members()
            .filter_map(|member| {
                Some(MemberLeaf {
                    leaf_index: member.index.u32(),
                    // Never `None`: creation and every accepted commit check that each
                    // leaf names a device, and `from_state` checks again.
                    identity: device_identity(&member.credential).ok()?,
                    signature_key: member.signature_key,
                })
            })
            .collect()
    }

    /// How many member devices the tree holds (its non-blank leaves).
    pub(crate) fn member_count(&self) -> u64 {
        self.public_group.treesync().full_leaves().count() as u64
    }

    /// The group's cipher suite, as its RFC 9420 number.
    pub(crate) fn cipher_suite(&self) -> u16 {
        self.public_group.group_context().ciphersuite().into()
    }

    /// The group's name from its group context (Conclave's metadata extension,
    /// `0xf0c1`); `None` if the extension is missing or unreadable (a group
    /// made by another client).
    pub(crate) fn name(&self) -> Option<String> {
        conclave_core::group_metadata::GroupMetadata::in_group_context(
            self.public_group.group_context(),
        )
        .map(|metadata| metadata.name)
    }

    /// The TLS-serialised ratchet tree of the current epoch (RFC 9420 §12.4.3.3), for
    /// Welcome recipients and external joiners.
    pub(crate) fn ratchet_tree(&self) -> Vec<u8> {
        self.public_group
            .export_ratchet_tree()
            .tls_serialize_detached()
            // The tree was decoded from, or built by, TLS messages of bounded size, so
            // it always fits the encoding's length prefixes.
            .expect("a ratchet tree always serialises")
    }

    /// The newest GroupInfo MLSMessage: the creator's, or the one submitted with the
    /// last accepted commit.
    pub(crate) fn group_info(&self) -> Vec<u8> {
        self.group_info.clone()
    }

    /// The device in a leaf, or `None` for a blank or out-of-range leaf.
    fn member_identity(
        &self,
        leaf_index: openmls::prelude::LeafNodeIndex,
    ) -> Option<CredentialIdentity> {
        let leaf = self.public_group.leaf(leaf_index)?;
        device_identity(leaf.credential()).ok()
    }
}
