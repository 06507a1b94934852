//! The hub's federation outbox: each follower domain of a hosted group receives
//! the group's log after its cursor, in order, in batches, until it has
//! everything (or, once its last device left, up to the commit that removed it).
//!
//! The log itself is the outbox: a message costs no extra write per follower
//! domain, only the follower's cursor moves, after the follower confirmed what it
//! has (`DeliverEventsResponse.last_seq`). A batch lost on the way, or delivered
//! twice (a retry, or two replicas sending at once), is harmless: the follower
//! applies each `(group, seq)` once. One task per peer domain sends its batches
//! one at a time (so each group's events leave in order), wakes when a followed
//! group grows, and after a failure waits with exponential backoff and jitter,
//! cut short when the peer calls this homeserver (it is up again).
//!
//! Events travel as `conclave.federation.v1.FederatedEvent`, the wire type of the
//! federation client this module drives.

use super::{Context, InternalError};
use crate::notify::Topic;
use crate::rules::ids::{GroupId, GroupKey, Seq};
use crate::store::{self, EventKind, LogEvent, PendingDelivery, StoreError};
use conclave_core::ids::Domain;
use conclave_federation::client::{CallError, FederationClient, RefusalKind};
use conclave_federation::trace_context;
use conclave_proto::federation::v1 as proto;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tracing::Instrument as _;

/// Groups looked at per pass for one peer.
const GROUPS_PER_PASS: u64 = 64;
/// With no wake-up, pending work is looked for this often anyway (a wake-up is
/// lost when another replica stored the event).
const POLL_INTERVAL: Duration = Duration::from_secs(2);
/// Backoff after the first failure, doubled per failure up to the maximum.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How often a peer's last success is written while deliveries keep succeeding.
const SUCCESS_RECORD_INTERVAL: Duration = Duration::from_secs(5);

/// Runs one delivery task per configured peer until `stopped` resolves.
pub(crate) async fn run(
    context: Arc<Context>,
    federation: Arc<FederationClient>,
    peers: Vec<Domain>,
    stopped: impl Future<Output = ()>,
) {
    // A JoinSet aborts its tasks when dropped, so they stop with this future
    // even when it is aborted before `stopped` resolves.
    let mut tasks = tokio::task::JoinSet::new();
    for peer in peers {
        tasks.spawn(deliver_to_peer(context.clone(), federation.clone(), peer));
    }
    stopped.await;
    tasks.abort_all();
}

async fn deliver_to_peer(context: Arc<Context>, federation: Arc<FederationClient>, peer: Domain) {
    let waker = Arc::new(Notify::new());
    context.notifier.register(Topic::Outbox, &waker);
    // A request from the peer proves it is up again: no need to sit out the
    // rest of a long backoff.
    let peer_alive = Arc::new(Notify::new());
    context
        .notifier
        .register(Topic::PeerAlive(peer.to_string()), &peer_alive);
    let mut failures: u32 = 0;
    let mut last_recorded = None;
    loop {
        match deliver_pending(&context, &federation, &peer).await {
            Ok(progress) => {
                // The status row is for operators: written after a failure
                // streak ends, else at most every few seconds, not per batch.
                let due = last_recorded
                    .is_none_or(|at: tokio::time::Instant| at.elapsed() >= SUCCESS_RECORD_INTERVAL);
                if matches!(progress, Progress::More) && (failures > 0 || due) {
                    match store::record_peer_success(
                        &context.store,
                        peer.as_str(),
                        context.now_ms(),
                    )
                    .await
                    {
                        Ok(()) => last_recorded = Some(tokio::time::Instant::now()),
                        Err(error) => {
                            tracing::warn!(peer_domain = %peer, %error, "could not record a delivery success");
                        }
                    }
                }
                failures = 0;
                if matches!(progress, Progress::Done) {
                    let _ = tokio::time::timeout(POLL_INTERVAL, waker.notified()).await;
                }
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                let reason = error.to_string();
                tracing::warn!(peer_domain = %peer, failures, %reason, "federation delivery failed; backing off");
                if let Err(error) = store::record_peer_failure(
                    &context.store,
                    peer.as_str(),
                    &reason,
                    context.now_ms(),
                )
                .await
                {
                    tracing::warn!(peer_domain = %peer, %error, "could not record a delivery failure");
                }
                let wait = backoff(failures, random_fraction());
                let started = tokio::time::Instant::now();
                if tokio::time::timeout(wait, peer_alive.notified())
                    .await
                    .is_ok()
                {
                    // Retry soon, though never faster than the first backoff: a
                    // peer that calls often but refuses our calls is not hammered.
                    tracing::info!(peer_domain = %peer, "peer called in; retrying delivery");
                    tokio::time::sleep_until(started + FIRST_BACKOFF).await;
                }
            }
        }
    }
}

/// Whether a pass left work behind.
enum Progress {
    More,
    Done,
}

/// Why a pass stopped.
#[derive(Debug, thiserror::Error)]
enum DeliveryError {
    #[error(transparent)]
    Call(#[from] CallError),
    #[error(transparent)]
    Internal(#[from] InternalError),
}

impl From<StoreError> for DeliveryError {
    fn from(error: StoreError) -> Self {
        DeliveryError::Internal(error.into())
    }
}

/// Sends one batch for each group with undelivered events for `peer`.
async fn deliver_pending(
    context: &Context,
    federation: &FederationClient,
    peer: &Domain,
) -> Result<Progress, DeliveryError> {
    let pending = store::pending_deliveries(&context.store, peer.as_str(), GROUPS_PER_PASS).await?;
    if pending.is_empty() {
        return Ok(Progress::Done);
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
    let span = trace_context::delivery_span(
        peer.as_str(),
        &delivery.group_id.to_string(),
        traceparents.iter().map(String::as_str),
    );
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
    // Half the limit leaves room for the envelope; a single event larger than
    // that still goes (alone), since the hub accepted it.
    let byte_budget = context.config.federation.max_message_bytes / 2;
    let mut used = 0;
    let mut events = Vec::with_capacity(records.len());
    let mut traceparents = Vec::new();
    for mut record in records {
        let traceparent = record.trace_parent.take();
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
        let size = event.message.len() + event.welcome.len() + event.ratchet_tree.len() + 256;
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

/// Why a follower's FetchEvents was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FetchEventsError {
    /// Not hosted here, or the asking domain never had members in it: answered
    /// alike, so group ids cannot be probed.
    #[error("group {0} is not hosted here for your domain")]
    UnknownGroup(GroupId),
    /// Events after `after_seq` were pruned.
    #[error(
        "events of group {group} after {after_seq} were pruned; the first kept is {first_kept}"
    )]
    Pruned {
        group: GroupId,
        after_seq: Seq,
        first_kept: Seq,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Internal(#[from] InternalError),
}

/// Events of a hosted group after `after_seq`, for follower domain `peer` to
/// repair its copy: only from the commit that (last) added its devices, and only
/// up to the commit that removed them. Returns the events and the last sequence
/// number the domain is due.
pub(crate) async fn fetch_for_follower(
    context: &Context,
    peer: &Domain,
    mls_group_id: &GroupId,
    after_seq: Seq,
    limit: u32,
) -> Result<(Vec<proto::FederatedEvent>, Seq), FetchEventsError> {
    let connection = &context.store;
    let unknown = || FetchEventsError::UnknownGroup(mls_group_id.clone());
    let group = store::find_group_header(connection, mls_group_id)
        .await?
        .filter(|group| group.hub_domain.is_none())
        .ok_or_else(unknown)?;
    let cursor = store::find_peer_cursor(connection, group.key, peer.as_str())
        .await?
        .ok_or_else(unknown)?;
    let end_seq = cursor.until_seq.unwrap_or(group.last_seq);
    let after_seq = after_seq.max(cursor.joined_after_seq);
    let batch_size = context.config.federation.outbox_batch_size;
    let limit = match u64::from(limit) {
        0 => batch_size,
        limit => limit.min(batch_size),
    };
    let (events, _, _) =
        events_for_follower(context, group.key, peer, after_seq, end_seq, limit).await?;
    if let Some(first) = events.first()
        && first.seq > after_seq.next().get()
    {
        return Err(FetchEventsError::Pruned {
            group: mls_group_id.clone(),
            after_seq,
            first_kept: Seq::new(first.seq),
        });
    }
    if events.is_empty() && after_seq < end_seq {
        return Err(FetchEventsError::Pruned {
            group: mls_group_id.clone(),
            after_seq,
            first_kept: end_seq.next(),
        });
    }
    Ok((events, end_seq))
}

fn federated_event(record: LogEvent) -> proto::FederatedEvent {
    let kind = match record.kind {
        EventKind::Commit => proto::EventKind::Commit,
        EventKind::Proposal => proto::EventKind::Proposal,
        EventKind::Application => proto::EventKind::Application,
    };
    proto::FederatedEvent {
        seq: record.seq.get(),
        kind: kind as i32,
        epoch: record.epoch.get(),
        sender: record.sender_identity,
        message: record.message,
        created_at_ms: record.created_at_ms,
        ..Default::default()
    }
}

/// The wait after the `failures`-th failure in a row: exponential, capped, with
/// "equal jitter" (between half and all of it) so that peers recovering together
/// do not retry in step. `fraction` is uniform in [0, 1).
fn backoff(failures: u32, fraction: f64) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    let full = FIRST_BACKOFF
        .saturating_mul(1u32 << exponent)
        .min(MAX_BACKOFF);
    full.mul_f64(0.5 + fraction.clamp(0.0, 1.0) / 2.0)
}

fn random_fraction() -> f64 {
    let mut bytes = [0u8; 8];
    // No randomness only means no jitter.
    let _ = getrandom::fill(&mut bytes);
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter_within_half() {
        assert_eq!(backoff(1, 1.0), FIRST_BACKOFF);
        assert_eq!(backoff(1, 0.0), FIRST_BACKOFF / 2);
        assert_eq!(backoff(3, 1.0), FIRST_BACKOFF * 4);
        assert_eq!(backoff(40, 1.0), MAX_BACKOFF);
        assert_eq!(backoff(40, 0.0), MAX_BACKOFF / 2);
        let fraction = random_fraction();
        assert!((0.0..1.0).contains(&fraction));
    }
}
