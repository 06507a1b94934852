//! A clock that tests can move forward, for expiries and rate limits.

use conclave_homeserver::{Clock, SystemClock};
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// The system clock plus an offset that only grows.
#[derive(Debug, Default)]
pub struct AdjustableClock {
    offset_ms: AtomicI64,
}

impl AdjustableClock {
    pub fn advance(&self, by: Duration) {
        let by_ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.offset_ms.fetch_add(by_ms, Ordering::SeqCst);
    }
}

impl Clock for AdjustableClock {
    fn now_ms(&self) -> i64 {
        SystemClock.now_ms() + self.offset_ms.load(Ordering::SeqCst)
    }
}
