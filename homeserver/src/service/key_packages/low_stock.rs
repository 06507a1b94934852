//! `conclave_devices_low_on_key_packages`: every `telemetry.refresh_interval_ms`
//! one aggregate query counts this domain's devices seen within
//! `key_packages.low_stock_active_days` whose ordinary stock is below
//! `key_packages.low_stock_threshold`, and sets the gauge.
//!
//! Read from the database rather than counted as uploads and claims happen:
//! a claim, an upload, an expiry or another replica's work all move the
//! number, and only the database sees them all. Every replica runs it, so each
//! reports the same domain-wide number (aggregate with max, not sum).

use super::super::Context;
use crate::store;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

const MILLIS_PER_DAY: i64 = 86_400_000;

/// Refreshes the gauge at once, then every interval, until `stopped` resolves.
pub(crate) async fn run(context: Arc<Context>, stopped: impl Future<Output = ()>) {
    let period = Duration::from_millis(context.config.telemetry.refresh_interval_ms);
    let refresh = async {
        let mut interval = tokio::time::interval(period);
        // A slow database delays the next refresh instead of bunching them.
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            refresh_once(&context).await;
        }
    };
    tokio::select! {
        () = refresh => {}
        () = stopped => {}
    }
}

async fn refresh_once(context: &Context) {
    let settings = &context.config.key_packages;
    let now_ms = context.now_ms();
    let active_since_ms = now_ms
        .saturating_sub(i64::from(settings.low_stock_active_days).saturating_mul(MILLIS_PER_DAY));
    match store::count_devices_low_on_key_packages(
        &context.store,
        settings.low_stock_threshold,
        now_ms,
        active_since_ms,
    )
    .await
    {
        Ok(devices) => {
            let devices = i64::try_from(devices).unwrap_or(i64::MAX); // tidy: saturating (2^63 devices)
            context.metrics.devices_low_on_key_packages.set(devices);
        }
        // The gauge keeps its last value; the database's trouble shows on
        // `/readyz` and in the other metrics.
        Err(error) => tracing::warn!(%error, "could not count the devices low on key packages"),
    }
}
