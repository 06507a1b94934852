//! Subscribe: replays what the device missed, then streams new events as their
//! wake-ups arrive, each stream within its device's and connection's limits
//! (`streams`).
//!
//! # Metrics
//! `conclave_delivery_lag_seconds` observes, for each live event handed to a
//! stream (its buffer of [`SUBSCRIBER_BUFFER`](super::SUBSCRIBER_BUFFER)
//! events), the time since this domain stored it (the log or inbox row's
//! `created_at_ms`: on the hub, when it accepted the event; on a follower, when
//! it stored its copy from the hub). Live means stored once the stream was
//! open: what a stream replays at its start (stored before) is left out, since
//! its lag is how long the device was away, not how fast delivery is, and a
//! few offline devices would fill the high quantiles. An event stored by
//! another replica is measured against that replica's clock (a clock behind
//! this one counts 0; a clock ahead may class an event live that was stored
//! just before the stream opened). Fetch is not measured.

use super::super::Context;
use super::super::accounts::{AccountError, AuthenticatedDevice};
use super::pages::{LogSource, load_memberships, read_page};
use super::streams::{ConnectionKey, StreamEnd, StreamSlot};
use super::{DEFAULT_PAGE, Delivery, DeliveryError, Positions, StreamItem};
use crate::metrics::RateLimit;
use crate::notify::Topic;
use crate::rules::account_state::AccountState;
use crate::store::{self, EventKind, StoreError};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{Notify, mpsc};
use tracing::Instrument as _;

/// A place for a new stream of `device` on `connection`, or the limit it would
/// exceed. Over the device's limit, the device's oldest stream ends instead.
pub(crate) fn open_stream(
    context: &Context,
    device: &AuthenticatedDevice,
    connection: Option<ConnectionKey>,
) -> Result<StreamSlot, DeliveryError> {
    context
        .subscribe_streams
        .open(device.device_id().as_str(), connection)
        .inspect_err(|error| {
            if matches!(error, DeliveryError::TooManyStreams(_)) {
                context
                    .metrics
                    .count_rejection(RateLimit::SubscribeStreamsPerConnection);
            }
        })
}

/// Ends the open Subscribe streams of `device_id`, whose access ended (it was
/// revoked, or its account suspended or deactivated): at once on this
/// process, through the registry, and on the other replicas of a cluster
/// through a [`Topic::DeviceAccess`] wake-up. Call it after the change is
/// committed, so a stream that re-checks sees it.
///
/// Why a wake-up that makes the stream re-check, and not a "close" message
/// that the other replicas obey: a wake-up carries no data by the notifier's
/// contract, so a stale or duplicated one (a suspension lifted a moment
/// later, a message that arrives late) cannot end a stream that may go on;
/// the database decides. The re-check is one read of the device and its
/// account, made only when an administrator acts on the device (its own
/// topic, not the inbox's, which every Welcome wakes). A wake-up lost with
/// Redis is found by the replica's resync (`service::resync`), which asks the
/// database about the devices whose streams listen for this topic.
pub(crate) fn close_device_streams(context: &Context, device_id: &str) -> usize {
    let closed = context
        .subscribe_streams
        .close_device(device_id, StreamEnd::AccessEnded);
    context
        .notifier
        .publish(&Topic::DeviceAccess(device_id.to_owned()));
    closed
}

/// Streams everything after the device's cursors, then new events as they come,
/// into `sender`, until the receiver is dropped, a newer stream of the device
/// takes `slot`'s place, the device's access ends or the server shuts down.
/// Errors end the stream with the error as its last item.
/// The slot is held until the stream ends, however it ends.
pub(crate) async fn subscribe(
    context: Arc<Context>,
    device: AuthenticatedDevice,
    mut slot: StreamSlot,
    sender: mpsc::Sender<StreamItem>,
) {
    let result = tokio::select! {
        result = stream_events(&context, &device, &sender) => result,
        refusal = access_ended(&context, &device) => Err(refusal.into()),
        end = slot.ended() => {
            let error = match end {
                StreamEnd::Replaced => {
                    context
                        .metrics
                        .count_rejection(RateLimit::SubscribeStreamsPerDevice);
                    let limit = context.subscribe_streams.limits().per_device;
                    tracing::debug!(device_id = %device.device_id(), limit, "a newer stream replaced a Subscribe stream");
                    DeliveryError::StreamReplaced { limit }
                }
                StreamEnd::ServerStopping => DeliveryError::ServerStopping,
                // The registry does not say why: the database does, as the
                // device's next call would be told.
                StreamEnd::AccessEnded => match context.stream_reads.read(|| access_refusal(&context, &device)).await {
                    Ok(Some(refusal)) => refusal.into(),
                    Ok(None) => DeliveryError::StreamClosed,
                    Err(error) => error.into(),
                },
            };
            // Not waited for: a consumer whose buffer is full may be the dead
            // stream this one replaced (or hold up a shutdown), and its task
            // should end now. Such a stream ends without a status.
            let _ = sender.try_send(Box::new(Err(error)));
            return;
        }
    };
    if let Err(error) = result {
        let _ = sender.send(Box::new(Err(error))).await;
    }
}

/// Resolves when the device may no longer call, with the refusal its next
/// call would get. Registered for [`Topic::DeviceAccess`] first and then
/// checked once, so a change committed before the registration is seen by
/// the check and one after it wakes the check again.
async fn access_ended(context: &Context, device: &AuthenticatedDevice) -> AccountError {
    let waker = Arc::new(Notify::new());
    context.notifier.register(
        Topic::DeviceAccess(device.device_id().as_str().to_owned()),
        &waker,
    );
    loop {
        // Every read here waits for its turn and is boxed: see
        // `stream_reads` and `an_idle_stream_s_task_stays_small`.
        match context
            .stream_reads
            .read(|| access_refusal(context, device))
            .await
        {
            Ok(Some(refusal)) => return refusal,
            Ok(None) => {}
            // The stream's own reads fail alike and end it; this one waits
            // for the next wake-up.
            Err(error) => {
                tracing::warn!(%error, device_id = %device.device_id(), "could not check a streaming device's access");
            }
        }
        waker.notified().await;
    }
}

/// The refusal the device's next call would get, if any: one read of the
/// device with its account.
async fn access_refusal(
    context: &Context,
    device: &AuthenticatedDevice,
) -> Result<Option<AccountError>, StoreError> {
    Ok(
        match store::device_account_state(&context.store, device.device_id()).await? {
            None => Some(AccountError::InvalidToken),
            Some(AccountState::Active) => None,
            Some(AccountState::Suspended { .. }) => Some(AccountError::AccountSuspended),
            Some(AccountState::Deactivated { .. }) => Some(AccountError::AccountDeactivated),
        },
    )
}

async fn stream_events(
    context: &Context,
    device: &AuthenticatedDevice,
    sender: &mpsc::Sender<StreamItem>,
) -> Result<(), DeliveryError> {
    let device_id = device.device_id().as_str();
    // Apart, so that a group's wake-up does not cost a read of the inbox.
    let inbox_waker = Arc::new(Notify::new());
    let groups_waker = Arc::new(Notify::new());
    // Registered before the first read, so nothing stored after the read is missed.
    context
        .notifier
        .register(Topic::Inbox(device_id.to_owned()), &inbox_waker);
    // Events stored from now on are live; those before, the catch-up.
    let opened_at_ms = context.now_ms();
    let inbox = context
        .stream_reads
        .read(|| store::inbox_position(&context.store, device_id))
        .await?;
    let mut positions = Positions::new(inbox.acked_seq);
    let mut memberships_stale = true;
    let mut memberships = Vec::new();
    let mut group_ids = HashMap::new();
    loop {
        if memberships_stale {
            (memberships, group_ids) = context
                .stream_reads
                .read(|| load_memberships(context, device_id))
                .await?;
            for member in &memberships {
                context
                    .notifier
                    .register(Topic::Group(member.group), &groups_waker);
                if !positions.groups.contains_key(&member.group) {
                    // Read after registering: from here on, wake-ups tell.
                    context.group_tails.expect_new_reader(member.group);
                }
            }
            memberships_stale = false;
            // A new membership came with a Welcome in the inbox, which must
            // reach the device before the group's events: read the inbox in
            // this page, whether or not its wake-up was taken yet.
            positions.inbox_pending = true;
        }
        // A wake-up of the inbox while pages were full: read it now, not only
        // once the groups run dry, so a busy group cannot hold a Welcome back.
        if futures::FutureExt::now_or_never(inbox_waker.notified()).is_some() {
            positions.inbox_pending = true;
        }
        // A stream whose client left reads nothing more: it would only
        // take a turn from the living ones (many at once after a deploy).
        if sender.is_closed() {
            return Ok(());
        }
        let page = context
            .stream_reads
            .read(|| {
                read_page(
                    context,
                    LogSource::Tails,
                    device_id,
                    &mut positions,
                    &memberships,
                    &group_ids,
                    DEFAULT_PAGE,
                )
            })
            .await?;
        if page.is_empty() {
            tokio::select! {
                // First, so that when both were woken the inbox is read with
                // the groups, not after another wait.
                biased;
                () = inbox_waker.notified() => positions.inbox_pending = true,
                () = groups_waker.notified() => {}
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
            let accepted_at_ms = delivery.accepted_at_ms();
            let span = stream_delivery_span(&delivery);
            if sender
                .send(Box::new(Ok(delivery)))
                .instrument(span)
                .await
                .is_err()
            {
                return Ok(());
            }
            if accepted_at_ms >= opened_at_ms {
                observe_lag(context, accepted_at_ms);
            }
        }
    }
}

/// One live event delivered, stored at `accepted_at_ms` by this domain; the
/// lag by this process's clock.
fn observe_lag(context: &Context, accepted_at_ms: i64) {
    let lag_ms = context.now_ms().saturating_sub(accepted_at_ms).max(0);
    context.metrics.delivery_lag.observe(lag_ms as f64 / 1000.0);
}

/// The span of writing one group event to a Subscribe stream,
/// `stream_delivery`: a child of the trace the event was submitted (or, on a
/// follower, delivered) in, so that a message's trace ends at each recipient's
/// stream. Disabled for inbox entries and untraced events, which have no trace
/// to continue. Its `trace_id` field puts the trace id on the log lines
/// within it.
fn stream_delivery_span(delivery: &Delivery) -> tracing::Span {
    let Delivery::Group { event, .. } = delivery else {
        return tracing::Span::none();
    };
    let Some(trace_parent) = event.trace_parent.as_deref() else {
        return tracing::Span::none();
    };
    let event_kind = match event.kind {
        EventKind::Application => "application",
        EventKind::Commit => "commit",
        EventKind::Proposal => "proposal",
        EventKind::Departure => "departure",
    };
    let span = tracing::info_span!(
        "stream_delivery",
        conclave.event_kind = event_kind,
        otel.kind = "producer",
        trace_id = tracing::field::Empty,
    );
    conclave_federation::trace_context::continue_traces(&span, [trace_parent]);
    conclave_federation::trace_context::record_trace_id(&span);
    span
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::SystemClock;
    use crate::service::accounts::authenticate;
    use crate::service::admin::tests::{add_device, add_user, context_on};
    use conclave_test_support::{DatabaseChoice, TestDatabase};

    /// Most bytes an idle stream's task may hold. The task is its future,
    /// boxed by `tokio::spawn` at its largest size for as long as the stream
    /// is open, however long it waits: a database read awaited in place
    /// would keep its whole state in every idle stream (this future was
    /// 4,952 bytes so in a release build), so the reads are made when their
    /// turn comes, boxed, and live only while they run (`stream_reads`;
    /// 1,408 bytes in a debug build, which tests use).
    /// With the rest of a stream (its channel, its share of an HTTP/2
    /// connection, its codec buffer), the goal is 8 KiB per idle stream
    /// (BENCHMARKS.md, "Issue 15: live heap per idle stream").
    const MAX_TASK_BYTES: usize = 1536;

    #[tokio::test]
    async fn an_idle_stream_s_task_stays_small() {
        let database = TestDatabase::create(DatabaseChoice::Sqlite).await;
        let context = Arc::new(context_on(&database, Arc::new(SystemClock)).await);
        let bob = add_user(&context, "bob", "bob's password").await;
        let token = add_device(&context, &bob, "00000000000000d1").await;
        let device = authenticate(&context, Some(&token)).await.unwrap();
        let slot = open_stream(&context, &device, None).unwrap();
        let (sender, _receiver) = mpsc::channel(1);
        let task = subscribe(context.clone(), device, slot, sender);
        let size = std::mem::size_of_val(&task);
        assert!(
            size <= MAX_TASK_BYTES,
            "a stream's task holds {size} bytes, more than {MAX_TASK_BYTES}"
        );
    }
}
