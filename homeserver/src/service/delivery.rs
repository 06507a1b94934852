//! Delivery to a device: what lies after its cursors (its groups' logs and its
//! inbox), polled with [`fetch`] or streamed with [`subscribe`], and [`ack`] to move
//! the cursors. A device receives a group's events after the commit that added it,
//! up to and including the commit that removed it.

use super::accounts::AuthenticatedDevice;
use super::{Context, InternalError};
use crate::notify::Topic;
use crate::store::{self, EventRecord, InboxEventRecord, MemberRecord, StoreError};
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
    #[error("you are not a member of group {0}")]
    NotAMember(String),
    #[error("cannot acknowledge {what} {seq}: the newest is {newest}")]
    AckBeyondEnd {
        what: &'static str,
        seq: u64,
        newest: u64,
    },
    #[error(transparent)]
    Internal(#[from] InternalError),
}

impl From<StoreError> for DeliveryError {
    fn from(error: StoreError) -> Self {
        DeliveryError::Internal(error.into())
    }
}

/// One event for a device, with the group's MLS id for group events.
#[derive(Debug, Clone)]
pub(crate) enum Delivery {
    Group {
        mls_group_id: Arc<Vec<u8>>,
        event: EventRecord,
    },
    Inbox {
        mls_group_id: Vec<u8>,
        event: InboxEventRecord,
    },
}

/// How far a device has been served, per group and in its inbox.
#[derive(Debug, Default)]
struct Positions {
    inbox: i64,
    groups: HashMap<i64, i64>,
}

/// Reads up to `limit` events after the positions, inbox first (a Welcome must be
/// processed before the group's events make sense), and advances the positions.
async fn read_page(
    context: &Context,
    device_id: &str,
    positions: &mut Positions,
    memberships: &[MemberRecord],
    group_ids: &HashMap<i64, Arc<Vec<u8>>>,
    limit: u64,
) -> Result<Vec<Delivery>, DeliveryError> {
    let connection = &context.store;
    let mut page = Vec::new();
    for event in store::inbox_events_after(connection, device_id, positions.inbox, limit).await? {
        positions.inbox = event.seq;
        let mls_group_id = store::find_group_headers(connection, vec![event.group_id])
            .await?
            .pop()
            .map(|group| group.mls_group_id)
            .unwrap_or_default();
        page.push(Delivery::Inbox {
            mls_group_id,
            event,
        });
    }
    for member in memberships {
        let remaining = limit.saturating_sub(page.len() as u64);
        if remaining == 0 {
            break;
        }
        let position = positions
            .groups
            .entry(member.group_id)
            .or_insert(member.acked_seq);
        // A device removed and later added again starts after the re-adding commit.
        *position = (*position).max(member.joined_after_seq);
        if member
            .removed_at_seq
            .is_some_and(|removed| *position >= removed)
        {
            continue;
        }
        let events = store::events_after(
            connection,
            member.group_id,
            *position,
            member.removed_at_seq,
            remaining,
        )
        .await?;
        let Some(mls_group_id) = group_ids.get(&member.group_id) else {
            continue;
        };
        for event in events {
            *position = event.seq;
            let is_commit = event.kind == store::EventKind::Commit as i16;
            page.push(Delivery::Group {
                mls_group_id: mls_group_id.clone(),
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
) -> Result<(Vec<MemberRecord>, HashMap<i64, Arc<Vec<u8>>>), DeliveryError> {
    let connection = &context.store;
    let memberships = store::memberships_of_device(connection, device_id).await?;
    let headers = store::find_group_headers(
        connection,
        memberships.iter().map(|member| member.group_id).collect(),
    )
    .await?;
    let group_ids = headers
        .into_iter()
        .map(|header| (header.id, Arc::new(header.mls_group_id)))
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
    let (inbox_acked, _) = store::inbox_position(&context.store, device_id).await?;
    let mut positions = Positions {
        inbox: inbox_acked,
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
    pub(crate) groups: Vec<(Vec<u8>, u64)>,
    pub(crate) inbox_seq: u64,
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
    for (mls_group_id, seq) in acks.groups {
        let not_a_member = || DeliveryError::NotAMember(hex::encode(&mls_group_id));
        let group = store::find_group_header(&transaction, &mls_group_id)
            .await?
            .ok_or_else(not_a_member)?;
        let member = store::find_member(&transaction, group.id, &identity)
            .await?
            .ok_or_else(not_a_member)?;
        let newest = member.removed_at_seq.unwrap_or(group.last_seq);
        if i64::try_from(seq).map_or(true, |seq| seq > newest) {
            return Err(DeliveryError::AckBeyondEnd {
                what: "group sequence number",
                seq,
                newest: u64::try_from(newest).unwrap_or(0),
            });
        }
        advances.push((group.id, i64::try_from(seq).unwrap_or(0)));
    }
    if acks.inbox_seq > 0 {
        let (_, last) = store::inbox_position(&transaction, device_id).await?;
        if i64::try_from(acks.inbox_seq).map_or(true, |seq| seq > last) {
            return Err(DeliveryError::AckBeyondEnd {
                what: "inbox sequence number",
                seq: acks.inbox_seq,
                newest: u64::try_from(last).unwrap_or(0),
            });
        }
        store::advance_inbox_cursor(
            &transaction,
            device_id,
            i64::try_from(acks.inbox_seq).unwrap_or(0),
        )
        .await?;
    }
    for (group_row_id, seq) in advances {
        store::advance_member_cursor(&transaction, group_row_id, &identity, seq).await?;
    }
    transaction.commit().await.map_err(StoreError::from)?;
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
    let (inbox_acked, _) = store::inbox_position(&context.store, device_id).await?;
    let mut positions = Positions {
        inbox: inbox_acked,
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
                    .register(Topic::Group(member.group_id), &waker);
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
                Delivery::Group { event, .. } => event.kind == store::EventKind::Commit as i16,
            };
            memberships_stale |= changes_memberships;
            if sender.send(Ok(delivery)).await.is_err() {
                return Ok(());
            }
        }
    }
}
