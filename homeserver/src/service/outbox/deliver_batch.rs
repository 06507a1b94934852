//! One delivery pass to a peer: for each group with events the peer has not
//! confirmed, one batch after its cursor, and the cursor moved to what the peer
//! says it has.

use super::super::Context;
use super::super::departures;
use super::{DeliveryError, GROUPS_PER_PASS, Progress};
use crate::rules::federation::{event_wire_size, outbox_byte_budget};
use crate::rules::ids::{GroupKey, Seq};
use crate::store::{self, EventKind, LogEvent, PendingDelivery, StoreError};
use conclave_core::ids::Domain;
use conclave_federation::client::{CallError, FederationClient, RefusalKind};
use conclave_federation::trace_context;
use conclave_proto::federation::v1 as proto;
use tracing::Instrument as _;

/// Tells `peer` of the departures of this domain's devices from the groups it
/// hosts (queued by `departures::announce`), then sends one batch for each
/// group with undelivered events for it.
pub(super) async fn deliver_pending(
    context: &Context,
    federation: &FederationClient,
    peer: &Domain,
) -> Result<Progress, DeliveryError> {
    let announced = departures::announce_pending(context, federation, peer).await?;
    let pending = store::pending_deliveries(&context.store, peer.as_str(), GROUPS_PER_PASS).await?;
    if pending.is_empty() {
        return Ok(if announced > 0 {
            Progress::More
        } else {
            Progress::Done
        });
    }
    for delivery in &pending {
        deliver_batch(context, federation, peer, delivery).await?;
    }
    Ok(Progress::More)
}

async fn deliver_batch(
    context: &Context,
    federation: &FederationClient,
    peer: &Domain,
    delivery: &PendingDelivery,
) -> Result<(), DeliveryError> {
    let connection = &context.store;
    let (events, traceparents, last_seq) = events_for_follower(
        context,
        delivery.group,
        peer,
        delivery.delivered_seq,
        delivery.end_seq,
        context.config.federation.outbox_batch_size,
    )
    .await?;
    if events.is_empty() {
        // Everything up to the end was pruned (retention): nothing to send.
        store::set_peer_delivered(connection, delivery.group, peer.as_str(), last_seq).await?;
        return Ok(());
    }
    let member_count = store::member_count(connection, delivery.group).await?;
    let sent_through = events.last().map_or(0, |event| event.seq);
    let span = trace_context::delivery_span(peer.as_str(), traceparents.iter().map(String::as_str));
    let answer = federation
        .deliver_events(
            peer,
            delivery.group_id.as_bytes().to_vec(),
            events,
            member_count,
        )
        .instrument(span)
        .await;
    let confirmed = match answer {
        Ok(answer) => Seq::new(answer.last_seq),
        // Refusals of this group's events (not of this homeserver, nor of the
        // rate): the follower will not take them, now or later (e.g. the
        // devices they were for are gone, or another domain claims the group).
        // Retrying would block the group forever, so its delivery to this domain
        // ends here, logged and shown in the peer's status.
        Err(CallError::Refused {
            kind:
                kind @ (RefusalKind::FailedPrecondition
                | RefusalKind::InvalidArgument
                | RefusalKind::NotFound),
            message,
            ..
        }) => {
            let group = delivery.group_id.to_string();
            tracing::error!(
                peer_domain = %peer,
                %group,
                ?kind,
                reason = %message,
                "follower refused a group's events; delivery of this group to it ends"
            );
            store::record_peer_failure(
                connection,
                peer.as_str(),
                &format!("refused the events of group {group}: {message}"),
                context.now_ms(),
            )
            .await?;
            store::end_peer_delivery(connection, delivery.group, peer.as_str(), delivery.end_seq)
                .await?;
            return Ok(());
        }
        // Unreachable, rate-limited, or refusing this homeserver (certificate,
        // pin, peer list): the whole peer waits and retries.
        Err(error) => return Err(error.into()),
    };
    tracing::debug!(peer_domain = %peer, group = %delivery.group_id, sent_through, %confirmed, "delivered a batch");
    store::set_peer_delivered(connection, delivery.group, peer.as_str(), confirmed).await?;
    Ok(())
}

/// Up to `limit` events of a hosted group after `after_seq` and up to
/// `end_seq`, as follower domain `peer` receives them (with its devices'
/// membership changes and Welcomes), within the federation message size; the
/// traces they were submitted in; and the last sequence number they cover.
pub(crate) async fn events_for_follower(
    context: &Context,
    group: GroupKey,
    peer: &Domain,
    after_seq: Seq,
    end_seq: Seq,
    limit: u64,
) -> Result<(Vec<proto::FederatedEvent>, Vec<String>, Seq), StoreError> {
    let connection = &context.store;
    let records = store::events_after(connection, group, after_seq, Some(end_seq), limit).await?;
    let Some(last) = records.last() else {
        return Ok((Vec::new(), Vec::new(), end_seq));
    };
    let changes =
        store::membership_changes(connection, group, peer.as_str(), after_seq, last.seq).await?;
    let byte_budget = outbox_byte_budget(context.config.federation.max_message_bytes);
    let mut used = 0;
    let mut events = Vec::with_capacity(records.len());
    let mut traceparents = Vec::new();
    for record in records {
        let traceparent = record.trace_parent.clone();
        let mut event = federated_event(record);
        for change in changes
            .iter()
            .filter(|change| change.seq.get() == event.seq)
        {
            if change.added {
                event.added.push(change.identity.clone());
            } else {
                event.removed.push(change.identity.clone());
            }
        }
        if !event.added.is_empty()
            && let Some((welcome, ratchet_tree)) =
                store::find_remote_welcome(connection, group, Seq::new(event.seq)).await?
        {
            event.welcome = welcome;
            event.ratchet_tree = ratchet_tree;
        }
        let size = event_wire_size(&event.message, &event.welcome, &event.ratchet_tree);
        if !events.is_empty() && used + size > byte_budget {
            break;
        }
        used += size;
        events.push(event);
        traceparents.extend(traceparent);
    }
    let covered = events.last().map_or(after_seq, |event| Seq::new(event.seq));
    Ok((events, traceparents, covered))
}

/// A log entry as the federation wire carries it.
pub(super) fn federated_event(record: LogEvent) -> proto::FederatedEvent {
    let kind = match record.kind {
        EventKind::Commit => proto::EventKind::Commit,
        EventKind::Proposal => proto::EventKind::Proposal,
        EventKind::Application => proto::EventKind::Application,
        EventKind::Departure => proto::EventKind::Departure,
    };
    proto::FederatedEvent {
        seq: record.seq.get(),
        kind: kind as i32,
        epoch: record.epoch.get(),
        sender: record.sender_identity,
        message: record.message,
        created_at_ms: record.created_at_ms,
        // Each event's own trace, which the follower continues.
        traceparent: record.trace_parent,
        ..Default::default()
    }
}
