//! Delivery to a device: what lies after its cursors (its groups' logs and its
//! inbox), polled with [`fetch`] or streamed with [`subscribe`], and [`ack`] to move
//! the cursors. A device receives a group's events after the commit that added it,
//! up to and including the commit that removed it.

use super::accounts::AuthenticatedDevice;
use super::{Context, InternalError};
use crate::notify::Topic;
use crate::rules::delivery::{AckCheck, check_ack, unread_window};
use crate::rules::ids::{GroupId, GroupKey, Seq};
use crate::store::{self, EventKind, InboxEvent, LogEvent, Membership, StoreError};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{Notify, mpsc};

/// Most events in one page.
pub(crate) const MAX_PAGE: u64 = 1000;
/// Page size when the client does not say.
pub(crate) const DEFAULT_PAGE: u64 = 100;
/// Events buffered per subscriber: a slow consumer fills its own buffer and waits,
/// and nobody else does.
pub(crate) const SUBSCRIBER_BUFFER: usize = 64;

/// Why a delivery request failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DeliveryError {
    /// No group with this id is known here.
    #[error("group {0} does not exist")]
    UnknownGroup(GroupId),
    /// The group exists but the device never was a member.
    #[error("you are not a member of group {0}")]
    NotAMember(GroupId),
    #[error(transparent)]
    AckBeyondEnd(#[from] AckCheck),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Internal(#[from] InternalError),
}

/// One event for a device, with the group's MLS id for group events.
#[derive(Debug, Clone)]
pub(crate) enum Delivery {
    Group {
        group_id: Arc<GroupId>,
        event: LogEvent,
    },
    Inbox {
        group_id: GroupId,
        event: InboxEvent,
    },
}

/// How far a device has been served, per group and in its inbox.
#[derive(Debug, Default)]
struct Positions {
    inbox: Seq,
    groups: HashMap<GroupKey, Seq>,
}

/// Reads up to `limit` events after the positions, inbox first (a Welcome must be
/// processed before the group's events make sense), and advances the positions.
async fn read_page(
    context: &Context,
    device_id: &str,
    positions: &mut Positions,
    memberships: &[Membership],
    group_ids: &HashMap<GroupKey, Arc<GroupId>>,
    limit: u64,
) -> Result<Vec<Delivery>, DeliveryError> {
    let connection = &context.store;
    let mut page = Vec::new();
    for event in store::inbox_events_after(connection, device_id, positions.inbox, limit).await? {
        positions.inbox = event.seq;
        let group_id = store::find_group_headers(connection, &[event.group])
            .await?
            .pop()
            .map(|group| group.group_id)
            .ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "inbox entry {} of {device_id} names a group that does not exist",
                    event.seq
                ))
            })?;
        page.push(Delivery::Inbox { group_id, event });
    }
    for member in memberships {
        let remaining = limit.saturating_sub(page.len() as u64);
        if remaining == 0 {
            break;
        }
        let position = positions
            .groups
            .entry(member.group)
            .or_insert(member.acked_seq);
        let Some(window) = unread_window(*position, member.joined_after_seq, member.removed_at_seq)
        else {
            continue;
        };
        let events = store::events_after(
            connection,
            member.group,
            window.after,
            window.up_to,
            remaining,
        )
        .await?;
        let Some(group_id) = group_ids.get(&member.group) else {
            continue;
        };
        for event in events {
            *position = event.seq;
            let is_commit = event.kind == EventKind::Commit;
            page.push(Delivery::Group {
                group_id: group_id.clone(),
                event,
            });
            // A commit may remove this device: `memberships` was read before it
            // and does not say so, so this group's events stop here until the
            // caller reads the memberships again (the next Fetch, or the stream's
            // reload after a commit). Otherwise events after the removal leak.
            if is_commit {
                break;
            }
        }
    }
    Ok(page)
}

/// The device's memberships and the MLS ids of their groups.
async fn load_memberships(
    context: &Context,
    device_id: &str,
) -> Result<(Vec<Membership>, HashMap<GroupKey, Arc<GroupId>>), DeliveryError> {
    let connection = &context.store;
    let memberships = store::memberships_of_device(connection, device_id).await?;
    let keys: Vec<GroupKey> = memberships.iter().map(|member| member.group).collect();
    let headers = store::find_group_headers(connection, &keys).await?;
    let group_ids = headers
        .into_iter()
        .map(|header| (header.key, Arc::new(header.group_id)))
        .collect();
    Ok((memberships, group_ids))
}

/// Up to `limit` events after the device's acknowledged cursors.
pub(crate) async fn fetch(
    context: &Context,
    device: &AuthenticatedDevice,
    limit: u32,
) -> Result<Vec<Delivery>, DeliveryError> {
    let limit = match u64::from(limit) {
        0 => DEFAULT_PAGE,
        limit => limit.min(MAX_PAGE),
    };
    let device_id = device.device_id().as_str();
    let (memberships, group_ids) = load_memberships(context, device_id).await?;
    let inbox = store::inbox_position(&context.store, device_id).await?;
    let mut positions = Positions {
        inbox: inbox.acked_seq,
        groups: HashMap::new(),
    };
    read_page(
        context,
        device_id,
        &mut positions,
        &memberships,
        &group_ids,
        limit,
    )
    .await
}

/// Acknowledgements of one device.
pub(crate) struct Acks {
    /// (MLS group id, sequence number).
    pub(crate) groups: Vec<(GroupId, Seq)>,
    pub(crate) inbox_seq: Seq,
}

/// Moves the device's cursors forward. All acknowledgements are checked before
/// any is applied.
pub(crate) async fn ack(
    context: &Context,
    device: &AuthenticatedDevice,
    acks: Acks,
) -> Result<(), DeliveryError> {
    let identity = device.identity.to_string();
    let device_id = device.device_id().as_str();
    let transaction = context.store.begin().await?;
    let mut advances = Vec::with_capacity(acks.groups.len());
    for (group_id, seq) in acks.groups {
        let group = store::find_group_header(&transaction, &group_id)
            .await?
            .ok_or_else(|| DeliveryError::UnknownGroup(group_id.clone()))?;
        let member = store::find_member(&transaction, group.key, &identity)
            .await?
            .ok_or_else(|| DeliveryError::NotAMember(group_id.clone()))?;
        let newest = member.removed_at_seq.unwrap_or(group.last_seq);
        check_ack("group sequence number", seq, newest)?;
        advances.push((group.key, seq));
    }
    if acks.inbox_seq > Seq::ZERO {
        let inbox = store::inbox_position(&transaction, device_id).await?;
        check_ack("inbox sequence number", acks.inbox_seq, inbox.last_seq)?;
        store::advance_inbox_cursor(&transaction, device_id, acks.inbox_seq).await?;
    }
    for (group, seq) in advances {
        store::advance_member_cursor(&transaction, group, &identity, seq).await?;
    }
    transaction.commit().await?;
    Ok(())
}

/// Streams everything after the device's cursors, then new events as they come,
/// into `sender`, until the receiver is dropped. Errors end the stream with the
/// error as its last item.
pub(crate) async fn subscribe(
    context: Arc<Context>,
    device: AuthenticatedDevice,
    sender: mpsc::Sender<Result<Delivery, DeliveryError>>,
) {
    if let Err(error) = stream_events(&context, &device, &sender).await {
        let _ = sender.send(Err(error)).await;
    }
}

async fn stream_events(
    context: &Context,
    device: &AuthenticatedDevice,
    sender: &mpsc::Sender<Result<Delivery, DeliveryError>>,
) -> Result<(), DeliveryError> {
    let device_id = device.device_id().as_str();
    let waker = Arc::new(Notify::new());
    // Registered before the first read, so nothing stored after the read is missed.
    context
        .notifier
        .register(Topic::Inbox(device_id.to_owned()), &waker);
    let inbox = store::inbox_position(&context.store, device_id).await?;
    let mut positions = Positions {
        inbox: inbox.acked_seq,
        groups: HashMap::new(),
    };
    let mut memberships_stale = true;
    let mut memberships = Vec::new();
    let mut group_ids = HashMap::new();
    loop {
        if memberships_stale {
            (memberships, group_ids) = load_memberships(context, device_id).await?;
            for member in &memberships {
                context
                    .notifier
                    .register(Topic::Group(member.group), &waker);
            }
            memberships_stale = false;
        }
        let page = read_page(
            context,
            device_id,
            &mut positions,
            &memberships,
            &group_ids,
            DEFAULT_PAGE,
        )
        .await?;
        if page.is_empty() {
            tokio::select! {
                () = waker.notified() => {}
                () = sender.closed() => return Ok(()),
            }
            continue;
        }
        for delivery in page {
            // A Welcome or a removal changes which logs this device reads.
            let changes_memberships = match &delivery {
                Delivery::Inbox { .. } => true,
                Delivery::Group { event, .. } => event.kind == EventKind::Commit,
            };
            memberships_stale |= changes_memberships;
            if sender.send(Ok(delivery)).await.is_err() {
                return Ok(());
            }
        }
    }
}
