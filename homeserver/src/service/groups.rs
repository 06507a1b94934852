//! The hub: creating groups and accepting commits, proposals and application
//! messages for groups hosted here. Each submission is one transaction: lock the
//! group's row, apply `rules::hub`, check new leaves against the directory, append
//! to the log, save, record the idempotency key, commit; then wake subscribers.

use super::accounts::AuthenticatedDevice;
use super::idempotency::{IdempotencyError, Outcome, Submission};
use super::{Context, InternalError};
use crate::notify::Topic;
use crate::rules::hub::{
    CommitDecision, CommitSubmission, HubGroup, HubRejection, NewLeaf, PastEpochWindow,
    check_application_message,
};
use crate::store::{self, EventKind, GroupRecord, NewEvent, StoreError};
use conclave_core::ids::CredentialIdentity;

/// Why a group submission failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum GroupError {
    /// The MLS content was refused by the hub's rules.
    #[error(transparent)]
    Rejected(#[from] HubRejection),
    #[error(transparent)]
    Idempotency(#[from] IdempotencyError),
    /// A required field is empty.
    #[error("{0} is required")]
    MissingField(&'static str),
    /// No group with this id is hosted here, or the caller may not see it.
    #[error("group {0} does not exist")]
    UnknownGroup(String),
    /// The group id is taken.
    #[error("group {0} already exists")]
    GroupExists(String),
    /// Another commit won the epoch this commit was for.
    #[error(
        "commit is for epoch {message_epoch} but the group is at epoch {current_epoch}: the commit at sequence number {winning_commit_seq} won; fetch it, merge it and retry"
    )]
    CommitConflict {
        message_epoch: u64,
        current_epoch: u64,
        winning_commit_seq: u64,
    },
    /// The caller is not (or no longer) a member.
    #[error("you are not a member of group {0}")]
    NotAMember(String),
    /// A new leaf names a device that is not registered with that key.
    #[error("{identity} is not a registered device with this signature key")]
    UnregisteredDevice { identity: String },
    /// A new leaf belongs to another domain. Refused until the federation outbox
    /// exists: such a member could be validated but would never receive anything.
    #[error(
        "{identity} belongs to domain {domain}: members on other domains need the federation outbox, which is not available yet"
    )]
    ForeignDevice { identity: String, domain: String },
    /// An Add uses a key package that was not handed out by the directory.
    #[error("the key package added for {identity} was not claimed through the directory")]
    UnclaimedKeyPackage { identity: String },
    /// Too many proposals wait for a commit in this epoch.
    #[error("the group already has {limit} proposals waiting for a commit in this epoch")]
    TooManyProposals { limit: u64 },
    /// The group would exceed the configured size.
    #[error("the group would have {would_have} members, more than the limit of {limit}")]
    TooManyMembers { would_have: u64, limit: u64 },
    #[error(transparent)]
    Internal(#[from] InternalError),
}

impl From<StoreError> for GroupError {
    fn from(error: StoreError) -> Self {
        GroupError::Internal(error.into())
    }
}

/// Where an accepted submission landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Accepted {
    pub(crate) seq: u64,
    pub(crate) epoch: u64,
}

impl From<Outcome> for Accepted {
    fn from(outcome: Outcome) -> Self {
        Accepted {
            seq: u64::try_from(outcome.seq).unwrap_or(0),
            epoch: u64::try_from(outcome.epoch).unwrap_or(0),
        }
    }
}

/// Proposals a group may collect in one epoch: each is kept in the group's state
/// until a commit covers it, so an unbounded number would grow every load and save.
const MAX_PROPOSALS_PER_EPOCH: u64 = 100;

fn group_name(mls_group_id: &[u8]) -> String {
    hex::encode(mls_group_id)
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

pub(crate) struct NewGroup {
    pub(crate) idempotency_key: Vec<u8>,
    pub(crate) group_info: Vec<u8>,
    pub(crate) ratchet_tree: Vec<u8>,
}

/// Registers a group whose only member is the calling device.
pub(crate) async fn create(
    context: &Context,
    device: &AuthenticatedDevice,
    request: NewGroup,
) -> Result<(Vec<u8>, u64), GroupError> {
    let identity = device.identity.to_string();
    let submission = Submission::new(
        &identity,
        &request.idempotency_key,
        "create",
        &[&request.group_info, &request.ratchet_tree],
    )?;
    if let Some(created) = previous_creation(context, &submission).await? {
        return Ok(created);
    }
    let hub_group = HubGroup::create(&request.group_info, &request.ratchet_tree, &device.identity)?;
    let mls_group_id = hub_group.group_id();
    let epoch = hub_group.epoch();
    let now_ms = context.now_ms();
    let transaction = context.store.begin().await?;
    let group = store::insert_group(
        &transaction,
        &mls_group_id,
        to_i64(epoch),
        hub_group.to_state(),
        &identity,
        now_ms,
    )
    .await?;
    let Some(group) = group else {
        drop(transaction);
        // A retry that raced its original finds the original's result here.
        return match previous_creation(context, &submission).await? {
            Some(created) => Ok(created),
            None => Err(GroupError::GroupExists(group_name(&mls_group_id))),
        };
    };
    add_member(&transaction, group.id, &device.identity, 0).await?;
    submission
        .record(
            &transaction,
            Outcome {
                group_row_id: group.id,
                seq: 0,
                epoch: to_i64(epoch),
            },
            now_ms,
        )
        .await?;
    transaction.commit().await.map_err(StoreError::from)?;
    tracing::info!(group = %group_name(&mls_group_id), creator = %identity, "group created");
    Ok((mls_group_id, epoch))
}

/// The group and epoch an earlier identical CreateGroup produced.
async fn previous_creation(
    context: &Context,
    submission: &Submission<'_>,
) -> Result<Option<(Vec<u8>, u64)>, GroupError> {
    let connection = context.store.connection();
    let Some(previous) = submission.previous_outcome(connection).await? else {
        return Ok(None);
    };
    let outcome = previous?;
    let group = store::find_group_headers(connection, vec![outcome.group_row_id])
        .await?
        .pop()
        .ok_or_else(|| {
            GroupError::Internal(InternalError::Corrupt(
                "an idempotency record names a group that does not exist".to_owned(),
            ))
        })?;
    Ok(Some((group.mls_group_id, Accepted::from(outcome).epoch)))
}

async fn add_member(
    transaction: &store::Transaction,
    group_row_id: i64,
    identity: &CredentialIdentity,
    joined_after_seq: i64,
) -> Result<(), StoreError> {
    store::upsert_member(
        transaction,
        group_row_id,
        &identity.to_string(),
        &identity.user_id().to_string(),
        identity.device_id().as_str(),
        joined_after_seq,
    )
    .await
}

pub(crate) struct NewCommit {
    pub(crate) idempotency_key: Vec<u8>,
    pub(crate) group_id: Vec<u8>,
    pub(crate) commit: Vec<u8>,
    pub(crate) welcome: Option<Vec<u8>>,
    pub(crate) group_info: Vec<u8>,
}

/// Accepts a commit for the group's current epoch, or explains why not.
pub(crate) async fn submit_commit(
    context: &Context,
    device: &AuthenticatedDevice,
    request: NewCommit,
) -> Result<Accepted, GroupError> {
    if request.commit.is_empty() {
        return Err(GroupError::MissingField("commit"));
    }
    if request.group_info.is_empty() {
        return Err(GroupError::MissingField("group_info"));
    }
    let identity = device.identity.to_string();
    let welcome = request.welcome.as_deref().unwrap_or_default();
    let submission = Submission::new(
        &identity,
        &request.idempotency_key,
        "commit",
        &[
            &request.group_id,
            &request.commit,
            &[u8::from(request.welcome.is_some())],
            welcome,
            &request.group_info,
        ],
    )?;
    let transaction = context.store.begin().await?;
    // The idempotency check comes after the lock: a retry racing its original
    // then waits for it and finds its outcome, instead of being judged on its own.
    let group = lock_group(&transaction, &request.group_id).await?;
    if let Some(previous) = submission.previous_outcome(&transaction).await? {
        return Ok(previous?.into());
    }
    let mut hub_group = load_state(&group)?;
    let decision = match hub_group.check_commit(&CommitSubmission {
        sender: &device.identity,
        commit: &request.commit,
        welcome: request.welcome.as_deref(),
        group_info: &request.group_info,
    }) {
        Ok(decision) => decision,
        Err(HubRejection::StaleEpoch {
            message_epoch,
            current_epoch,
        }) => {
            let winning_commit_seq =
                store::commit_seq(&transaction, group.id, to_i64(message_epoch))
                    .await?
                    .unwrap_or_default();
            return Err(GroupError::CommitConflict {
                message_epoch,
                current_epoch,
                winning_commit_seq: u64::try_from(winning_commit_seq).unwrap_or(0),
            });
        }
        Err(rejection) => return Err(rejection.into()),
    };
    check_new_leaves(context, &transaction, &decision).await?;
    check_group_size(context, &transaction, group.id, &decision).await?;

    let seq = group.last_seq + 1;
    let ended_epoch = group.epoch;
    if !store::insert_commit(&transaction, group.id, ended_epoch, seq).await? {
        // The row lock makes this unreachable in practice; the primary key is the
        // guarantee if the lock is ever bypassed.
        let winning_commit_seq = store::commit_seq(&transaction, group.id, ended_epoch)
            .await?
            .unwrap_or_default();
        return Err(GroupError::CommitConflict {
            message_epoch: u64::try_from(ended_epoch).unwrap_or(0),
            current_epoch: u64::try_from(ended_epoch).unwrap_or(0),
            winning_commit_seq: u64::try_from(winning_commit_seq).unwrap_or(0),
        });
    }
    let now_ms = context.now_ms();
    store::append_event(
        &transaction,
        NewEvent {
            group_row_id: group.id,
            seq,
            kind: EventKind::Commit,
            epoch: ended_epoch,
            sender_identity: &identity,
            message: &request.commit,
            now_ms,
        },
    )
    .await?;
    let removed = decision.removed.clone();
    let added = decision.added.clone();
    let joiner = decision.external.then(|| device.identity.clone());
    let new_epoch = decision.new_epoch;
    hub_group.apply_commit(decision)?;
    store::update_group(
        &transaction,
        group.id,
        to_i64(new_epoch),
        seq,
        Some(hub_group.to_state()),
    )
    .await?;
    for identity in &removed {
        store::mark_removed(&transaction, group.id, &identity.to_string(), seq).await?;
    }
    for leaf in &added {
        add_member(&transaction, group.id, &leaf.identity, seq).await?;
    }
    if let Some(joiner) = &joiner {
        add_member(&transaction, group.id, joiner, seq).await?;
    }
    let mut woken_inboxes = Vec::new();
    if let Some(welcome) = &request.welcome {
        let ratchet_tree = hub_group.ratchet_tree();
        for leaf in &added {
            let device_id = leaf.identity.device_id().as_str();
            store::append_inbox_event(
                &transaction,
                device_id,
                group.id,
                seq,
                welcome,
                &ratchet_tree,
                now_ms,
            )
            .await?;
            woken_inboxes.push(device_id.to_owned());
        }
    }
    let outcome = Outcome {
        group_row_id: group.id,
        seq,
        epoch: to_i64(new_epoch),
    };
    submission.record(&transaction, outcome, now_ms).await?;
    transaction.commit().await.map_err(StoreError::from)?;

    context.notifier.publish(&Topic::Group(group.id));
    for device_id in woken_inboxes {
        context.notifier.publish(&Topic::Inbox(device_id));
    }
    tracing::debug!(group = %group_name(&group.mls_group_id), seq, epoch = new_epoch, committer = %identity, "commit accepted");
    Ok(outcome.into())
}

async fn lock_group(
    transaction: &store::Transaction,
    mls_group_id: &[u8],
) -> Result<GroupRecord, GroupError> {
    if mls_group_id.is_empty() {
        return Err(GroupError::MissingField("group_id"));
    }
    store::lock_group(transaction, mls_group_id)
        .await?
        .ok_or_else(|| GroupError::UnknownGroup(group_name(mls_group_id)))
}

fn load_state(group: &GroupRecord) -> Result<HubGroup, GroupError> {
    HubGroup::from_state(&group.state).map_err(|error| {
        GroupError::Internal(InternalError::Corrupt(format!(
            "state of group {}: {error}",
            group_name(&group.mls_group_id)
        )))
    })
}

/// Every new or changed leaf must be a device registered here with exactly that
/// signature key, and every Add must use a key package the directory handed out.
async fn check_new_leaves(
    context: &Context,
    transaction: &store::Transaction,
    decision: &CommitDecision,
) -> Result<(), GroupError> {
    for leaf in decision.added.iter().chain(&decision.changed_leaves) {
        check_registered(context, transaction, leaf).await?;
    }
    for leaf in &decision.added {
        let claimed = match &leaf.key_package_ref {
            Some(hash_ref) => store::key_package_was_claimed(transaction, hash_ref).await?,
            None => false,
        };
        if !claimed {
            return Err(GroupError::UnclaimedKeyPackage {
                identity: leaf.identity.to_string(),
            });
        }
    }
    Ok(())
}

/// The Authentication Service check of one leaf. Leaves of other domains are the
/// federation issue's seam: their homeserver will be asked.
async fn check_registered(
    context: &Context,
    transaction: &store::Transaction,
    leaf: &NewLeaf,
) -> Result<(), GroupError> {
    let domain = leaf.identity.user_id().domain();
    if domain != &context.domain {
        return Err(GroupError::ForeignDevice {
            identity: leaf.identity.to_string(),
            domain: domain.to_string(),
        });
    }
    let registered = store::device_has_key(
        transaction,
        leaf.identity.device_id().as_str(),
        leaf.identity.user_id().username().as_str(),
        &leaf.signature_key,
    )
    .await?;
    if registered {
        Ok(())
    } else {
        Err(GroupError::UnregisteredDevice {
            identity: leaf.identity.to_string(),
        })
    }
}

async fn check_group_size(
    context: &Context,
    transaction: &store::Transaction,
    group_row_id: i64,
    decision: &CommitDecision,
) -> Result<(), GroupError> {
    let limit = context.config.groups.max_members;
    let current = store::member_count(transaction, group_row_id).await?;
    let would_have = (current + decision.added.len() as u64 + u64::from(decision.external))
        .saturating_sub(decision.removed.len() as u64);
    if would_have > limit {
        return Err(GroupError::TooManyMembers { would_have, limit });
    }
    Ok(())
}

pub(crate) struct NewProposal {
    pub(crate) idempotency_key: Vec<u8>,
    pub(crate) group_id: Vec<u8>,
    pub(crate) proposal: Vec<u8>,
}

/// Accepts a proposal by reference for the current epoch.
pub(crate) async fn submit_proposal(
    context: &Context,
    device: &AuthenticatedDevice,
    request: NewProposal,
) -> Result<Accepted, GroupError> {
    if request.proposal.is_empty() {
        return Err(GroupError::MissingField("proposal"));
    }
    let identity = device.identity.to_string();
    let submission = Submission::new(
        &identity,
        &request.idempotency_key,
        "proposal",
        &[&request.group_id, &request.proposal],
    )?;
    let transaction = context.store.begin().await?;
    // The idempotency check comes after the lock: a retry racing its original
    // then waits for it and finds its outcome, instead of being judged on its own.
    let group = lock_group(&transaction, &request.group_id).await?;
    if let Some(previous) = submission.previous_outcome(&transaction).await? {
        return Ok(previous?.into());
    }
    // The epoch began with the commit that ended the previous one (or with the
    // group, at sequence number 0).
    let epoch_start_seq = store::commit_seq(&transaction, group.id, group.epoch - 1)
        .await?
        .unwrap_or(0);
    let pending =
        store::count_events_after(&transaction, group.id, EventKind::Proposal, epoch_start_seq)
            .await?;
    if pending >= MAX_PROPOSALS_PER_EPOCH {
        return Err(GroupError::TooManyProposals {
            limit: MAX_PROPOSALS_PER_EPOCH,
        });
    }
    let mut hub_group = load_state(&group)?;
    hub_group.add_proposal(&device.identity, &request.proposal)?;
    let accepted = append_and_commit(
        context,
        transaction,
        &submission,
        LogAppend {
            group_row_id: group.id,
            last_seq: group.last_seq,
            group_epoch: group.epoch,
            message_epoch: group.epoch,
            kind: EventKind::Proposal,
            message: &request.proposal,
            new_state: Some(hub_group.to_state()),
        },
    )
    .await?;
    Ok(accepted)
}

/// A log entry that changes nothing but the log (and, for a proposal, the stored
/// proposals): everything about a proposal or an application message after its
/// checks passed.
struct LogAppend<'a> {
    group_row_id: i64,
    last_seq: i64,
    group_epoch: i64,
    /// The epoch the message was sent in (application messages may be a little
    /// behind the group).
    message_epoch: i64,
    kind: EventKind,
    message: &'a [u8],
    /// The group's public state, when the submission changed it.
    new_state: Option<Vec<u8>>,
}

/// Appends the entry at the next sequence number, records the idempotency key,
/// commits, and wakes the group's subscribers.
async fn append_and_commit(
    context: &Context,
    transaction: store::Transaction,
    submission: &Submission<'_>,
    append: LogAppend<'_>,
) -> Result<Accepted, GroupError> {
    let seq = append.last_seq + 1;
    let now_ms = context.now_ms();
    store::append_event(
        &transaction,
        NewEvent {
            group_row_id: append.group_row_id,
            seq,
            kind: append.kind,
            epoch: append.message_epoch,
            sender_identity: submission.identity,
            message: append.message,
            now_ms,
        },
    )
    .await?;
    store::update_group(
        &transaction,
        append.group_row_id,
        append.group_epoch,
        seq,
        append.new_state,
    )
    .await?;
    let outcome = Outcome {
        group_row_id: append.group_row_id,
        seq,
        epoch: append.group_epoch,
    };
    submission.record(&transaction, outcome, now_ms).await?;
    transaction.commit().await.map_err(StoreError::from)?;
    context.notifier.publish(&Topic::Group(append.group_row_id));
    Ok(outcome.into())
}

pub(crate) struct NewMessage {
    pub(crate) idempotency_key: Vec<u8>,
    pub(crate) group_id: Vec<u8>,
    pub(crate) message: Vec<u8>,
}

/// Accepts an application message from a current member. Costs a constant number
/// of writes whatever the group's size: the log entry, the group's counter and the
/// idempotency record; the group's (large) state is neither read nor written.
pub(crate) async fn send_message(
    context: &Context,
    device: &AuthenticatedDevice,
    request: NewMessage,
) -> Result<Accepted, GroupError> {
    if request.message.is_empty() {
        return Err(GroupError::MissingField("message"));
    }
    if request.group_id.is_empty() {
        return Err(GroupError::MissingField("group_id"));
    }
    let identity = device.identity.to_string();
    let submission = Submission::new(
        &identity,
        &request.idempotency_key,
        "message",
        &[&request.group_id, &request.message],
    )?;
    let transaction = context.store.begin().await?;
    let group = store::lock_group_header(&transaction, &request.group_id)
        .await?
        .ok_or_else(|| GroupError::UnknownGroup(group_name(&request.group_id)))?;
    // After the lock, for the reason given in `submit_commit`.
    if let Some(previous) = submission.previous_outcome(&transaction).await? {
        return Ok(previous?.into());
    }
    let is_member = store::find_member(&transaction, group.id, &identity)
        .await?
        .is_some_and(|member| member.removed_at_seq.is_none());
    if !is_member {
        return Err(GroupError::NotAMember(group_name(&request.group_id)));
    }
    let message_epoch = check_application_message(
        &request.message,
        &group.mls_group_id,
        u64::try_from(group.epoch).unwrap_or(0),
        PastEpochWindow(context.config.groups.past_epoch_window),
    )?;
    append_and_commit(
        context,
        transaction,
        &submission,
        LogAppend {
            group_row_id: group.id,
            last_seq: group.last_seq,
            group_epoch: group.epoch,
            message_epoch: to_i64(message_epoch),
            kind: EventKind::Application,
            message: &request.message,
            new_state: None,
        },
    )
    .await
}

/// The newest GroupInfo and tree, for devices of member users only.
pub(crate) async fn group_info(
    context: &Context,
    device: &AuthenticatedDevice,
    mls_group_id: &[u8],
) -> Result<(Vec<u8>, Vec<u8>, u64), GroupError> {
    let connection = context.store.connection();
    let unknown = || GroupError::UnknownGroup(group_name(mls_group_id));
    let group = store::find_group(connection, mls_group_id)
        .await?
        .ok_or_else(unknown)?;
    // Not a member user: answer as if the group did not exist, so group ids cannot
    // be probed.
    if !store::user_is_member(connection, group.id, &device.user_id().to_string()).await? {
        return Err(unknown());
    }
    let hub_group = load_state(&group)?;
    Ok((
        hub_group.group_info(),
        hub_group.ratchet_tree(),
        hub_group.epoch(),
    ))
}

/// One of the caller's groups.
#[derive(Debug)]
pub(crate) struct GroupSummary {
    pub(crate) mls_group_id: Vec<u8>,
    pub(crate) epoch: u64,
    pub(crate) member_count: u64,
    pub(crate) last_seq: u64,
    pub(crate) acked_seq: u64,
}

pub(crate) async fn list(
    context: &Context,
    device: &AuthenticatedDevice,
) -> Result<Vec<GroupSummary>, GroupError> {
    let connection = context.store.connection();
    let memberships: Vec<_> = store::memberships_of_device(connection, device.device_id().as_str())
        .await?
        .into_iter()
        .filter(|member| member.removed_at_seq.is_none())
        .collect();
    let headers = store::find_group_headers(
        connection,
        memberships.iter().map(|member| member.group_id).collect(),
    )
    .await?;
    let mut summaries = Vec::with_capacity(headers.len());
    for header in headers {
        let acked_seq = memberships
            .iter()
            .find(|member| member.group_id == header.id)
            .map_or(0, |member| member.acked_seq);
        summaries.push(GroupSummary {
            member_count: store::member_count(connection, header.id).await?,
            mls_group_id: header.mls_group_id,
            epoch: u64::try_from(header.epoch).unwrap_or(0),
            last_seq: u64::try_from(header.last_seq).unwrap_or(0),
            acked_seq: u64::try_from(acked_seq).unwrap_or(0),
        });
    }
    Ok(summaries)
}
