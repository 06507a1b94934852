//! A group on this device: creating it, the commits and proposals it sends, its
//! application messages, and what it shows of its members.
//!
//! Every function here writes through the provider it is handed as openmls runs;
//! callers run each one inside a state transaction and drop the `MlsGroup` if it
//! fails, so a failed operation leaves nothing half written.

use conclave_core::ids::CredentialIdentity;
use conclave_core::mls::CipherSuite;
use openmls::prelude::tls_codec::Serialize as _;
use openmls::prelude::{
    GroupId, KeyPackage, LeafNodeIndex, MlsGroup, MlsMessageOut, Proposal, Sender,
};
use openmls_basic_credential::SignatureKeyPair;
use openmls_traits::OpenMlsProvider as _;

use super::config::create_config;
use super::metadata::{GroupMetadata, from_group_context};
use super::{MlsError, credential_with_key};
use crate::state::MlsProvider;

/// A group just created here, with what the hub needs to register it.
pub(crate) struct NewGroup {
    pub(crate) group: MlsGroup,
    /// MLSMessage carrying the GroupInfo of epoch 0, with the external_pub
    /// extension (so members can rejoin by external commit from the start).
    pub(crate) group_info: Vec<u8>,
    /// TLS-serialised ratchet tree of epoch 0.
    pub(crate) ratchet_tree: Vec<u8>,
}

/// What a commit is for.
pub(crate) enum CommitKind {
    /// Add these (already verified) key packages, without updating the
    /// committer's own leaf (`add_members_without_update`).
    Add(Vec<KeyPackage>),
    /// Remove these leaves.
    Remove(Vec<LeafNodeIndex>),
    /// Replace the committer's leaf and path secrets (a key rotation).
    SelfUpdate,
    /// Cover the proposals in the proposal store and nothing else.
    PendingProposals,
}

/// A commit staged in the group (pending until the hub accepts it), and what goes
/// to the hub with it. Every kind of commit consumes the proposal store, so that
/// members' proposals get committed by whoever commits next.
pub(crate) struct OutgoingCommit {
    /// MLSMessage: the commit as a PublicMessage.
    pub(crate) commit: Vec<u8>,
    /// MLSMessage: the Welcome, when the commit adds members.
    pub(crate) welcome: Option<Vec<u8>>,
    /// MLSMessage: the GroupInfo of the epoch the commit creates, with
    /// external_pub, for the hub to hand to devices that join by external commit.
    pub(crate) group_info: Vec<u8>,
}

/// A member of a group: one device in one leaf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MemberLeaf {
    pub(crate) leaf_index: LeafNodeIndex,
    pub(crate) identity: CredentialIdentity,
}

/// Creates a group of `suite` whose only member is this device, named `name`
/// in its metadata, and stages nothing: a new group needs no commit.
pub(crate) fn create_group(
    provider: &MlsProvider<'_>,
    signer: &SignatureKeyPair,
    identity: &CredentialIdentity,
    name: &str,
    suite: CipherSuite,
) -> Result<NewGroup, MlsError> {
    create_group_with_id(provider, signer, identity, name, suite, None)
}

/// [`create_group`], under a chosen group id (`None`: a random one).
pub(crate) fn create_group_with_id(
    provider: &MlsProvider<'_>,
    signer: &SignatureKeyPair,
    identity: &CredentialIdentity,
    name: &str,
    suite: CipherSuite,
    group_id: Option<&[u8]>,
) -> Result<NewGroup, MlsError> {
    let config = create_config(&GroupMetadata::new(name), suite)?;
    let credential_with_key = credential_with_key(identity, signer);
    let group = match group_id {
        Some(group_id) => MlsGroup::new_with_group_id(
            provider,
            signer,
            &config,
            GroupId::from_slice(group_id),
            credential_with_key,
        ),
        None => MlsGroup::new(provider, signer, &config, credential_with_key),
    }
    .map_err(|error| MlsError::group("create the group", error))?;
    let group_info = group
        .export_group_info(provider.crypto(), signer, false)
        .map_err(|error| MlsError::group("export the group info", error))?
        .tls_serialize_detached()?;
    let ratchet_tree = group.export_ratchet_tree().tls_serialize_detached()?;
    Ok(NewGroup {
        group,
        group_info,
        ratchet_tree,
    })
}

/// The cipher suite of a group this device holds (one of Conclave's: the hub
/// registers no other).
pub(crate) fn group_cipher_suite(group: &MlsGroup) -> Option<CipherSuite> {
    CipherSuite::from_ciphersuite(group.ciphersuite()).ok()
}

/// The group stored under `group_id`, if this device has it.
pub(crate) fn load_group(
    provider: &MlsProvider<'_>,
    group_id: &[u8],
) -> Result<Option<MlsGroup>, MlsError> {
    Ok(MlsGroup::load(
        provider.storage(),
        &GroupId::from_slice(group_id),
    )?)
}

/// Deletes everything openmls stores about a group.
pub(crate) fn delete_group(
    provider: &MlsProvider<'_>,
    group: &mut MlsGroup,
) -> Result<(), MlsError> {
    Ok(group.delete(provider.storage())?)
}

/// Builds a commit and stages it as the group's pending commit. It stays pending
/// until [`merge_own_commit`] (the hub accepted it) or [`discard_own_commit`] (it
/// did not); openmls refuses a new commit while one is pending.
pub(crate) fn build_commit(
    group: &mut MlsGroup,
    provider: &MlsProvider<'_>,
    signer: &SignatureKeyPair,
    kind: CommitKind,
) -> Result<OutgoingCommit, MlsError> {
    let builder = group.commit_builder().consume_proposal_store(true);
    let builder = match kind {
        CommitKind::Add(key_packages) => builder.propose_adds(key_packages),
        CommitKind::Remove(leaves) => builder.propose_removals(leaves),
        CommitKind::SelfUpdate => builder.force_self_update(true),
        CommitKind::PendingProposals => builder,
    };
    let bundle = builder
        .load_psks(provider.storage())
        .map_err(|error| MlsError::group("build a commit", error))?
        .create_group_info(true)
        .build(provider.rand(), provider.crypto(), signer, |_| true)
        .map_err(|error| MlsError::group("build a commit", error))?
        .stage_commit(provider)
        .map_err(|error| MlsError::group("stage a commit", error))?;
    let (commit, welcome, group_info) = bundle.into_messages();
    let group_info = group_info.ok_or_else(|| {
        MlsError::group(
            "build a commit",
            "openmls made no group info although one was asked for",
        )
    })?;
    Ok(OutgoingCommit {
        commit: commit.tls_serialize_detached()?,
        welcome: welcome
            .as_ref()
            .map(MlsMessageOut::tls_serialize_detached)
            .transpose()?,
        group_info: group_info.tls_serialize_detached()?,
    })
}

/// Applies this device's pending commit once the hub accepted it. Does nothing if
/// it was merged already (say, by processing its echo from the hub).
pub(crate) fn merge_own_commit(
    group: &mut MlsGroup,
    provider: &MlsProvider<'_>,
) -> Result<(), MlsError> {
    group
        .merge_pending_commit(provider)
        .map_err(|error| MlsError::group("merge our commit", error))
}

/// Forgets this device's pending commit after the hub refused it.
pub(crate) fn discard_own_commit(
    group: &mut MlsGroup,
    provider: &MlsProvider<'_>,
) -> Result<(), MlsError> {
    Ok(group.clear_pending_commit(provider.storage())?)
}

/// A proposal to remove this device's own leaf, for another member to commit
/// (a member cannot commit its own removal). openmls keeps it in the proposal
/// store too, so the commit that covers it can be processed here.
pub(crate) fn leave_proposal(
    group: &mut MlsGroup,
    provider: &MlsProvider<'_>,
    signer: &SignatureKeyPair,
) -> Result<Vec<u8>, MlsError> {
    let proposal = group
        .leave_group(provider, signer)
        .map_err(|error| MlsError::group("propose to leave", error))?;
    Ok(proposal.tls_serialize_detached()?)
}

/// Forgets this device's own leave proposal (the hub did not take it), leaving
/// other members' proposals in the store.
pub(crate) fn discard_own_leave(
    group: &mut MlsGroup,
    provider: &MlsProvider<'_>,
) -> Result<(), MlsError> {
    let own_leaf = group.own_leaf_index();
    let own_proposals: Vec<_> = group
        .pending_proposals()
        .filter(
            |proposal| matches!(proposal.sender(), Sender::Member(sender) if *sender == own_leaf),
        )
        .map(|proposal| proposal.proposal_reference_ref().clone())
        .collect();
    for proposal_ref in own_proposals {
        group
            .remove_pending_proposal(provider.storage(), &proposal_ref)
            .map_err(|error| MlsError::group("forget our proposal", error))?;
    }
    Ok(())
}

/// Encrypts an application message (a PrivateMessage) for the current epoch.
/// openmls refuses while proposals are pending: they must be committed first.
pub(crate) fn encrypt(
    group: &mut MlsGroup,
    provider: &MlsProvider<'_>,
    signer: &SignatureKeyPair,
    plaintext: &[u8],
) -> Result<Vec<u8>, MlsError> {
    let message = group
        .create_message(provider, signer, plaintext)
        .map_err(|error| MlsError::group("encrypt a message", error))?;
    Ok(message.tls_serialize_detached()?)
}

/// Every member device, by leaf index. A leaf whose credential names no device
/// (which the hub never lets in) is left out.
pub(crate) fn members(group: &MlsGroup) -> Vec<MemberLeaf> {
    group
        .members()
        .filter_map(|member| {
            let identity = super::device_identity(&member.credential)?;
            Some(MemberLeaf {
                leaf_index: member.index,
                identity,
            })
        })
        .collect()
}

/// The group's name and other metadata, from its context.
pub(crate) fn metadata(group: &MlsGroup) -> GroupMetadata {
    from_group_context(group.public_group().group_context())
}

/// Whether this device's own proposal to leave is pending: then it must not
/// commit (it cannot commit its own removal) nor send.
pub(crate) fn is_leaving(group: &MlsGroup) -> bool {
    let own_leaf = group.own_leaf_index();
    group.pending_proposals().any(|proposal| {
        matches!(proposal.sender(), Sender::Member(sender) if *sender == own_leaf)
            && matches!(proposal.proposal(), Proposal::Remove(remove) if remove.removed() == own_leaf)
    })
}

/// Leaves that a proposal in the store removes already (a member's leave); a
/// commit must not name them again.
pub(crate) fn leaves_proposed_for_removal(group: &MlsGroup) -> Vec<LeafNodeIndex> {
    group
        .pending_proposals()
        .filter_map(|proposal| match proposal.proposal() {
            Proposal::Remove(remove) => Some(remove.removed()),
            _ => None,
        })
        .collect()
}

/// Whether other members' proposals wait in the store for someone to commit them.
pub(crate) fn has_proposals_to_commit(group: &MlsGroup) -> bool {
    let own_leaf = group.own_leaf_index();
    group
        .pending_proposals()
        .any(|proposal| !matches!(proposal.sender(), Sender::Member(sender) if *sender == own_leaf))
}
