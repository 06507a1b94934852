//! The storage openmls writes one group's public state through, held in memory.
//!
//! openmls's own `MemoryStorage` would do, but it unwraps when a stored value does not
//! decode, and these values come back from the database: a damaged row must be an
//! error, not a panic. So this is a small `PublicStorageProvider` of our own, with one
//! slot per part of the state. Values are kept in postcard, a compact binary form of
//! serde: openmls's storage traits hand over serde values, and JSON (what openmls's
//! own providers write) spells every byte of the tree as a decimal number, several
//! times the size and the time to write (BENCHMARKS.md, "a compact state").

use std::sync::{Mutex, MutexGuard};

use openmls_traits::public_storage::PublicStorageProvider;
use openmls_traits::storage::{CURRENT_VERSION, traits};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// One group's public state, each part in postcard. The group id openmls passes
/// to every method is not stored: one `GroupStorage` holds one group.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct StoredParts {
    pub(super) tree: Option<Vec<u8>>,
    pub(super) group_context: Option<Vec<u8>>,
    pub(super) interim_transcript_hash: Option<Vec<u8>>,
    pub(super) confirmation_tag: Option<Vec<u8>>,
    /// The proposal store, in the order proposals arrived: (ProposalRef, QueuedProposal).
    pub(super) proposals: Vec<(Vec<u8>, Vec<u8>)>,
}

/// The storage provider: [`StoredParts`] behind a lock, because openmls writes
/// through `&self`.
#[derive(Debug, Default)]
pub(super) struct GroupStorage(Mutex<StoredParts>);

/// A part of the state that does not encode or decode.
#[derive(Debug, thiserror::Error)]
#[error("the {part} does not {direction}: {reason}")]
pub(super) struct GroupStorageError {
    part: &'static str,
    direction: &'static str,
    reason: String,
}

impl GroupStorage {
    pub(super) fn new(parts: StoredParts) -> GroupStorage {
        GroupStorage(Mutex::new(parts))
    }

    /// Everything stored, for saving; the lock is held while the guard lives.
    pub(super) fn parts(&self) -> MutexGuard<'_, StoredParts> {
        self.lock()
    }

    fn lock(&self) -> MutexGuard<'_, StoredParts> {
        // A panic while the lock was held leaves the last complete write (every write
        // replaces a whole part), so the data is still usable.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

pub(super) fn encode(
    part: &'static str,
    value: &impl Serialize,
) -> Result<Vec<u8>, GroupStorageError> {
    postcard::to_stdvec(value).map_err(|error| GroupStorageError {
        part,
        direction: "encode",
        reason: error.to_string(),
    })
}

fn decode<T: DeserializeOwned>(part: &'static str, bytes: &[u8]) -> Result<T, GroupStorageError> {
    let refused = |reason: String| GroupStorageError {
        part,
        direction: "decode",
        reason,
    };
    // postcard reads a value's prefix: what follows it means a damaged part.
    let (value, rest) =
        postcard::take_from_bytes(bytes).map_err(|error| refused(error.to_string()))?;
    if !rest.is_empty() {
        return Err(refused(format!("{} bytes follow the value", rest.len())));
    }
    Ok(value)
}

fn decode_slot<T: DeserializeOwned>(
    part: &'static str,
    slot: &Option<Vec<u8>>,
) -> Result<Option<T>, GroupStorageError> {
    slot.as_deref().map(|bytes| decode(part, bytes)).transpose()
}

pub(super) const TREE: &str = "ratchet tree";
pub(super) const CONTEXT: &str = "group context";
pub(super) const INTERIM: &str = "interim transcript hash";
pub(super) const CONFIRMATION: &str = "confirmation tag";
pub(super) const PROPOSAL: &str = "queued proposal";
pub(super) const PROPOSAL_REF: &str = "proposal reference";

impl PublicStorageProvider<CURRENT_VERSION> for GroupStorage {
    type PublicError = GroupStorageError;

    fn write_tree<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        TreeSync: traits::TreeSync<CURRENT_VERSION>,
    >(
        &self,
        _group_id: &GroupId,
        tree: &TreeSync,
    ) -> Result<(), GroupStorageError> {
        self.lock().tree = Some(encode(TREE, tree)?);
        Ok(())
    }

    fn write_interim_transcript_hash<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        InterimTranscriptHash: traits::InterimTranscriptHash<CURRENT_VERSION>,
    >(
        &self,
        _group_id: &GroupId,
        interim_transcript_hash: &InterimTranscriptHash,
    ) -> Result<(), GroupStorageError> {
        self.lock().interim_transcript_hash = Some(encode(INTERIM, interim_transcript_hash)?);
        Ok(())
    }

    fn write_context<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        GroupContext: traits::GroupContext<CURRENT_VERSION>,
    >(
        &self,
        _group_id: &GroupId,
        group_context: &GroupContext,
    ) -> Result<(), GroupStorageError> {
        self.lock().group_context = Some(encode(CONTEXT, group_context)?);
        Ok(())
    }

    fn write_confirmation_tag<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        ConfirmationTag: traits::ConfirmationTag<CURRENT_VERSION>,
    >(
        &self,
        _group_id: &GroupId,
        confirmation_tag: &ConfirmationTag,
    ) -> Result<(), GroupStorageError> {
        self.lock().confirmation_tag = Some(encode(CONFIRMATION, confirmation_tag)?);
        Ok(())
    }

    fn queue_proposal<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        ProposalRef: traits::ProposalRef<CURRENT_VERSION>,
        QueuedProposal: traits::QueuedProposal<CURRENT_VERSION>,
    >(
        &self,
        _group_id: &GroupId,
        proposal_ref: &ProposalRef,
        proposal: &QueuedProposal,
    ) -> Result<(), GroupStorageError> {
        let proposal_ref = encode(PROPOSAL_REF, proposal_ref)?;
        let proposal = encode(PROPOSAL, proposal)?;
        let mut parts = self.lock();
        // The same proposal twice is kept once, where it first arrived.
        match parts
            .proposals
            .iter_mut()
            .find(|(stored, _)| *stored == proposal_ref)
        {
            Some(entry) => entry.1 = proposal,
            None => parts.proposals.push((proposal_ref, proposal)),
        }
        Ok(())
    }

    fn queued_proposals<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        ProposalRef: traits::ProposalRef<CURRENT_VERSION>,
        QueuedProposal: traits::QueuedProposal<CURRENT_VERSION>,
    >(
        &self,
        _group_id: &GroupId,
    ) -> Result<Vec<(ProposalRef, QueuedProposal)>, GroupStorageError> {
        self.lock()
            .proposals
            .iter()
            .map(|(proposal_ref, proposal)| {
                Ok((
                    decode(PROPOSAL_REF, proposal_ref)?,
                    decode(PROPOSAL, proposal)?,
                ))
            })
            .collect()
    }

    fn tree<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        TreeSync: traits::TreeSync<CURRENT_VERSION>,
    >(
        &self,
        _group_id: &GroupId,
    ) -> Result<Option<TreeSync>, GroupStorageError> {
        decode_slot(TREE, &self.lock().tree)
    }

    fn group_context<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        GroupContext: traits::GroupContext<CURRENT_VERSION>,
    >(
        &self,
        _group_id: &GroupId,
    ) -> Result<Option<GroupContext>, GroupStorageError> {
        decode_slot(CONTEXT, &self.lock().group_context)
    }

    fn interim_transcript_hash<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        InterimTranscriptHash: traits::InterimTranscriptHash<CURRENT_VERSION>,
    >(
        &self,
        _group_id: &GroupId,
    ) -> Result<Option<InterimTranscriptHash>, GroupStorageError> {
        decode_slot(INTERIM, &self.lock().interim_transcript_hash)
    }

    fn confirmation_tag<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        ConfirmationTag: traits::ConfirmationTag<CURRENT_VERSION>,
    >(
        &self,
        _group_id: &GroupId,
    ) -> Result<Option<ConfirmationTag>, GroupStorageError> {
        decode_slot(CONFIRMATION, &self.lock().confirmation_tag)
    }

    fn delete_tree<GroupId: traits::GroupId<CURRENT_VERSION>>(
        &self,
        _group_id: &GroupId,
    ) -> Result<(), GroupStorageError> {
        self.lock().tree = None;
        Ok(())
    }

    fn delete_confirmation_tag<GroupId: traits::GroupId<CURRENT_VERSION>>(
        &self,
        _group_id: &GroupId,
    ) -> Result<(), GroupStorageError> {
        self.lock().confirmation_tag = None;
        Ok(())
    }

    fn delete_context<GroupId: traits::GroupId<CURRENT_VERSION>>(
        &self,
        _group_id: &GroupId,
    ) -> Result<(), GroupStorageError> {
        self.lock().group_context = None;
        Ok(())
    }

    fn delete_interim_transcript_hash<GroupId: traits::GroupId<CURRENT_VERSION>>(
        &self,
        _group_id: &GroupId,
    ) -> Result<(), GroupStorageError> {
        self.lock().interim_transcript_hash = None;
        Ok(())
    }

    fn remove_proposal<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        ProposalRef: traits::ProposalRef<CURRENT_VERSION>,
    >(
        &self,
        _group_id: &GroupId,
        proposal_ref: &ProposalRef,
    ) -> Result<(), GroupStorageError> {
        let proposal_ref = encode(PROPOSAL_REF, proposal_ref)?;
        self.lock()
            .proposals
            .retain(|(stored, _)| *stored != proposal_ref);
        Ok(())
    }

    fn clear_proposal_queue<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        ProposalRef: traits::ProposalRef<CURRENT_VERSION>,
    >(
        &self,
        _group_id: &GroupId,
    ) -> Result<(), GroupStorageError> {
        self.lock().proposals.clear();
        Ok(())
    }
}
