//! Which leaves a staged commit adds, changes and removes, and Conclave's rules on
//! them, beyond RFC 9420's: every new leaf names a device, a leaf never passes to
//! another device, no device holds two leaves, and an external commit only brings a
//! device of a user already in the group, as itself.

use std::collections::HashSet;

use conclave_core::ids::CredentialIdentity;
use openmls::prelude::{LeafNode, LeafNodeIndex, Proposal, Sender, StagedCommit};

use super::HubGroup;
use super::commit::NewLeaf;
use super::error::{HubRejection, describe};
use super::messages::device_identity;

/// Who made a commit, as established before it was staged.
pub(super) enum Committer<'a> {
    /// A member, in this leaf, already known to be the calling device.
    Member {
        leaf_index: LeafNodeIndex,
        identity: &'a CredentialIdentity,
    },
    /// A device joining by external commit; the caller, who must be that device.
    External { caller: &'a CredentialIdentity },
}

/// The leaves a commit touches, for the decision.
pub(super) struct LeafChanges {
    /// One per Add proposal, with the added KeyPackage's ref.
    pub(super) added: Vec<NewLeaf>,
    /// Leaves replaced by an update path, Update proposals or an external join.
    pub(super) changed: Vec<NewLeaf>,
    /// Devices whose leaves Remove and SelfRemove proposals empty.
    pub(super) removed: Vec<CredentialIdentity>,
}

impl HubGroup {
    /// Sorts a staged commit's leaves and applies the rules above.
    pub(super) fn leaf_changes(
        &self,
        staged_commit: &StagedCommit,
        committer: &Committer<'_>,
    ) -> Result<LeafChanges, HubRejection> {
        let invalid = HubRejection::InvalidCommit;
        let not_allowed = HubRejection::ExternalJoinNotAllowed;

        let member_at = |leaf_index: LeafNodeIndex, action: &str| {
            self.member_identity(leaf_index).ok_or_else(|| {
                invalid(format!(
                    "it {action} leaf {}, which holds no member",
                    leaf_index.u32()
                ))
            })
        };
        let mut removed_leaves = HashSet::new();
        let mut removed = Vec::new();
        // Devices removed by a Remove proposal, as opposed to a member's own SelfRemove.
        let mut evicted = Vec::new();
        let mut changed = Vec::new();
        let mut added = Vec::new();
        // One pass over every proposal the commit covers, inline or by reference, so
        // that no kind of proposal that touches the tree goes unnoticed.
        for queued in staged_commit.queued_proposals() {
            match (queued.proposal(), queued.sender()) {
                (Proposal::Remove(remove), _) => {
                    let identity = member_at(remove.removed(), "removes")?;
                    removed_leaves.insert(remove.removed());
                    evicted.push(identity.clone());
                    removed.push(identity);
                }
                (Proposal::SelfRemove, Sender::Member(leaf_index)) => {
                    removed_leaves.insert(*leaf_index);
                    removed.push(member_at(*leaf_index, "self-removes")?);
                }
                (Proposal::Update(update), Sender::Member(leaf_index)) => {
                    let new_leaf = new_leaf(update.leaf_node(), None).map_err(invalid)?;
                    same_device(&member_at(*leaf_index, "updates")?, &new_leaf.identity)
                        .map_err(invalid)?;
                    changed.push(new_leaf);
                }
                (Proposal::Add(add), _) => {
                    let key_package = add.key_package();
                    let key_package_ref = key_package
                        .hash_ref(&self.crypto)
                        .map_err(|error| invalid(describe(&error)))?;
                    let key_package_ref = Some(key_package_ref.as_slice().to_vec());
                    added
                        .push(new_leaf(key_package.leaf_node(), key_package_ref).map_err(invalid)?);
                }
                // openmls accepts these only from members.
                (Proposal::SelfRemove | Proposal::Update(_), _) => {
                    return Err(invalid(
                        "it covers a self-remove or update proposal from a non-member".to_owned(),
                    ));
                }
                _ => {}
            }
        }

        let path_leaf = staged_commit
            .update_path_leaf_node()
            .map(|leaf| new_leaf(leaf, None).map_err(invalid))
            .transpose()?;
        let joiner = match (committer, path_leaf) {
            (Committer::Member { identity, .. }, Some(path_leaf)) => {
                same_device(identity, &path_leaf.identity).map_err(invalid)?;
                changed.push(path_leaf);
                None
            }
            (Committer::Member { .. }, None) => None,
            (Committer::External { caller }, Some(path_leaf)) => {
                if &path_leaf.identity != *caller {
                    return Err(not_allowed(format!(
                        "its new leaf is {} but the caller is {caller}",
                        path_leaf.identity
                    )));
                }
                let identity = path_leaf.identity.clone();
                changed.push(path_leaf);
                Some(identity)
            }
            // openmls refuses an external commit without a path before this runs.
            (Committer::External { .. }, None) => {
                return Err(invalid(
                    "an external commit must carry an update path".to_owned(),
                ));
            }
        };

        let current: Vec<(LeafNodeIndex, CredentialIdentity)> = self
            .public_group
            .members()
            .filter_map(|member| Some((member.index, device_identity(&member.credential).ok()?)))
            .collect();
        if let Some(joiner) = &joiner {
            // Resynchronisation (the device itself) or a new device of a member; a
            // stranger must be added by a member, with a claimed key package.
            let user_is_member = current
                .iter()
                .any(|(_, identity)| identity.user_id() == joiner.user_id());
            if !user_is_member {
                return Err(not_allowed(format!(
                    "user {} has no device in the group",
                    joiner.user_id()
                )));
            }
            // RFC 9420 lets an external commit remove a leaf so a device can replace
            // its own stale one; it must not let a joiner evict anybody else. (A
            // member's own SelfRemove, which it may also carry, was that member's call.)
            if let Some(other) = evicted.iter().find(|identity| *identity != joiner) {
                return Err(not_allowed(format!(
                    "it removes {other}, but an external commit may remove only the joiner's own earlier leaf"
                )));
            }
        }

        // One leaf per device, so that a device maps to exactly one leaf when the
        // service decides who receives what and who may send.
        let mut devices: HashSet<&CredentialIdentity> = current
            .iter()
            .filter(|(leaf_index, _)| !removed_leaves.contains(leaf_index))
            .map(|(_, identity)| identity)
            .collect();
        for identity in added.iter().map(|leaf| &leaf.identity).chain(&joiner) {
            if !devices.insert(identity) {
                return Err(invalid(format!(
                    "device {identity} would hold two leaves in the group"
                )));
            }
        }

        Ok(LeafChanges {
            added,
            changed,
            removed,
        })
    }
}

/// The device and key of a leaf a commit or proposal brings in. The error says why
/// the leaf names no device.
pub(super) fn new_leaf(
    leaf: &LeafNode,
    key_package_ref: Option<Vec<u8>>,
) -> Result<NewLeaf, String> {
    let identity = device_identity(leaf.credential())
        .map_err(|reason| format!("a new leaf does not name a device: {reason}"))?;
    Ok(NewLeaf {
        identity,
        signature_key: leaf.signature_key().as_slice().to_vec(),
        key_package_ref,
    })
}

/// A leaf stays with its device: a new key is fine, a new identity is not (that would
/// be an add without a claimed key package).
pub(super) fn same_device(
    old: &CredentialIdentity,
    new: &CredentialIdentity,
) -> Result<(), String> {
    if old == new {
        Ok(())
    } else {
        Err(format!("it would pass the leaf of {old} to {new}"))
    }
}
