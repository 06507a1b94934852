//! DeliverEvents at a follower: a batch from the group's hub goes into this
//! homeserver's copy of the log in one transaction, each `(group, seq)` once.

use super::super::Context;
use super::catch_up::repair;
use super::{Applied, FollowerError, IncomingBatch, check_wire_batch, log_refusal};
use crate::notify::Topic;
use crate::rules::follower_batch::InvalidBatch;
use crate::rules::follower_batch::{CheckedEvent, CheckedKind};
use crate::rules::ids::{GroupId, Seq};
use crate::store::{
    self, EventKind, GroupHeader, Hosting, NewEvent, NewInboxEvent, NewMember, StoreError,
    Transaction,
};
use conclave_core::ids::{CredentialIdentity, Domain};
use std::collections::BTreeSet;

/// Applies a batch from the group's hub; returns the copy's newest sequence
/// number, which the hub continues after.
pub(crate) async fn apply_batch(
    context: &Context,
    batch: IncomingBatch,
) -> Result<Seq, FollowerError> {
    let (hub, mls_group_id) = (batch.hub.clone(), batch.mls_group_id.clone());
    let result = apply_checked_batch(context, batch).await;
    if let Err(error) = &result {
        log_refusal(&hub, &mls_group_id, error);
    }
    result
}

async fn apply_checked_batch(
    context: &Context,
    batch: IncomingBatch,
) -> Result<Seq, FollowerError> {
    let events = check_wire_batch(&context.domain, &batch.mls_group_id, batch.events)?;
    let group = batch.mls_group_id.clone();
    let member_count = batch.member_count;
    // Stored as a signed 64-bit integer, like every counter.
    if i64::try_from(member_count).is_err() {
        return Err(InvalidBatch(format!("member_count {member_count} is out of range")).into());
    }
    let (hub, mls_group_id) = (&batch.hub, &batch.mls_group_id);
    match apply_events(context, hub, mls_group_id, &events, member_count, false).await? {
        Applied::Through(last_seq) => Ok(last_seq),
        Applied::Gap { have } => {
            let first_seq = events.first().map_or(Seq::ZERO, |event| event.seq);
            let allow_gap = repair(context, hub, mls_group_id, have, first_seq).await?;
            match apply_events(context, hub, mls_group_id, &events, member_count, allow_gap).await?
            {
                Applied::Through(last_seq) => Ok(last_seq),
                Applied::Gap { have } => Err(FollowerError::RepairFailed {
                    group,
                    have,
                    reason: "the hub's events did not close the gap".to_owned(),
                }),
            }
        }
    }
}

/// Applies checked events in one transaction.
pub(super) async fn apply_events(
    context: &Context,
    hub: &Domain,
    mls_group_id: &GroupId,
    events: &[CheckedEvent],
    member_count: u64,
    allow_gap: bool,
) -> Result<Applied, FollowerError> {
    let group_name = mls_group_id.clone();
    let transaction = context.store.begin().await?;
    let group = match store::lock_group_header(&transaction, mls_group_id, Hosting::Any).await? {
        Some(group) => {
            if group.hub_domain.as_deref() != Some(hub.as_str()) {
                return Err(FollowerError::NotTheHub {
                    group: group_name,
                    actual: group
                        .hub_domain
                        .unwrap_or_else(|| context.domain.to_string()),
                    sender: hub.to_string(),
                });
            }
            group
        }
        None => create_copy(context, &transaction, hub, mls_group_id, events).await?,
    };
    let new_events: Vec<&CheckedEvent> = events
        .iter()
        .filter(|event| event.seq > group.last_seq)
        .collect();
    let Some(first) = new_events.first() else {
        // All seen before: a repeated batch.
        return Ok(Applied::Through(group.last_seq));
    };
    let has_members = store::member_count(&transaction, group.key).await? > 0;
    let adds_members = adds_local_devices(&transaction, first).await?;
    if !has_members && !adds_members {
        return Err(FollowerError::NotFollowed {
            group: group_name,
            own: context.domain.to_string(),
        });
    }
    // A domain whose devices all left and that is added again continues at the
    // commit that adds it: the events between are none of its business.
    let rejoins = !has_members && adds_members;
    if first.seq != group.last_seq.next() && !rejoins && !allow_gap {
        return Ok(Applied::Gap {
            have: group.last_seq,
        });
    }

    let now_ms = context.now_ms();
    let mut epoch = group.epoch;
    let mut last_seq = group.last_seq;
    let mut woken_inboxes = Vec::new();
    let mut rows = Vec::with_capacity(new_events.len());
    // The trace of the request that brought the batch (a DeliverEvents in the
    // hub's trace of its first event, or this server's catch-up).
    let delivery_traceparent = conclave_federation::trace_context::current_traceparent();
    for event in new_events {
        rows.push(NewEvent {
            group: group.key,
            seq: event.seq,
            kind: event_kind(event.kind),
            epoch: event.epoch,
            sender_identity: &event.sender,
            message: &event.message,
            now_ms,
            // The trace the hub accepted it in, which the recipients'
            // streams continue.
            trace_parent: conclave_federation::trace_context::delivered_event_traceparent(
                event.traceparent.as_deref(),
                delivery_traceparent.as_deref(),
            ),
            // The hub judged replays; its copy's order is what counts here.
            message_digest: None,
        });
        last_seq = event.seq;
        epoch = epoch.max(event.epoch);
        if event.kind == CheckedKind::Departure {
            refuse_notice_for_a_live_device(context, &transaction, event).await?;
        }
        if event.kind != CheckedKind::Commit {
            continue;
        }
        epoch = epoch.max(event.epoch.next());
        for identity in &event.removed {
            store::mark_removed(&transaction, group.key, &identity.to_string(), event.seq).await?;
        }
        // The devices here whose key packages the Welcome is addressed to, of
        // those the directory handed to the hub's domain or the committer's (who
        // claims the packages it adds).
        let committer_domain = event
            .sender
            .parse::<CredentialIdentity>()
            .map(|sender| sender.user_id().domain().to_string())
            .unwrap_or_default();
        let mut claimer_domains = vec![hub.as_str()];
        if !committer_domain.is_empty() && committer_domain != hub.as_str() {
            claimer_domains.push(committer_domain.as_str());
        }
        let welcomed: BTreeSet<String> = if event.welcome.is_some() {
            store::packages_claimed_by(&transaction, &event.welcome_recipients, &claimer_domains)
                .await?
                .into_iter()
                .map(|(_, device_id)| device_id)
                .collect()
        } else {
            BTreeSet::new()
        };
        for identity in &event.added {
            if !is_local_device(&transaction, identity).await? {
                // Gone since it was added (logged out): nothing to deliver to.
                continue;
            }
            let device_id = identity.device_id().as_str();
            let member = NewMember {
                identity: &identity.to_string(),
                user_id: &identity.user_id().to_string(),
                device_id,
                joined_after_seq: event.seq,
                remote_domain: None,
            };
            if event.welcome.is_some() && !welcomed.contains(device_id) {
                return Err(FollowerError::UnclaimedWelcome {
                    seq: event.seq,
                    device: identity.to_string(),
                    claimers: claimer_domains.join(" or "),
                });
            }
            store::upsert_member(&transaction, group.key, member).await?;
            if let Some((welcome, ratchet_tree)) = &event.welcome {
                let inbox_event = NewInboxEvent {
                    device_id,
                    group: group.key,
                    commit_seq: event.seq,
                    welcome,
                    ratchet_tree,
                    now_ms,
                };
                store::append_inbox_event(&transaction, inbox_event).await?;
                woken_inboxes.push(device_id.to_owned());
            }
        }
    }
    // One statement for the batch's log rows (member and inbox rows refer to
    // the group, not to these).
    store::append_events(&transaction, rows).await?;
    let member_count = if member_count > 0 {
        member_count
    } else {
        group.hub_member_count.unwrap_or_default()
    };
    store::update_follower_group(&transaction, group.key, epoch, last_seq, member_count).await?;
    transaction.commit().await?;
    context.notifier.publish(&Topic::Group(group.key));
    for device_id in woken_inboxes {
        context.notifier.publish(&Topic::Inbox(device_id));
    }
    tracing::debug!(hub_domain = %hub, group = %group_name, %last_seq, "applied events from the hub");
    Ok(Applied::Through(last_seq))
}

/// Makes the copy of a group first heard of: only if its first event is a
/// commit adding a device of this domain.
async fn create_copy(
    context: &Context,
    transaction: &Transaction,
    hub: &Domain,
    mls_group_id: &GroupId,
    events: &[CheckedEvent],
) -> Result<GroupHeader, FollowerError> {
    let group_name = mls_group_id.clone();
    let not_followed = || FollowerError::NotFollowed {
        group: group_name.clone(),
        own: context.domain.to_string(),
    };
    let first = events.first().ok_or_else(not_followed)?;
    if !adds_local_devices(transaction, first).await? {
        return Err(not_followed());
    }
    store::insert_follower_group(
        transaction,
        mls_group_id,
        hub.as_str(),
        &first.sender,
        context.now_ms(),
    )
    .await?
    .ok_or_else(|| FollowerError::Busy(group_name.clone()))?;
    store::lock_group_header(transaction, mls_group_id, Hosting::Any)
        .await?
        .ok_or_else(|| FollowerError::Busy(group_name))
}

/// True if the event is a commit adding at least one current device of this
/// homeserver.
async fn adds_local_devices(
    transaction: &Transaction,
    event: &CheckedEvent,
) -> Result<bool, FollowerError> {
    if event.kind != CheckedKind::Commit {
        return Ok(false);
    }
    for identity in &event.added {
        if is_local_device(transaction, identity).await? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// A departure notice naming a device of this domain is true only once this
/// domain deleted the device (and told the hub): members' clients remove the
/// device on the notice's word, so a hub must not be able to have this
/// domain's live devices removed by writing one of its own. The batch is
/// refused (and the hub's outbox ends the group's delivery here).
async fn refuse_notice_for_a_live_device(
    context: &Context,
    transaction: &Transaction,
    event: &CheckedEvent,
) -> Result<(), FollowerError> {
    let Ok(departed) = event.sender.parse::<CredentialIdentity>() else {
        // The batch's check parsed it already.
        return Ok(());
    };
    if departed.user_id().domain() == &context.domain
        && is_local_device(transaction, &departed).await?
    {
        return Err(InvalidBatch(format!(
            "event {}: a departure notice for {departed}, a device of this domain that has not departed",
            event.seq
        ))
        .into());
    }
    Ok(())
}

async fn is_local_device(
    transaction: &Transaction,
    identity: &CredentialIdentity,
) -> Result<bool, StoreError> {
    store::device_of_user(
        transaction,
        identity.device_id().as_str(),
        identity.user_id().username().as_str(),
    )
    .await
}

fn event_kind(kind: CheckedKind) -> EventKind {
    match kind {
        CheckedKind::Commit => EventKind::Commit,
        CheckedKind::Proposal => EventKind::Proposal,
        CheckedKind::Application => EventKind::Application,
        CheckedKind::Departure => EventKind::Departure,
    }
}
