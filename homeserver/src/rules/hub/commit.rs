//! Whether a commit may end the group's current epoch, and merging it once the
//! service has checked what the decision asks for.

use std::fmt;

use conclave_core::ids::CredentialIdentity;
use openmls::prelude::{ProcessedMessageContent, Sender, StagedCommit};

use super::HubGroup;
use super::error::{HubRejection, describe};
use super::group_info::{ExpectedGroupInfo, check_group_info};
use super::leaves::Committer;
use super::messages::decode_handshake;
use super::welcome::check_welcome;

/// A commit as submitted by an authenticated device.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CommitSubmission<'a> {
    /// The calling device, as authenticated by the service.
    pub(crate) sender: &'a CredentialIdentity,
    /// MLSMessage: a PublicMessage carrying the commit.
    pub(crate) commit: &'a [u8],
    /// MLSMessage carrying the Welcome, when the commit adds members.
    pub(crate) welcome: Option<&'a [u8]>,
    /// MLSMessage carrying the GroupInfo of the epoch the commit creates.
    pub(crate) group_info: &'a [u8],
}

/// A leaf a commit brings into the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NewLeaf {
    pub(crate) identity: CredentialIdentity,
    /// The leaf's signature public key (raw Ed25519 key bytes).
    pub(crate) signature_key: Vec<u8>,
    /// For Adds: the KeyPackageRef (RFC 9420 §5.2) of the added package, by which the
    /// directory knows whether it was claimed and the Welcome addresses it.
    pub(crate) key_package_ref: Option<Vec<u8>>,
}

/// A commit that passed every check the group's public state allows. Before applying
/// it, the service must check in its database that every `added` leaf is a registered
/// device whose key package was claimed, and every `changed_leaves` entry is a
/// registered device with that signature key.
pub(crate) struct CommitDecision {
    /// The epoch the commit creates.
    pub(crate) new_epoch: u64,
    /// Whether it is an external commit (a device joining, or rejoining, by itself).
    pub(crate) external: bool,
    /// One per Add proposal covered (inline or by reference).
    pub(crate) added: Vec<NewLeaf>,
    /// Every leaf the commit replaces other than by an Add: the committer's update
    /// path leaf, Update proposals' leaves, and an external joiner's leaf. Listed even
    /// when the credential and key stay the same, so the service checks all of them
    /// the same way and a device that is no longer registered cannot renew its leaf.
    pub(crate) changed_leaves: Vec<NewLeaf>,
    /// Devices whose leaves the commit removes (for a resync, the joiner's old leaf).
    pub(crate) removed: Vec<CredentialIdentity>,
    /// The epoch and group the decision was made against; `apply_commit` refuses any
    /// other state.
    decided_at_epoch: u64,
    group_id: Vec<u8>,
    staged_commit: StagedCommit,
    /// The GroupInfo submitted with the commit, kept once the commit is applied.
    group_info: Vec<u8>,
}

/// Leaves out the staged commit and GroupInfo, which are large and say nothing a log
/// reader needs.
impl fmt::Debug for CommitDecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommitDecision")
            .field("new_epoch", &self.new_epoch)
            .field("external", &self.external)
            .field("added", &self.added)
            .field("changed_leaves", &self.changed_leaves)
            .field("removed", &self.removed)
            .field("decided_at_epoch", &self.decided_at_epoch)
            .finish_non_exhaustive()
    }
}

impl HubGroup {
    /// Validates a commit for the current epoch without changing the group: framing
    /// (a PublicMessage for this group and epoch), the committer (the calling device,
    /// or for an external commit a new device of a user already in the group), openmls's
    /// verification (signature, proposals, path, tree), the leaves it brings, the
    /// Welcome (exactly when members are added, to exactly them) and the new GroupInfo.
    pub(crate) fn check_commit(
        &self,
        submission: &CommitSubmission<'_>,
    ) -> Result<CommitDecision, HubRejection> {
        const WHAT: &str = "commit";
        let current_epoch = self.epoch();
        let public_message = decode_handshake(
            submission.commit,
            WHAT,
            self.public_group.group_id(),
            current_epoch,
        )?;

        // The committer is checked before any cryptography, so that a device trying
        // to commit as another costs little.
        let committer = match public_message.sender() {
            Sender::Member(leaf_index) => {
                let identity =
                    self.member_identity(*leaf_index)
                        .ok_or(HubRejection::NotAMember {
                            what: WHAT,
                            leaf_index: leaf_index.u32(),
                        })?;
                if &identity != submission.sender {
                    return Err(HubRejection::SenderNotCaller {
                        what: WHAT,
                        signer: Box::new(identity),
                        caller: Box::new(submission.sender.clone()),
                    });
                }
                Committer::Member {
                    leaf_index: *leaf_index,
                    identity: submission.sender,
                }
            }
            Sender::NewMemberCommit => Committer::External {
                caller: submission.sender,
            },
            Sender::External(_) | Sender::NewMemberProposal => {
                return Err(HubRejection::InvalidCommit(
                    "a commit must come from a member, or from a device joining by external commit"
                        .to_owned(),
                ));
            }
        };
        // Kept for the GroupInfo check: the GroupInfo of the new epoch must carry it.
        let confirmation_tag = public_message.confirmation_tag().cloned().ok_or_else(|| {
            HubRejection::InvalidCommit("it carries no confirmation tag".to_owned())
        })?;

        let processed = self
            .public_group
            .process_message(&self.crypto, public_message)
            .map_err(|error| HubRejection::InvalidCommit(describe(&error)))?;
        let ProcessedMessageContent::StagedCommitMessage(staged_commit) = processed.into_content()
        else {
            return Err(HubRejection::InvalidCommit(
                "openmls did not stage it as a commit".to_owned(),
            ));
        };
        let staged_commit = *staged_commit;

        let changes = self.leaf_changes(&staged_commit, &committer)?;
        check_welcome(
            submission.welcome,
            &changes.added,
            self.public_group.ciphersuite(),
        )?;

        // The GroupInfo is signed by the committer with its key in the new tree: the
        // update path's key if the commit has a path (always, for external commits),
        // else the key its leaf already has.
        let signer = match committer {
            Committer::Member { leaf_index, .. } => leaf_index,
            Committer::External { .. } => self
                .public_group
                .ext_commit_sender_index(&staged_commit)
                .map_err(|error| HubRejection::InvalidCommit(describe(&error)))?,
        };
        let signer_key = match staged_commit.update_path_leaf_node() {
            Some(leaf) => leaf.signature_key().clone(),
            None => self
                .public_group
                .leaf(signer)
                .ok_or_else(|| {
                    HubRejection::InvalidCommit(format!(
                        "the committer's leaf {} is empty",
                        signer.u32()
                    ))
                })?
                .signature_key()
                .clone(),
        };
        check_group_info(
            submission.group_info,
            &ExpectedGroupInfo {
                group_context: staged_commit.group_context(),
                confirmation_tag: &confirmation_tag,
                signer,
                signer_key,
            },
            &self.crypto,
        )?;

        Ok(CommitDecision {
            new_epoch: staged_commit.epoch().as_u64(),
            external: matches!(committer, Committer::External { .. }),
            added: changes.added,
            changed_leaves: changes.changed,
            removed: changes.removed,
            decided_at_epoch: current_epoch,
            group_id: self.group_id(),
            staged_commit,
            group_info: submission.group_info.to_vec(),
        })
    }

    /// Merges a decision from [`HubGroup::check_commit`] made against this same state:
    /// the epoch advances, the proposal store is emptied (its proposals belonged to the
    /// epoch that ended), and the commit's GroupInfo becomes the newest.
    ///
    /// On an error the group may be half changed: the caller must discard it, and not
    /// save it.
    pub(crate) fn apply_commit(&mut self, decision: CommitDecision) -> Result<(), HubRejection> {
        if decision.group_id != self.group_id() {
            return Err(HubRejection::DecisionMismatch(
                "it was made for another group".to_owned(),
            ));
        }
        let current_epoch = self.epoch();
        if decision.decided_at_epoch != current_epoch {
            return Err(HubRejection::DecisionMismatch(format!(
                "it was made at epoch {} but the group is at epoch {current_epoch}",
                decision.decided_at_epoch
            )));
        }
        self.public_group
            .merge_commit(&self.storage, decision.staged_commit)
            .map_err(|error| HubRejection::Storage(describe(&error)))?;
        self.group_info = decision.group_info;
        Ok(())
    }
}
