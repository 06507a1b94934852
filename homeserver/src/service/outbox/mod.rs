//! The hub's federation outbox: each follower domain of a hosted group receives
//! the group's log after its cursor, in order, in batches, until it has
//! everything (or, once its last device left, up to the commit that removed it).
//!
//! The log itself is the outbox: a message costs no extra write per follower
//! domain, only the follower's cursor moves, after the follower confirmed what it
//! has (`DeliverEventsResponse.last_seq`). A batch lost on the way, or delivered
//! twice (a retry, or one still on the wire from a replica that lost the
//! peer's lease), is harmless: the follower applies each `(group, seq)` once.
//! One task per peer domain sends its batches one at a time (so each group's
//! events leave in order), wakes when a followed
//! group grows, and after a failure waits with exponential backoff and jitter,
//! cut short when the peer calls this homeserver (it is up again). Of a
//! domain's replicas, only the one holding the peer's lease (`outbox:{peer}`,
//! see `leases`) sends to it; the others wait to take over.
//!
//! Events travel as `conclave.federation.v1.FederatedEvent`, the wire type of the
//! federation client this module drives.

//!
//! # Layout
//! - this file: one delivery task per peer, its wake-ups and backoff
//!   (`rules::federation::retry_backoff`).
//! - `deliver_batch`: one pass over the groups with events a peer lacks (after
//!   the departures queued for it as a hub, `departures::announce_pending`).
//! - `backlog`: each peer's backlog as metrics, refreshed from the database.
//! - `fetch_events`: FetchEvents, a follower repairing its copy.

mod backlog;
mod deliver_batch;
mod fetch_events;

pub(crate) use fetch_events::{FetchEventsError, fetch_for_follower};

use super::Context;
use super::leases::outbox_lease;
use crate::notify::Topic;
use crate::rules::federation::{FIRST_RETRY_BACKOFF, retry_backoff};
use crate::store::{self, StoreError};
use conclave_core::ids::Domain;
use conclave_federation::client::{CallError, FederationClient};
use deliver_batch::deliver_pending;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// Groups looked at per pass for one peer.
const GROUPS_PER_PASS: u64 = 64;
/// With no wake-up, pending work is looked for this often anyway (a wake-up is
/// lost when another replica stored the event).
const POLL_INTERVAL: Duration = Duration::from_secs(2);
/// How often a peer's last success is written while deliveries keep succeeding.
const SUCCESS_RECORD_INTERVAL: Duration = Duration::from_secs(5);

/// Runs one delivery task per configured peer until `stopped` resolves, each
/// sending while this replica holds the peer's lease; returns once every task
/// has stopped and released its lease.
pub(crate) async fn run(
    context: Arc<Context>,
    federation: Arc<FederationClient>,
    peers: Vec<Domain>,
    stopped: impl Future<Output = ()>,
) {
    let (stop, stop_receiver) = tokio::sync::watch::channel(false);
    // A JoinSet aborts its tasks when dropped, so they stop with this future
    // even when it is aborted before `stopped` resolves.
    let mut tasks = tokio::task::JoinSet::new();
    {
        let (context, peers) = (context.clone(), peers.clone());
        let mut stop_receiver = stop_receiver.clone();
        tasks.spawn(async move {
            let stopped = async move {
                let _ = stop_receiver.wait_for(|stop| *stop).await;
            };
            backlog::refresh_periodically(&context, &peers, stopped).await;
        });
    }
    for peer in peers {
        let (context, federation) = (context.clone(), federation.clone());
        let mut stop_receiver = stop_receiver.clone();
        tasks.spawn(async move {
            let stopped = async move {
                let _ = stop_receiver.wait_for(|stop| *stop).await;
            };
            let lease = outbox_lease(peer.as_str());
            let work = || deliver_to_peer(context.clone(), federation.clone(), peer.clone());
            context
                .leases
                .run_while_holding(&lease, stopped, work)
                .await;
        });
    }
    stopped.await;
    let _ = stop.send(true);
    while tasks.join_next().await.is_some() {}
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
                    backlog::drained(&context, &peer);
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
                // While the peer is down its backlog grows: show it now, not
                // at the next periodic refresh.
                if let Err(error) = backlog::refresh(&context, std::slice::from_ref(&peer)).await {
                    tracing::warn!(peer_domain = %peer, %error, "could not read the outbox backlog");
                }
                let wait = retry_backoff(failures, random_fraction());
                let started = tokio::time::Instant::now();
                if tokio::time::timeout(wait, peer_alive.notified())
                    .await
                    .is_ok()
                {
                    // Retry soon, though never faster than the first backoff: a
                    // peer that calls often but refuses our calls is not hammered.
                    tracing::info!(peer_domain = %peer, "peer called in; retrying delivery");
                    tokio::time::sleep_until(started + FIRST_RETRY_BACKOFF).await;
                }
            }
        }
    }
}

/// Whether a pass left work behind.
pub(super) enum Progress {
    More,
    Done,
}

/// Why a pass stopped.
#[derive(Debug, thiserror::Error)]
pub(super) enum DeliveryError {
    #[error(transparent)]
    Call(#[from] CallError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Telling the peer of a departure failed.
    #[error(transparent)]
    Departure(#[from] super::departures::AnnounceError),
}

/// A uniform number in [0, 1), for the backoff's jitter.
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
    fn the_jitter_fraction_is_in_range() {
        let fraction = random_fraction();
        assert!((0.0..1.0).contains(&fraction));
    }
}
