//! `conclave_redis_up`: whether this replica reaches Redis, read at each
//! scrape from the link's own view (every command's result and a PING a
//! second). Registered in cluster mode only: without `[redis]` the metric is
//! absent, as there is nothing to reach.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
use prometheus_client::metrics::gauge::ConstGauge;
use tokio::sync::watch;

/// Reads the link's up/down state on every scrape.
#[derive(Debug)]
pub(crate) struct RedisUpCollector {
    /// `RedisLink::watch_up()`: true while Redis answers.
    pub(crate) up: watch::Receiver<bool>,
}

impl Collector for RedisUpCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let gauge = ConstGauge::new(i64::from(*self.up.borrow()));
        gauge.encode(encoder.encode_descriptor(
            "conclave_redis_up",
            "1 when this replica reaches Redis (cluster mode), 0 when it does not",
            None,
            gauge.metric_type(),
        )?)
    }
}
