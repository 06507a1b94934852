//! The overview of the domain for the console's front page: counts (one
//! cheap query each) and warnings (`rules::admin_overview`).

use super::AdminError;
use crate::rules::admin_overview::{FailingPeer, OverviewFacts, OverviewWarning, warnings};
use crate::service::Context;
use crate::store;

const MILLIS_PER_DAY: i64 = 86_400_000;

/// The domain at a glance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Overview {
    pub(crate) counts: store::DomainCounts,
    /// `[federation.peers]`.
    pub(crate) peers: u64,
    /// Peers whose last delivery attempt failed.
    pub(crate) peers_failing: u64,
    /// Events of hosted groups not yet confirmed by their followers.
    pub(crate) outbox_depth: u64,
    pub(crate) devices_low_on_key_packages: u64,
    pub(crate) warnings: Vec<OverviewWarning>,
}

pub(crate) async fn overview(context: &Context) -> Result<Overview, AdminError> {
    let now_ms = context.now_ms();
    let counts = store::domain_counts(&context.store, now_ms).await?;
    let failing_peers: Vec<FailingPeer> = store::peer_statuses(&context.store)
        .await?
        .into_iter()
        .filter(|status| status.consecutive_failures > 0)
        .map(|status| FailingPeer {
            domain: status.domain,
            consecutive_failures: status.consecutive_failures,
            last_success_at_ms: status.last_success_at_ms,
            last_error: status.last_error,
        })
        .collect();
    let outbox_depth = store::outbox_depths(&context.store)
        .await?
        .iter()
        .map(|(_, depth)| depth)
        .sum();
    let stock = &context.config.key_packages;
    let active_since_ms = now_ms
        .saturating_sub(i64::from(stock.low_stock_active_days).saturating_mul(MILLIS_PER_DAY));
    let devices_low_on_key_packages = store::count_devices_low_on_key_packages(
        &context.store,
        stock.low_stock_threshold,
        now_ms,
        active_since_ms,
    )
    .await?;
    let facts = OverviewFacts {
        certificates: context
            .metrics
            .tls_certificate_expiries(&["client_api", "federation"]),
        failing_peers,
        devices_low_on_key_packages,
    };
    Ok(Overview {
        counts,
        peers: u64::try_from(context.config.federation.peers.len()).unwrap_or(u64::MAX), // tidy: saturating (a configuration that large cannot load)
        peers_failing: u64::try_from(facts.failing_peers.len()).unwrap_or(u64::MAX), // tidy: saturating (as many as peers)
        outbox_depth,
        devices_low_on_key_packages,
        warnings: warnings(&facts, now_ms),
    })
}
