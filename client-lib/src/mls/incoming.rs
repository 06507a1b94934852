//! What the hub delivers, turned into decisions: a group's log entries (commits,
//! proposals, application messages) applied to the group, and Welcomes and
//! GroupInfos turned into groups.
//!
//! Nothing here decides to retry or to rejoin: [`Incoming`] says what happened,
//! and the caller does the bookkeeping.

use conclave_core::ids::CredentialIdentity;
use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
use openmls::prelude::{
    ContentType, MlsGroup, MlsMessageBodyIn, MlsMessageIn, ProcessMessageError,
    ProcessedMessageContent, ProtocolMessage, RatchetTreeIn, StagedWelcome,
};
use openmls_basic_credential::SignatureKeyPair;
use openmls_traits::OpenMlsProvider as _;

use super::config::{join_config, leaf_node_parameters};
use super::group::OutgoingCommit;
use super::membership::{Change, commit_changes};
use super::{MlsError, credential_with_key};
use crate::state::MlsProvider;

/// What applying one log entry did.
#[derive(Debug)]
pub(crate) enum Incoming {
    /// Another member's application message, decrypted; `sender` comes from the
    /// MLS credential of the leaf that signed it.
    Application {
        sender: CredentialIdentity,
        plaintext: Vec<u8>,
    },
    /// This device's own application message (it cannot decrypt it).
    OwnApplication,
    /// Another member's proposal, now in the proposal store.
    ProposalQueued,
    /// This device's own proposal: already in the store since it was made.
    OwnProposal,
    /// Another member's commit, merged: the group is at the next epoch.
    CommitMerged {
        /// The commit removed this device: the group is no longer usable.
        removed_self: bool,
        /// The membership changes it made.
        changes: Vec<Change>,
    },
    /// This device's own commit, which was still pending here: merged now.
    OwnCommitMerged { changes: Vec<Change> },
    /// The message is for an epoch the group has not reached: a commit is missing.
    FutureEpoch { epoch: u64 },
    /// A proposal or commit for an epoch that has ended here (such as this
    /// device's own commit, merged when the hub accepted it).
    Stale { epoch: u64 },
    /// The message could not be read (corrupt, too old for the kept epoch
    /// secrets, not for this group); skipped. openmls may have written part of
    /// its work: the caller rolls it back.
    Unreadable { reason: String },
    /// A commit that should apply but does not: this device's state has diverged
    /// from the group's, and only rejoining repairs it. The caller rolls back
    /// whatever openmls wrote.
    Diverged { reason: String },
}

impl Incoming {
    /// Whether openmls may have left partial writes that must be rolled back.
    pub(crate) fn is_failure(&self) -> bool {
        matches!(
            self,
            Incoming::Unreadable { .. } | Incoming::Diverged { .. }
        )
    }
}

/// Decodes one whole MLSMessage from untrusted bytes.
///
/// The `io::Read` decoder is used rather than `DeserializeBytes`: tls_codec's
/// byte-slice decoders can panic on truncated input in debug builds.
pub(crate) fn decode_message(bytes: &[u8]) -> Result<MlsMessageIn, String> {
    let mut rest = bytes;
    let message = MlsMessageIn::tls_deserialize(&mut rest).map_err(|error| error.to_string())?;
    if !rest.is_empty() {
        return Err(format!(
            "{} unexpected bytes follow the message",
            rest.len()
        ));
    }
    Ok(message)
}

/// The epoch an application message or handshake is for, without processing it.
pub(crate) fn message_epoch(bytes: &[u8]) -> Option<u64> {
    let protocol_message = decode_message(bytes)
        .ok()?
        .try_into_protocol_message()
        .ok()?;
    Some(protocol_message.epoch().as_u64())
}

/// Applies one entry of the group's log. `from_this_device` is the hub's word
/// that this device submitted it.
pub(crate) fn process_group_message(
    group: &mut MlsGroup,
    provider: &MlsProvider<'_>,
    bytes: &[u8],
    from_this_device: bool,
) -> Result<Incoming, MlsError> {
    let unreadable = |reason: String| Ok(Incoming::Unreadable { reason });
    let message = match decode_message(bytes) {
        Ok(message) => message,
        Err(reason) => return unreadable(format!("not an MLSMessage: {reason}")),
    };
    let protocol_message: ProtocolMessage = match message.try_into_protocol_message() {
        Ok(protocol_message) => protocol_message,
        Err(_) => return unreadable("not a PublicMessage or PrivateMessage".to_owned()),
    };
    if protocol_message.group_id() != group.group_id() {
        return unreadable("it names another group".to_owned());
    }
    let epoch = protocol_message.epoch().as_u64();
    let current = group.epoch().as_u64();
    let content_type = protocol_message.content_type();
    let handshake = protocol_message.is_handshake_message();
    if epoch > current {
        return Ok(Incoming::FutureEpoch { epoch });
    }
    if handshake && epoch < current {
        return Ok(Incoming::Stale { epoch });
    }
    if from_this_device {
        match content_type {
            ContentType::Application => return Ok(Incoming::OwnApplication),
            ContentType::Proposal => return Ok(Incoming::OwnProposal),
            ContentType::Commit if group.pending_commit().is_none() => {
                return Ok(Incoming::Diverged {
                    reason: format!(
                        "the hub accepted a commit of ours for epoch {epoch} that this device no longer holds"
                    ),
                });
            }
            // Our pending commit, accepted: openmls recognises it and we merge it.
            ContentType::Commit => {}
        }
    }

    let processed = match group.process_message(provider, protocol_message) {
        Ok(processed) => processed,
        Err(ProcessMessageError::StorageError(error)) => return Err(error.into()),
        Err(error) if content_type == ContentType::Commit => {
            return Ok(Incoming::Diverged {
                reason: format!("a commit for epoch {epoch} does not apply: {error}"),
            });
        }
        Err(error) => return unreadable(error.to_string()),
    };
    let sender = super::device_identity(processed.credential());
    match processed.into_content() {
        ProcessedMessageContent::ApplicationMessage(message) => match sender {
            Some(sender) => Ok(Incoming::Application {
                sender,
                plaintext: message.into_bytes(),
            }),
            None => unreadable("the sender's credential names no device".to_owned()),
        },
        ProcessedMessageContent::ProposalMessage(proposal) => {
            group.store_pending_proposal(provider.storage(), *proposal)?;
            Ok(Incoming::ProposalQueued)
        }
        ProcessedMessageContent::StagedCommitMessage(staged_commit) => {
            let removed_self = staged_commit.self_removed();
            let changes = commit_changes(group, &staged_commit, sender.as_ref());
            group
                .merge_staged_commit(provider, *staged_commit)
                .map_err(|error| MlsError::group("merge a commit", error))?;
            Ok(Incoming::CommitMerged {
                removed_self,
                changes,
            })
        }
        ProcessedMessageContent::OwnPendingCommit => {
            let changes = own_commit_changes(group);
            super::group::merge_own_commit(group, provider)?;
            Ok(Incoming::OwnCommitMerged { changes })
        }
        ProcessedMessageContent::OwnPrivateMessage => Ok(Incoming::OwnApplication),
        ProcessedMessageContent::ExternalJoinProposalMessage(_) => {
            unreadable("external join proposals are not used by conclave".to_owned())
        }
    }
}

/// The membership changes of this device's pending commit, if it has one
/// (call it before merging).
pub(crate) fn own_commit_changes(group: &MlsGroup) -> Vec<Change> {
    let me = group
        .own_leaf_node()
        .and_then(|leaf| super::device_identity(leaf.credential()));
    group
        .pending_commit()
        .map(|staged| commit_changes(group, staged, me.as_ref()))
        .unwrap_or_default()
}

/// Joins a group from a Welcome and the ratchet tree the hub sent with it. The
/// key package the Welcome is for must still be in storage (it is deleted as it
/// is used, except a last-resort one).
pub(crate) fn join_from_welcome(
    provider: &MlsProvider<'_>,
    welcome: &[u8],
    ratchet_tree: &[u8],
) -> Result<MlsGroup, MlsError> {
    let invalid = |reason: String| MlsError::group("join from a welcome", reason);
    let message = decode_message(welcome).map_err(invalid)?;
    let MlsMessageBodyIn::Welcome(welcome) = message.extract() else {
        return Err(invalid("the message is not a Welcome".to_owned()));
    };
    let ratchet_tree = decode_ratchet_tree(ratchet_tree).map_err(invalid)?;
    let staged =
        StagedWelcome::new_from_welcome(provider, &join_config(), welcome, Some(ratchet_tree))
            .map_err(|error| MlsError::group("join from a welcome", error))?;
    staged
        .into_group(provider)
        .map_err(|error| MlsError::group("join from a welcome", error))
}

/// Joins (or rejoins) a group by external commit from the GroupInfo and ratchet
/// tree the hub keeps. openmls removes this device's old leaf in the same commit
/// if the tree still has one (same signature key), and merges the commit at once:
/// the caller treats the group as provisional until the hub accepts the commit.
pub(crate) fn join_by_external_commit(
    provider: &MlsProvider<'_>,
    signer: &SignatureKeyPair,
    identity: &CredentialIdentity,
    group_info: &[u8],
    ratchet_tree: &[u8],
) -> Result<(MlsGroup, OutgoingCommit), MlsError> {
    let invalid = |reason: String| MlsError::group("join by external commit", reason);
    let failed = |error: &dyn std::fmt::Display| MlsError::group("join by external commit", error);
    let message = decode_message(group_info).map_err(invalid)?;
    let MlsMessageBodyIn::GroupInfo(group_info) = message.extract() else {
        return Err(invalid(
            "the hub's group info is not a GroupInfo".to_owned(),
        ));
    };
    let ratchet_tree = decode_ratchet_tree(ratchet_tree).map_err(invalid)?;
    let (group, bundle) = MlsGroup::external_commit_builder()
        .with_ratchet_tree(ratchet_tree)
        .with_config(join_config())
        .build_group(provider, group_info, credential_with_key(identity, signer))
        .map_err(|error| failed(&error))?
        .leaf_node_parameters(leaf_node_parameters())
        .load_psks(provider.storage())
        .map_err(|error| failed(&error))?
        .create_group_info(true)
        .build(provider.rand(), provider.crypto(), signer, |_| true)
        .map_err(|error| failed(&error))?
        .finalize(provider)
        .map_err(|error| failed(&error))?;
    let (commit, _, group_info) = bundle.into_messages();
    let group_info = group_info.ok_or_else(|| invalid("openmls made no group info".to_owned()))?;
    Ok((
        group,
        OutgoingCommit {
            commit: commit.tls_serialize_detached()?,
            welcome: None,
            group_info: group_info.tls_serialize_detached()?,
        },
    ))
}

fn decode_ratchet_tree(bytes: &[u8]) -> Result<RatchetTreeIn, String> {
    let mut rest = bytes;
    let tree = RatchetTreeIn::tls_deserialize(&mut rest)
        .map_err(|error| format!("the ratchet tree does not decode: {error}"))?;
    if !rest.is_empty() {
        return Err(format!(
            "{} unexpected bytes follow the ratchet tree",
            rest.len()
        ));
    }
    Ok(tree)
}
