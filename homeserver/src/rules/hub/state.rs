//! A group's public state as one blob, so the service can keep it in a database row.
//!
//! The blob is what openmls wrote through [`GroupStorage`] (tree, group context,
//! interim transcript hash, confirmation tag, proposal store), plus what openmls does
//! not store: the group id to load it by, and the newest GroupInfo.
//!
//! Layout, every length a big-endian `u32`, every optional part a presence byte:
//! `format (u8) | group id | group info | tree? | context? | interim hash? |
//! confirmation tag? | proposal count | (proposal ref, proposal)*`.

use openmls::prelude::{GroupId, PublicGroup};

use super::HubGroup;
use super::error::CorruptState;
use super::messages::device_identity;
use super::storage::{GroupStorage, StoredParts};

/// Version of the blob layout; a reader refuses any other.
const STATE_FORMAT: u8 = 1;

impl HubGroup {
    /// Serialises the group's public state for the caller to persist.
    pub(crate) fn to_state(&self) -> Vec<u8> {
        let parts = self.storage.parts();
        let mut state = vec![STATE_FORMAT];
        put_bytes(&mut state, self.public_group.group_id().as_slice());
        put_bytes(&mut state, &self.group_info);
        for slot in [
            &parts.tree,
            &parts.group_context,
            &parts.interim_transcript_hash,
            &parts.confirmation_tag,
        ] {
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
        state
    }

    /// Reads back a blob written by [`HubGroup::to_state`].
    pub(crate) fn from_state(state: &[u8]) -> Result<HubGroup, CorruptState> {
        let mut reader = Reader(state);
        let format = reader.take(1)?[0];
        if format != STATE_FORMAT {
            return Err(CorruptState(format!(
                "it is in format {format} but this homeserver reads format {STATE_FORMAT}"
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
