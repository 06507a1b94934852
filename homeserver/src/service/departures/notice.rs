//! The hub writes a departure notice into a hosted group's log: for a device
//! of its own domain (`announce`), or of a peer's that told it
//! (AnnounceDeparture). One notice per device and group: its digest
//! (`rules::departure::notice_digest`) sits in the log's unique index.

use super::super::Context;
use crate::notify::Topic;
use crate::rules::departure::{
    AnnouncementRefusal, check_announcement, notice_digest, reason_text,
};
use crate::rules::ids::{GroupId, Seq};
use crate::store::{self, EventKind, Hosting, NewEvent, StoreError};
use conclave_core::ids::{CredentialIdentity, Domain};

/// What became of a notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Notice {
    /// Written at this position.
    Written(Seq),
    /// The group had one for the device already, at this position.
    AlreadyThere(Seq),
    /// The device is not a current member of the group: nothing to remove.
    NotAMember,
    /// No group with this id is hosted here.
    UnknownGroup,
}

/// Writes a departure notice for `departed` into hosted group `group_id`'s log,
/// unless the device is no current member or the group has one for it already.
/// `reason` is as `rules::departure::reason_text` made it.
pub(super) async fn post_notice(
    context: &Context,
    group_id: &GroupId,
    departed: &CredentialIdentity,
    reason: &str,
) -> Result<Notice, StoreError> {
    let transaction = context.store.begin().await?;
    let Some(group) = store::lock_group_header(&transaction, group_id, Hosting::HostedHere).await?
    else {
        return Ok(Notice::UnknownGroup);
    };
    let identity = departed.to_string();
    let is_member = store::find_member(&transaction, group.key, &identity)
        .await?
        .is_some_and(|member| member.is_current());
    if !is_member {
        return Ok(Notice::NotAMember);
    }
    let digest = notice_digest(departed);
    if let Some(seq) = store::find_event_by_digest(&transaction, group.key, &digest).await? {
        return Ok(Notice::AlreadyThere(seq));
    }
    let seq = group.last_seq.next();
    store::append_event(
        &transaction,
        NewEvent {
            group: group.key,
            seq,
            kind: EventKind::Departure,
            epoch: group.epoch,
            sender_identity: &identity,
            message: reason.as_bytes(),
            now_ms: context.now_ms(),
            trace_parent: context.trace_parent_for_outbox(),
            message_digest: Some(digest),
        },
    )
    .await?;
    store::update_group(
        &transaction,
        group.key,
        group.epoch,
        seq,
        store::NewState::Unchanged,
    )
    .await?;
    transaction.commit().await?;
    context.metrics.count_accepted(EventKind::Departure);
    context.notifier.publish(&Topic::Group(group.key));
    if context.federation.is_some() && store::has_followers(&context.store, group.key).await? {
        context.notifier.publish(&Topic::Outbox);
    }
    tracing::info!(group = %group_id, departed = %departed, %seq, "wrote a departure notice");
    Ok(Notice::Written(seq))
}

/// Why a peer's announcement was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AnnouncementError {
    #[error(transparent)]
    Refused(#[from] AnnouncementRefusal),
    /// The group is not hosted here, or the device is no current member of it
    /// (alike, so that group ids cannot be probed).
    #[error("group {0} is not hosted here or the device is no member of it")]
    UnknownGroup(GroupId),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// AnnounceDeparture at the hub: peer `caller` says its device `departed` left;
/// the group gets its notice. Returns the notice's position.
pub(crate) async fn accept_announcement(
    context: &Context,
    caller: &Domain,
    group_id: &GroupId,
    departed: &CredentialIdentity,
    reason: &str,
) -> Result<Seq, AnnouncementError> {
    check_announcement(&context.domain, caller, departed)?;
    match post_notice(context, group_id, departed, &reason_text(reason)).await? {
        Notice::Written(seq) | Notice::AlreadyThere(seq) => Ok(seq),
        Notice::NotAMember | Notice::UnknownGroup => {
            Err(AnnouncementError::UnknownGroup(group_id.clone()))
        }
    }
}
