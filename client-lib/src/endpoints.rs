//! The addresses of one homeserver (its replicas, when no load balancer stands
//! in front of them), which of them the client uses now, and how long to wait
//! before trying again after a connection is lost.
//!
//! A session belongs to a homeserver, not to an address: any replica serves
//! it, from the same database. So when the address in use is unreachable or
//! shutting down, the client moves to the next one it knows, round-robin, and
//! resumes from its durable cursors, losing and repeating nothing.

use std::time::Duration;

use crate::server_url::ServerUrl;

/// The first reconnection waits up to this long...
const FIRST_DELAY: Duration = Duration::from_millis(100);
/// ...doubling after each failure in a row, up to this.
const LONGEST_DELAY: Duration = Duration::from_secs(5);

/// The addresses configured for the session's homeserver, and the one in use.
#[derive(Debug, Default)]
pub(crate) struct Endpoints {
    /// As the caller gave them (`Client::with_server_endpoints`).
    configured: Vec<ServerUrl>,
    /// The address in use, once the client moved away from the session's.
    current: Option<ServerUrl>,
}

impl Endpoints {
    pub(crate) fn new(configured: Vec<ServerUrl>) -> Endpoints {
        let mut unique = Vec::with_capacity(configured.len());
        for url in configured {
            if !unique.contains(&url) {
                unique.push(url);
            }
        }
        Endpoints {
            configured: unique,
            current: None,
        }
    }

    /// Every address of the homeserver whose session address is `home`: the
    /// configured ones if `home` is among them, else `home` first.
    pub(crate) fn all(&self, home: &ServerUrl) -> Vec<ServerUrl> {
        if self.configured.contains(home) {
            return self.configured.clone();
        }
        std::iter::once(home.clone())
            .chain(self.configured.iter().cloned())
            .collect()
    }

    /// The address to use now.
    pub(crate) fn current(&self, home: &ServerUrl) -> ServerUrl {
        match &self.current {
            Some(current) if self.all(home).contains(current) => current.clone(),
            _ => home.clone(),
        }
    }

    /// Moves to the address after `failed` (if that is still the one in use:
    /// two callers noticing one failure move once). Returns the address to use
    /// now.
    pub(crate) fn move_past(&mut self, home: &ServerUrl, failed: &ServerUrl) -> ServerUrl {
        let current = self.current(home);
        if &current != failed {
            return current;
        }
        let all = self.all(home);
        let position = all.iter().position(|url| url == failed).unwrap_or(0);
        let next = all[(position + 1) % all.len()].clone();
        self.current = Some(next.clone());
        next
    }
}

/// How long to wait before the `attempt`-th reconnection in a row (from 0):
/// exponential back-off with full jitter, a uniformly random time between zero
/// and 100 ms doubling to 5 s, so that the clients of a replica that went away
/// do not all arrive at the next one at the same instant. `random` is a
/// uniform draw in [0, 1).
pub(crate) fn reconnect_delay(attempt: u32, random: f64) -> Duration {
    let ceiling = FIRST_DELAY
        .saturating_mul(1 << attempt.min(16))
        .min(LONGEST_DELAY);
    ceiling.mul_f64(random.clamp(0.0, 1.0))
}

/// A uniform draw in [0, 1) from the operating system's generator (0 if it
/// fails: no jitter then, only the back-off).
pub(crate) fn random_unit() -> f64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        return 0.0;
    }
    // 53 random bits: every value a f64 in [0, 1) can take at that spacing.
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(port: u16) -> ServerUrl {
        format!("http://127.0.0.1:{port}").parse().unwrap()
    }

    #[test]
    fn the_session_address_comes_first_and_failures_go_round() {
        let endpoints = Endpoints::new(vec![url(2), url(3), url(2)]);
        assert_eq!(endpoints.all(&url(1)), [url(1), url(2), url(3)]);
        assert_eq!(endpoints.all(&url(3)), [url(2), url(3)]);

        let mut endpoints = endpoints;
        let home = url(1);
        assert_eq!(endpoints.current(&home), url(1));
        assert_eq!(endpoints.move_past(&home, &url(1)), url(2));
        // A second caller reporting the same failure does not skip an address.
        assert_eq!(endpoints.move_past(&home, &url(1)), url(2));
        assert_eq!(endpoints.move_past(&home, &url(2)), url(3));
        assert_eq!(endpoints.move_past(&home, &url(3)), url(1));
        // One address: it stays.
        let mut alone = Endpoints::default();
        assert_eq!(alone.move_past(&home, &home), home);
    }

    #[test]
    fn delays_grow_to_a_cap_and_are_jittered_down_to_zero() {
        assert_eq!(reconnect_delay(0, 0.0), Duration::ZERO);
        assert_eq!(reconnect_delay(0, 0.5), Duration::from_millis(50));
        assert_eq!(reconnect_delay(3, 0.5), Duration::from_millis(400));
        assert_eq!(reconnect_delay(40, 0.5), Duration::from_millis(2500));
        assert!(reconnect_delay(40, 0.999_999) < LONGEST_DELAY);
        for _ in 0..100 {
            let draw = random_unit();
            assert!((0.0..1.0).contains(&draw), "{draw}");
        }
    }
}
