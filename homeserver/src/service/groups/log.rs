//! What every hub use case shares: locking a hosted group and loading its public
//! state, and appending one entry to its log (with the idempotency record, the
//! commit of the transaction and the wake-ups).

use super::super::Context;
use super::super::InternalError;
use super::super::idempotency::{Outcome, Submission};
use super::{Accepted, GroupError};
use crate::notify::Topic;
use crate::rules::hub::HubGroup;
use crate::rules::ids::{Epoch, GroupId, GroupKey, Seq};
use crate::store::{self, EventKind, HostedGroup, NewEvent, NewState, Transaction};
use sha2::{Digest, Sha256};

/// Locks a group hosted here for the rest of the transaction.
pub(super) async fn lock_hosted_group(
    transaction: &Transaction,
    group_id: &GroupId,
) -> Result<HostedGroup, GroupError> {
    if group_id.is_empty() {
        return Err(GroupError::MissingField("group_id"));
    }
    store::lock_group(transaction, group_id)
        .await?
        .ok_or_else(|| GroupError::UnknownGroup(group_id.clone()))
}

/// The group's public MLS state.
pub(super) fn load_state(group: &HostedGroup) -> Result<HubGroup, GroupError> {
    HubGroup::from_state(&group.state).map_err(|error| {
        GroupError::Internal(InternalError::Corrupt(format!(
            "state of group {}: {error}",
            group.group_id
        )))
    })
}

/// The answer to a commit or proposal for an epoch another commit ended:
/// ABORTED with the winner's position, so the device can fetch and merge it.
pub(super) async fn lost_epoch(
    transaction: &Transaction,
    group: GroupKey,
    what: &'static str,
    message_epoch: u64,
    current_epoch: u64,
) -> Result<GroupError, GroupError> {
    let message_epoch = Epoch::new(message_epoch);
    let winning_commit_seq = store::commit_seq(transaction, group, message_epoch)
        .await?
        .unwrap_or_default();
    Ok(GroupError::CommitConflict {
        what,
        message_epoch,
        current_epoch: Epoch::new(current_epoch),
        winning_commit_seq,
    })
}

/// The SHA-256 of a message the hub accepts, unique per group in the log (the
/// index on `group_events (group_id, message_digest)`).
pub(super) fn message_digest(message: &[u8]) -> Vec<u8> {
    Sha256::digest(message).to_vec()
}

/// Refuses a message whose exact bytes are already in the group's log:
/// a member replaying another's ciphertext (which the hub would otherwise
/// record as its own), or a device resubmitting its own message under a new
/// idempotency key. MLS framing carries fresh randomness (a PrivateMessage's
/// reuse guard and generation, a PublicMessage's signature over its epoch), so
/// identical bytes are never two legitimate messages. Call after the group is
/// locked and the idempotency key was looked up (a retry with the same key gets
/// its first result, not this refusal).
pub(super) async fn check_not_replayed(
    transaction: &Transaction,
    group: GroupKey,
    message_digest: &[u8],
) -> Result<(), GroupError> {
    match store::find_event_by_digest(transaction, group, message_digest).await? {
        Some(seq) => Err(GroupError::Replayed { seq }),
        None => Ok(()),
    }
}

/// A log entry that changes nothing but the log (and, for a proposal, the stored
/// proposals): everything about a proposal or an application message after its
/// checks passed.
pub(super) struct LogAppend<'a> {
    pub(super) group: GroupKey,
    /// The commit whose Welcome row holds the group's state, if one does.
    pub(super) state_welcome_seq: Option<Seq>,
    pub(super) last_seq: Seq,
    pub(super) group_epoch: Epoch,
    /// The epoch the message was sent in (application messages may be a little
    /// behind the group).
    pub(super) message_epoch: Epoch,
    pub(super) kind: EventKind,
    pub(super) message: &'a [u8],
    /// The group's public state, when the submission changed it.
    pub(super) new_state: Option<Vec<u8>>,
}

/// Appends the entry at the next sequence number, records the idempotency key,
/// commits, and wakes the group's subscribers.
pub(super) async fn append_and_commit(
    context: &Context,
    transaction: Transaction,
    submission: &Submission<'_>,
    append: LogAppend<'_>,
) -> Result<Accepted, GroupError> {
    let seq = append.last_seq.next();
    let now_ms = context.now_ms();
    let digest = message_digest(append.message);
    check_not_replayed(&transaction, append.group, &digest).await?;
    store::append_event(
        &transaction,
        NewEvent {
            group: append.group,
            seq,
            kind: append.kind,
            epoch: append.message_epoch,
            sender_identity: submission.identity,
            message: append.message,
            now_ms,
            trace_parent: context.trace_parent_for_outbox(),
            message_digest: Some(digest),
        },
    )
    .await?;
    let state_changed = append.new_state.is_some();
    let new_state = append
        .new_state
        .map_or(NewState::Unchanged, NewState::InRow);
    store::update_group(
        &transaction,
        append.group,
        append.group_epoch,
        seq,
        new_state,
    )
    .await?;
    if let Some(previous) = append.state_welcome_seq.filter(|_| state_changed) {
        store::release_state_holder(&transaction, append.group, previous).await?;
    }
    let outcome = Outcome {
        group: append.group,
        seq,
        epoch: append.group_epoch,
    };
    submission.record(&transaction, outcome, now_ms).await?;
    transaction.commit().await?;
    context.metrics.count_accepted(append.kind);
    context.notifier.publish(&Topic::Group(append.group));
    wake_outbox_if_followed(context, append.group).await?;
    Ok(outcome.into())
}

/// Wakes the federation outbox if the group has follower domains.
pub(super) async fn wake_outbox_if_followed(
    context: &Context,
    group: GroupKey,
) -> Result<(), GroupError> {
    if context.federation.is_none() {
        return Ok(());
    }
    if store::has_followers(&context.store, group).await? {
        context.notifier.publish(&Topic::Outbox);
    }
    Ok(())
}
