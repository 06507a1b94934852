//! Subscribe: replays what the device missed, then streams new events as their
//! wake-ups arrive.

use super::super::Context;
use super::super::accounts::AuthenticatedDevice;
use super::pages::{load_memberships, read_page};
use super::{DEFAULT_PAGE, Delivery, DeliveryError, Positions};
use crate::notify::Topic;
use crate::store::{self, EventKind};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{Notify, mpsc};

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
