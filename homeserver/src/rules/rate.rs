//! A rate with a burst, kept as the generic cell rate algorithm (GCRA) keeps
//! it: per key one number, the time at which its bucket is full again. Used by
//! the attempt limits' bucket per source, the key-package claims per claimer
//! and the federation requests per peer, in this process and (with the same
//! numbers, in a Lua script) in Redis for a cluster.

/// So many events at once after a quiet spell (the burst), then one per
/// interval, sustained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rate {
    /// Milliseconds between two events at the sustained rate (at least 1).
    pub(crate) interval_ms: i64,
    /// Events an idle key may make at once (at least 1).
    pub(crate) burst: u32,
}

/// An event refused by its rate, and how long until the same event would pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RateExceeded {
    pub(crate) retry_after_ms: u64,
}

impl Rate {
    /// `per_minute` events per minute sustained, `burst` at once.
    pub(crate) fn per_minute(per_minute: u32, burst: u32) -> Rate {
        Rate {
            interval_ms: (60_000 / i64::from(per_minute.max(1))).max(1),
            burst: burst.max(1),
        }
    }

    /// How far "full again" may run ahead of now and still let an event
    /// through: the burst's worth of intervals but the one being spent.
    pub(crate) fn tolerance_ms(&self) -> i64 {
        self.interval_ms
            .saturating_mul(i64::from(self.burst.max(1) - 1))
    }

    /// Spends one event from a bucket that is full again at `full_again_at_ms`
    /// (`None`: no state, a full bucket): the new "full again" time, or the
    /// refusal (which spends nothing). Each event moves "full again" on by one
    /// interval; it may run ahead of now by at most the tolerance.
    pub(crate) fn take(
        &self,
        full_again_at_ms: Option<i64>,
        now_ms: i64,
    ) -> Result<i64, RateExceeded> {
        let full_again_at_ms = full_again_at_ms.map_or(now_ms, |at| at.max(now_ms));
        let ahead_ms = full_again_at_ms - now_ms;
        let tolerance_ms = self.tolerance_ms();
        if ahead_ms > tolerance_ms {
            return Err(RateExceeded {
                retry_after_ms: u64::try_from(ahead_ms - tolerance_ms).unwrap_or(u64::MAX), // tidy: saturating (positive here)
            });
        }
        Ok(full_again_at_ms.saturating_add(self.interval_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_is_its_burst_at_once_then_one_per_interval() {
        let rate = Rate::per_minute(10, 3);
        assert_eq!(rate.interval_ms, 6000);
        assert_eq!(rate.tolerance_ms(), 12_000);
        assert_eq!(rate.take(None, 0), Ok(6000));
        assert_eq!(rate.take(Some(6000), 0), Ok(12_000));
        assert_eq!(rate.take(Some(12_000), 0), Ok(18_000));
        let refused = |retry_after_ms| Err(RateExceeded { retry_after_ms });
        assert_eq!(rate.take(Some(18_000), 0), refused(6000));
        assert_eq!(rate.take(Some(18_000), 5999), refused(1));
        assert_eq!(rate.take(Some(18_000), 6000), Ok(24_000));
        // An idle bucket is full, and no fuller.
        assert_eq!(rate.take(Some(18_000), 600_000), Ok(606_000));
    }

    #[test]
    fn degenerate_settings_still_limit() {
        // More than one per millisecond, or a burst of 0: one at a time, each ms.
        let rate = Rate::per_minute(1_000_000, 0);
        assert_eq!((rate.interval_ms, rate.burst), (1, 1));
        assert_eq!(rate.take(None, 5), Ok(6));
        assert_eq!(
            rate.take(Some(6), 5),
            Err(RateExceeded { retry_after_ms: 1 })
        );
        assert_eq!(Rate::per_minute(0, 1).interval_ms, 60_000);
    }
}
