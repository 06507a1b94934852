//! The membership changes a commit makes, read from its proposals before it is
//! merged (while the removed leaves are still in the tree): who joined, left,
//! was removed and by whom, who replaced their keys, who rejoined.

use conclave_core::ids::CredentialIdentity;
use openmls::prelude::{LeafNodeIndex, MlsGroup, Proposal, Sender, StagedCommit};

/// What happened to a member device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MembershipKind {
    /// Added to the group (by the commit's author, or the proposal's).
    Joined,
    /// Removed at its own request: it left, or its homeserver said it departed
    /// (logged out, device removed).
    Left,
    /// Removed by another member.
    Removed,
    /// Replaced its leaf keys (a self-update).
    Rotated,
    /// Joined again by external commit after losing its state of the group.
    Rejoined,
}

impl MembershipKind {
    /// The word scripts see (`listen --json`'s `change`).
    pub fn as_str(self) -> &'static str {
        match self {
            MembershipKind::Joined => "joined",
            MembershipKind::Left => "left",
            MembershipKind::Removed => "removed",
            MembershipKind::Rotated => "rotated",
            MembershipKind::Rejoined => "rejoined",
        }
    }

    /// The word read back from the local state.
    pub(crate) fn parse(text: &str) -> Option<MembershipKind> {
        [
            MembershipKind::Joined,
            MembershipKind::Left,
            MembershipKind::Removed,
            MembershipKind::Rotated,
            MembershipKind::Rejoined,
        ]
        .into_iter()
        .find(|kind| kind.as_str() == text)
    }
}

/// One change a commit makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Change {
    pub(crate) kind: MembershipKind,
    /// The device whose membership changed.
    pub(crate) subject: CredentialIdentity,
    /// Who caused it: the proposal's sender, else the commit's author; `None`
    /// if its leaf names no device.
    pub(crate) by: Option<CredentialIdentity>,
}

/// The changes `staged` makes to `group` (still at the epoch before it),
/// committed by `committer`, in order: removals, additions, key updates.
pub(crate) fn commit_changes(
    group: &MlsGroup,
    staged: &StagedCommit,
    committer: Option<&CredentialIdentity>,
) -> Vec<Change> {
    let leaf_identity = |leaf: LeafNodeIndex| group.member(leaf).and_then(super::device_identity);
    let proposer = |sender: &Sender| match sender {
        Sender::Member(leaf) => leaf_identity(*leaf),
        _ => committer.cloned(),
    };
    let external = staged
        .queued_proposals()
        .any(|queued| matches!(queued.proposal(), Proposal::ExternalInit(_)));
    let mut changes = Vec::new();
    let mut rejoined = false;
    for removal in staged.remove_proposals() {
        let Some(subject) = leaf_identity(removal.remove_proposal().removed()) else {
            continue;
        };
        if external && Some(&subject) == committer {
            // An external commit that replaces the committer's own old leaf.
            rejoined = true;
            continue;
        }
        let by = proposer(removal.sender());
        let kind = if by.as_ref() == Some(&subject) {
            MembershipKind::Left
        } else {
            MembershipKind::Removed
        };
        changes.push(Change { kind, subject, by });
    }
    for addition in staged.add_proposals() {
        let credential = addition
            .add_proposal()
            .key_package()
            .leaf_node()
            .credential();
        if let Some(subject) = super::device_identity(credential) {
            changes.push(Change {
                kind: MembershipKind::Joined,
                subject,
                by: proposer(addition.sender()),
            });
        }
    }
    if external && let Some(committer) = committer {
        changes.push(Change {
            kind: if rejoined {
                MembershipKind::Rejoined
            } else {
                MembershipKind::Joined
            },
            subject: committer.clone(),
            by: Some(committer.clone()),
        });
    }
    for update in staged.update_proposals() {
        if let Some(subject) = proposer(update.sender()) {
            changes.push(Change {
                kind: MembershipKind::Rotated,
                by: Some(subject.clone()),
                subject,
            });
        }
    }
    // A commit of nothing but a new path is its author's self-update.
    if staged.queued_proposals().next().is_none()
        && staged.update_path_leaf_node().is_some()
        && let Some(committer) = committer
    {
        changes.push(Change {
            kind: MembershipKind::Rotated,
            subject: committer.clone(),
            by: Some(committer.clone()),
        });
    }
    changes
}
