//! `conclave_federation_peer_up{peer}`: whether this replica's last call to a
//! peer domain reached it, rendered only while that call is recent.
//!
//! Why not a plain gauge: in a cluster, each replica calls a peer only now and
//! then (the outbox's sender calls it on every delivery and retry, the others
//! only to claim key packages or relay a submission). A gauge would keep a
//! replica's last value forever, so a replica that reached the peer an hour
//! ago would report 1 through an outage, and one that failed once would
//! report 0 long after the peer came back; neither `max` nor `min` over
//! replicas would then tell the truth. Rendering only outcomes younger than
//! the freshness window leaves the replicas that are actually calling the
//! peer: the outbox retries while events wait, at most a call's deadline plus
//! the longest back-off apart, and the window
//! ([`crate::rules::federation::peer_up_freshness`], set when the server
//! starts) is longer than that, so its sender's view stays visible for as long
//! as the peer is down.

use super::PeerLabels;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long an outcome is rendered after the call that produced it until the
/// server sets the window its federation settings need.
const DEFAULT_FRESHNESS: Duration = Duration::from_secs(300);

/// The last outcome of this replica's calls to each peer, and when it came.
#[derive(Debug, Clone)]
pub(crate) struct PeerReachability {
    last: Arc<Mutex<BTreeMap<String, (bool, Instant)>>>,
    /// How long an outcome is rendered, in milliseconds.
    freshness_millis: Arc<AtomicU64>,
}

impl Default for PeerReachability {
    fn default() -> PeerReachability {
        PeerReachability {
            last: Arc::default(),
            freshness_millis: Arc::new(AtomicU64::new(millis(DEFAULT_FRESHNESS))),
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX) // tidy: saturating (585 million years)
}

impl PeerReachability {
    /// Render each outcome for `freshness` after its call.
    pub(crate) fn set_freshness(&self, freshness: Duration) {
        self.freshness_millis
            .store(millis(freshness), Ordering::Relaxed);
    }

    fn freshness(&self) -> Duration {
        Duration::from_millis(self.freshness_millis.load(Ordering::Relaxed))
    }

    /// A call to `peer` just ended; `reached` if the peer produced its answer.
    pub(crate) fn record(&self, peer: &str, reached: bool) {
        self.lock()
            .insert(peer.to_owned(), (reached, Instant::now()));
    }

    /// Each peer whose last outcome is younger than the freshness window at
    /// `now`, with that outcome.
    fn fresh(&self, now: Instant) -> Vec<(String, bool)> {
        let freshness = self.freshness();
        self.lock()
            .iter()
            .filter(|(_, (_, at))| now.saturating_duration_since(*at) < freshness)
            .map(|(peer, (reached, _))| (peer.clone(), *reached))
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, (bool, Instant)>> {
        // The map is consistent after every insert; a panic elsewhere while
        // it was held leaves nothing half-written.
        self.last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Collector for PeerReachability {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let fresh = self.fresh(Instant::now());
        if fresh.is_empty() {
            return Ok(());
        }
        let mut family = encoder.encode_descriptor(
            "conclave_federation_peer_up",
            "1 when this replica's last call to the peer domain, if recent (5 minutes, or twice (the federation call timeout + 60 s) if longer), reached it; 0 when it did not",
            None,
            MetricType::Gauge,
        )?;
        for (peer, reached) in fresh {
            ConstGauge::new(i64::from(reached))
                .encode(family.encode_family(&PeerLabels { peer })?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_recent_outcomes_are_rendered() {
        let reachability = PeerReachability::default();
        reachability.record("b.example", true);
        reachability.record("c.example", false);
        let now = Instant::now();
        assert_eq!(
            reachability.fresh(now),
            vec![
                ("b.example".to_owned(), true),
                ("c.example".to_owned(), false)
            ]
        );
        assert_eq!(reachability.fresh(now + DEFAULT_FRESHNESS), vec![]);
        reachability.record("c.example", true);
        assert_eq!(
            reachability.fresh(now + DEFAULT_FRESHNESS),
            vec![("c.example".to_owned(), true)]
        );
    }

    #[test]
    fn the_window_follows_the_freshness_set() {
        let reachability = PeerReachability::default();
        reachability.set_freshness(Duration::from_secs(720));
        reachability.record("b.example", false);
        let now = Instant::now();
        assert_eq!(
            reachability.fresh(now + Duration::from_secs(700)),
            vec![("b.example".to_owned(), false)]
        );
        assert_eq!(reachability.fresh(now + Duration::from_secs(720)), vec![]);
    }
}
