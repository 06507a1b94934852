//! The database connection pool, read at each scrape:
//! `conclave_db_pool_connections{state="idle"|"in_use"}` and
//! `conclave_db_pool_max_connections`. The maximum is a gauge of its own so
//! that summing the states gives the open connections.

use crate::store::Store;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric as _};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

/// Reads the pool's numbers from the store on every scrape.
#[derive(Debug)]
pub(crate) struct DatabasePoolCollector {
    pub(crate) store: Store,
}

impl Collector for DatabasePoolCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let pool = self.store.pool_connections();
        let gauge = |value: u64| ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX)); // tidy: saturating (a pool of 2^63 connections)
        let mut family = encoder.encode_descriptor(
            "conclave_db_pool_connections",
            "Open database connections of this replica's pool, idle or in use by a query or transaction",
            None,
            MetricType::Gauge,
        )?;
        for (state, value) in [("idle", pool.idle), ("in_use", pool.in_use)] {
            gauge(value).encode(family.encode_family(&StateLabels { state })?)?;
        }
        let max = gauge(pool.max);
        max.encode(encoder.encode_descriptor(
            "conclave_db_pool_max_connections",
            "Most connections this replica's database pool opens (database.max_connections)",
            None,
            max.metric_type(),
        )?)?;
        Ok(())
    }
}
