//! Each peer's outbox backlog as metrics: `conclave_federation_outbox_pending`
//! and `conclave_federation_outbox_oldest_age_seconds`.
//!
//! Every replica refreshes them for every configured peer from the database
//! every `telemetry.refresh_interval_ms`, whether or not it holds the peer's
//! lease: so each replica reports the domain-wide backlog (the same numbers; a
//! dashboard aggregates them with `max`, not `sum`). The replica delivering to
//! a peer also refreshes the peer's after each failed pass (it rises while the
//! peer is down) and sets it to 0 when a pass finds nothing left (it drained).
//! With `[telemetry] metrics = false` nothing is read.

use super::super::Context;
use crate::store::{self, StoreError};
use conclave_core::ids::Domain;
use std::future::Future;
use std::time::Duration;

/// The age in seconds, at `now_ms`, of an event stored at `created_at_ms`;
/// never negative (another replica's clock may run a little ahead).
fn age_seconds(now_ms: i64, created_at_ms: i64) -> f64 {
    now_ms.saturating_sub(created_at_ms).max(0) as f64 / 1000.0
}

/// Reads the backlogs and sets the gauges of `peers` (0 for a peer without
/// pending events); nothing when metrics are off.
pub(super) async fn refresh(context: &Context, peers: &[Domain]) -> Result<(), StoreError> {
    if !context.config.telemetry.metrics {
        return Ok(());
    }
    let backlogs = store::outbox_backlogs(&context.store).await?;
    let now_ms = context.now_ms();
    for peer in peers {
        let backlog = backlogs
            .iter()
            .find(|backlog| backlog.peer_domain == peer.as_str());
        let pending = backlog.map_or(0, |backlog| backlog.pending);
        let oldest_age = backlog
            .and_then(|backlog| backlog.oldest_created_at_ms)
            .map_or(0.0, |created_at_ms| age_seconds(now_ms, created_at_ms));
        context
            .metrics
            .set_outbox_backlog(peer, pending, oldest_age);
    }
    Ok(())
}

/// The peer's outbox is empty: its delivery pass found nothing to send.
pub(super) fn drained(context: &Context, peer: &Domain) {
    context.metrics.set_outbox_backlog(peer, 0, 0.0);
}

/// Refreshes every peer's backlog until `stopped` resolves (at once when
/// metrics are off).
pub(super) async fn refresh_periodically(
    context: &Context,
    peers: &[Domain],
    stopped: impl Future<Output = ()>,
) {
    if !context.config.telemetry.metrics {
        return;
    }
    context.metrics.start_federation_peers(peers);
    let period = Duration::from_millis(context.config.telemetry.refresh_interval_ms);
    let refreshing = async {
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            if let Err(error) = refresh(context, peers).await {
                tracing::warn!(%error, "could not read the federation outbox backlogs");
            }
        }
    };
    tokio::select! {
        _ = refreshing => {}
        () = stopped => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_are_in_seconds_and_never_negative() {
        for (now_ms, created_at_ms, expected) in [
            (10_000, 10_000, 0.0),
            (10_250, 10_000, 0.25),
            (70_000, 10_000, 60.0),
            (9_000, 10_000, 0.0),
        ] {
            assert_eq!(
                age_seconds(now_ms, created_at_ms),
                expected,
                "{now_ms} - {created_at_ms}"
            );
        }
    }
}
