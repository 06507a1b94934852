//! A group's public state as one blob, so the service can keep it in a database row.
//!
//! The blob is what openmls wrote through [`GroupStorage`] (tree, group context,
//! interim transcript hash, confirmation tag, proposal store), plus what openmls does
//! not store: the group id to load it by, and the newest GroupInfo.
//!
//! Layout, every length a big-endian `u32`, every optional part a presence byte:
//! `format (u8) | group id | group info | tree? | context? | interim hash? |
//! confirmation tag? | proposal count | (proposal ref, proposal)*`.
//!
//! Format 2 holds each part in postcard ([`GroupStorage`]); format 1, written
//! before, held them as JSON. A format 1 blob is read and its parts converted, so
//! the next save writes format 2.

use openmls::group::InterimTranscriptHash;
use openmls::prelude::hash_ref::ProposalRef;
use openmls::prelude::{ConfirmationTag, GroupContext, GroupId, PublicGroup, QueuedProposal};
use openmls::treesync::TreeSync;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::HubGroup;
use super::error::CorruptState;
use super::messages::device_identity;
use super::storage::{
    CONFIRMATION, CONTEXT, GroupStorage, INTERIM, PROPOSAL, PROPOSAL_REF, StoredParts, TREE, encode,
};

/// Version of the blob layout this homeserver writes.
const STATE_FORMAT: u8 = 2;
/// The layout before, with JSON parts; still read.
const JSON_STATE_FORMAT: u8 = 1;

impl HubGroup {
    /// Serialises the group's public state for the caller to persist.
    pub(crate) fn to_state(&self) -> Vec<u8> {
        let parts = self.storage.parts();
        write_state(
            STATE_FORMAT,
            self.public_group.group_id().as_slice(),
            &self.group_info,
            &parts,
        )
    }

    /// The state as format 1 wrote it, JSON parts: a blob as a homeserver
    /// before format 2 left it in the database.
    #[cfg(test)]
    pub(crate) fn to_json_state(&self) -> Vec<u8> {
        let parts = self.storage.parts();
        let json_parts = StoredParts {
            tree: slot_as_json::<TreeSync>(&parts.tree),
            group_context: slot_as_json::<GroupContext>(&parts.group_context),
            interim_transcript_hash: slot_as_json::<InterimTranscriptHash>(
                &parts.interim_transcript_hash,
            ),
            confirmation_tag: slot_as_json::<ConfirmationTag>(&parts.confirmation_tag),
            proposals: parts
                .proposals
                .iter()
                .map(|(proposal_ref, proposal)| {
                    (
                        as_json::<ProposalRef>(proposal_ref),
                        as_json::<QueuedProposal>(proposal),
                    )
                })
                .collect(),
        };
        write_state(
            JSON_STATE_FORMAT,
            self.public_group.group_id().as_slice(),
            &self.group_info,
            &json_parts,
        )
    }

    /// Reads back a blob written by [`HubGroup::to_state`].
    pub(crate) fn from_state(state: &[u8]) -> Result<HubGroup, CorruptState> {
        let mut reader = Reader(state);
        let format = reader.take(1)?[0];
        if format != STATE_FORMAT && format != JSON_STATE_FORMAT {
            return Err(CorruptState(format!(
                "it is in format {format} but this homeserver reads formats \
                 {JSON_STATE_FORMAT} and {STATE_FORMAT}"
            )));
        }
        let group_id = GroupId::from_slice(reader.bytes()?);
        let group_info = reader.bytes()?.to_vec();
        let mut parts = StoredParts {
            tree: reader.optional()?,
            group_context: reader.optional()?,
            interim_transcript_hash: reader.optional()?,
            confirmation_tag: reader.optional()?,
            proposals: Vec::new(),
        };
        for _ in 0..reader.length()? {
            let proposal_ref = reader.bytes()?.to_vec();
            parts
                .proposals
                .push((proposal_ref, reader.bytes()?.to_vec()));
        }
        if !reader.0.is_empty() {
            return Err(CorruptState(format!(
                "{} unexpected bytes follow it",
                reader.0.len()
            )));
        }

        if format == JSON_STATE_FORMAT {
            parts = from_json(parts)?;
        }
        let storage = GroupStorage::new(parts);
        let public_group = PublicGroup::load(&storage, &group_id)
            .map_err(|error| CorruptState(format!("openmls cannot read it: {error}")))?
            .ok_or_else(|| CorruptState("it lacks part of the group's public state".to_owned()))?;
        // Every leaf was checked on its way into the tree; checking again here lets
        // `members` rely on it, so a damaged blob cannot silently drop a member.
        for member in public_group.members() {
            device_identity(&member.credential).map_err(|reason| {
                CorruptState(format!(
                    "leaf {} does not name a device: {reason}",
                    member.index.u32()
                ))
            })?;
        }
        Ok(HubGroup::from_parts(public_group, storage, group_info))
    }
}

/// The blob's layout, in one buffer of the exact size (at 10,000 members the
/// tree alone is megabytes).
fn write_state(format: u8, group_id: &[u8], group_info: &[u8], parts: &StoredParts) -> Vec<u8> {
    let slots = [
        &parts.tree,
        &parts.group_context,
        &parts.interim_transcript_hash,
        &parts.confirmation_tag,
    ];
    let length = 1
        + (4 + group_id.len())
        + (4 + group_info.len())
        + slots
            .iter()
            .map(|slot| 1 + slot.as_ref().map_or(0, |value| 4 + value.len()))
            .sum::<usize>()
        + 4
        + parts
            .proposals
            .iter()
            .map(|(proposal_ref, proposal)| 8 + proposal_ref.len() + proposal.len())
            .sum::<usize>();
    let mut state = Vec::with_capacity(length);
    state.push(format);
    put_bytes(&mut state, group_id);
    put_bytes(&mut state, group_info);
    for slot in slots {
        match slot {
            Some(value) => {
                state.push(1);
                put_bytes(&mut state, value);
            }
            None => state.push(0),
        }
    }
    put_length(&mut state, parts.proposals.len());
    for (proposal_ref, proposal) in &parts.proposals {
        put_bytes(&mut state, proposal_ref);
        put_bytes(&mut state, proposal);
    }
    debug_assert_eq!(state.len(), length, "the state's size was computed wrong");
    state
}

#[cfg(test)]
fn as_json<T: Serialize + DeserializeOwned>(postcard: &[u8]) -> Vec<u8> {
    let value: T = postcard::from_bytes(postcard).expect("a part this group wrote decodes");
    serde_json::to_vec(&value).expect("openmls's values encode as JSON")
}

#[cfg(test)]
fn slot_as_json<T: Serialize + DeserializeOwned>(slot: &Option<Vec<u8>>) -> Option<Vec<u8>> {
    slot.as_deref().map(as_json::<T>)
}

/// Format 1's parts, JSON, as format 2's: each decoded as the openmls type
/// written there and encoded again.
fn from_json(parts: StoredParts) -> Result<StoredParts, CorruptState> {
    fn convert<T: Serialize + DeserializeOwned>(
        part: &'static str,
        json: &[u8],
    ) -> Result<Vec<u8>, CorruptState> {
        let value: T = serde_json::from_slice(json).map_err(|error| {
            CorruptState(format!("its {part} does not decode as JSON: {error}"))
        })?;
        encode(part, &value).map_err(|error| CorruptState(error.to_string()))
    }
    fn convert_slot<T: Serialize + DeserializeOwned>(
        part: &'static str,
        slot: Option<Vec<u8>>,
    ) -> Result<Option<Vec<u8>>, CorruptState> {
        slot.map(|json| convert::<T>(part, &json)).transpose()
    }
    Ok(StoredParts {
        tree: convert_slot::<TreeSync>(TREE, parts.tree)?,
        group_context: convert_slot::<GroupContext>(CONTEXT, parts.group_context)?,
        interim_transcript_hash: convert_slot::<InterimTranscriptHash>(
            INTERIM,
            parts.interim_transcript_hash,
        )?,
        confirmation_tag: convert_slot::<ConfirmationTag>(CONFIRMATION, parts.confirmation_tag)?,
        proposals: parts
            .proposals
            .into_iter()
            .map(|(proposal_ref, proposal)| {
                Ok((
                    convert::<ProposalRef>(PROPOSAL_REF, &proposal_ref)?,
                    convert::<QueuedProposal>(PROPOSAL, &proposal)?,
                ))
            })
            .collect::<Result<_, CorruptState>>()?,
    })
}

fn put_length(out: &mut Vec<u8>, length: usize) {
    // One group's state stays far below 4 GiB: the service limits message and group
    // sizes long before that.
    let length = u32::try_from(length).expect("hub group state part longer than 4 GiB");
    out.extend_from_slice(&length.to_be_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_length(out, bytes.len());
    out.extend_from_slice(bytes);
}

/// Reads the blob front to back, refusing to read past its end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize) -> Result<&'a [u8], CorruptState> {
        if count > self.0.len() {
            return Err(CorruptState(format!(
                "it ends early: {count} more bytes needed, {} left",
                self.0.len()
            )));
        }
        let (taken, rest) = self.0.split_at(count);
        self.0 = rest;
        Ok(taken)
    }

    fn length(&mut self) -> Result<usize, CorruptState> {
        let bytes: [u8; 4] = self.take(4)?.try_into().expect("take returned 4 bytes");
        Ok(u32::from_be_bytes(bytes) as usize)
    }

    fn bytes(&mut self) -> Result<&'a [u8], CorruptState> {
        let length = self.length()?;
        self.take(length)
    }

    fn optional(&mut self) -> Result<Option<Vec<u8>>, CorruptState> {
        match self.take(1)?[0] {
            0 => Ok(None),
            1 => Ok(Some(self.bytes()?.to_vec())),
            other => Err(CorruptState(format!(
                "a part is marked {other}, neither present (1) nor absent (0)"
            ))),
        }
    }
}
