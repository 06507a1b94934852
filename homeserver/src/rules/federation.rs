//! The hub's rules for its follower domains: when a domain starts and stops
//! receiving a group's events (its outbox cursor), as plain functions of the
//! cursor and the commit that changed the domain's membership; how large a
//! batch may be; how long to wait after failed deliveries.

use crate::rules::ids::Seq;
use std::time::Duration;

/// The wait after the first failed delivery, doubled per failure up to the
/// maximum.
pub(crate) const FIRST_RETRY_BACKOFF: Duration = Duration::from_millis(250);
pub(crate) const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(60);

/// The wait after the `failures`-th failure in a row: exponential, capped, with
/// "equal jitter" (between half and all of it) so that peers recovering together
/// do not retry in step. `fraction` is uniform in [0, 1).
pub(crate) fn retry_backoff(failures: u32, fraction: f64) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    let full = FIRST_RETRY_BACKOFF
        .saturating_mul(1u32 << exponent)
        .min(MAX_RETRY_BACKOFF);
    full.mul_f64(0.5 + fraction.clamp(0.0, 1.0) / 2.0)
}

/// How long `conclave_federation_peer_up` shows a call's outcome: at least 5
/// minutes, and twice the longest gap between two calls of the outbox to a
/// peer that hangs (a call running to its deadline, then the longest
/// back-off), so the series does not vanish between retries and reset an
/// alert's `for`.
pub(crate) fn peer_up_freshness(call_timeout: Duration) -> Duration {
    const AT_LEAST: Duration = Duration::from_secs(300);
    AT_LEAST.max(
        call_timeout
            .saturating_add(MAX_RETRY_BACKOFF)
            .saturating_mul(2),
    )
}

/// The bytes of events one DeliverEvents may carry, given the largest message
/// the peer accepts: half of it, which leaves room for the envelope. A single
/// event larger than that still goes, alone, since the hub accepted it.
pub(crate) fn outbox_byte_budget(max_message_bytes: usize) -> usize {
    max_message_bytes / 2
}

/// An event's size on the wire, counting the message, the Welcome and tree it
/// may carry, and a generous allowance for the other fields.
pub(crate) fn event_wire_size(message: &[u8], welcome: &[u8], ratchet_tree: &[u8]) -> usize {
    message.len() + welcome.len() + ratchet_tree.len() + 256
}

/// A follower domain's position in a group's log at the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FollowerCursor {
    /// The domain receives events after this one (the commit before the one that
    /// added its first device).
    pub(crate) joined_after_seq: Seq,
    /// The follower confirmed having everything up to here.
    pub(crate) delivered_seq: Seq,
    /// The commit that removed the domain's last device: its last event. `None`
    /// while it has member devices.
    pub(crate) until_seq: Option<Seq>,
}

impl FollowerCursor {
    /// True while the domain has events to receive.
    pub(crate) fn is_following(&self) -> bool {
        self.until_seq.is_none()
    }
}

/// The cursor after the commit at `commit_seq` added a device of the domain, or
/// `None` if it stays as it is.
pub(crate) fn cursor_on_join(
    existing: Option<FollowerCursor>,
    commit_seq: Seq,
) -> Option<FollowerCursor> {
    // It receives the adding commit itself: that is where its devices start.
    let starting_here = FollowerCursor {
        joined_after_seq: commit_seq.previous(),
        delivered_seq: commit_seq.previous(),
        until_seq: None,
    };
    match existing {
        None => Some(starting_here),
        // Still a follower: nothing changes.
        Some(cursor) if cursor.is_following() => None,
        // Left, and everything up to its leaving was delivered: it starts again
        // at this commit (what came between is none of its business).
        Some(cursor)
            if cursor
                .until_seq
                .is_some_and(|until| cursor.delivered_seq >= until) =>
        {
            Some(starting_here)
        }
        // Left, and still receiving what came before: it continues from there.
        Some(cursor) => Some(FollowerCursor {
            until_seq: None,
            ..cursor
        }),
    }
}

/// The cursor after the commit at `commit_seq` removed the domain's last device:
/// the domain receives up to that commit and then stops. `None` if there is no
/// cursor to end.
pub(crate) fn cursor_on_last_leave(
    existing: Option<FollowerCursor>,
    commit_seq: Seq,
) -> Option<FollowerCursor> {
    existing.map(|cursor| FollowerCursor {
        until_seq: Some(commit_seq),
        ..cursor
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cursor(joined_after: u64, delivered: u64, until: Option<u64>) -> FollowerCursor {
        FollowerCursor {
            joined_after_seq: Seq::new(joined_after),
            delivered_seq: Seq::new(delivered),
            until_seq: until.map(Seq::new),
        }
    }

    #[test]
    fn joining_starts_resumes_or_keeps_a_cursor() {
        let commit = Seq::new(10);
        let cases = [
            (
                "a new follower starts at the commit",
                None,
                Some(cursor(9, 9, None)),
            ),
            ("a follower stays as it is", Some(cursor(2, 7, None)), None),
            (
                "one that left and received everything starts again here",
                Some(cursor(2, 6, Some(6))),
                Some(cursor(9, 9, None)),
            ),
            (
                "one that left but still catches up continues",
                Some(cursor(2, 4, Some(6))),
                Some(cursor(2, 4, None)),
            ),
        ];
        for (case, existing, expected) in cases {
            assert_eq!(cursor_on_join(existing, commit), expected, "{case}");
        }
    }

    #[test]
    fn peer_up_stays_fresh_across_a_hanging_peers_retry_cycle() {
        assert_eq!(
            peer_up_freshness(Duration::from_secs(10)),
            Duration::from_secs(300)
        );
        // The longest deadline the configuration allows: 300 s hanging, then
        // 60 s of back-off, twice.
        assert_eq!(
            peer_up_freshness(Duration::from_secs(300)),
            Duration::from_secs(720)
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter_within_half() {
        assert_eq!(retry_backoff(1, 1.0), FIRST_RETRY_BACKOFF);
        assert_eq!(retry_backoff(1, 0.0), FIRST_RETRY_BACKOFF / 2);
        assert_eq!(retry_backoff(3, 1.0), FIRST_RETRY_BACKOFF * 4);
        assert_eq!(retry_backoff(40, 1.0), MAX_RETRY_BACKOFF);
        assert_eq!(retry_backoff(40, 0.0), MAX_RETRY_BACKOFF / 2);
    }

    #[test]
    fn a_batch_fills_half_the_message_limit() {
        assert_eq!(outbox_byte_budget(4 << 20), 2 << 20);
        assert_eq!(event_wire_size(&[0; 10], &[0; 5], &[0; 1]), 272);
    }

    #[test]
    fn the_last_leave_ends_delivery_at_the_removing_commit() {
        assert_eq!(
            cursor_on_last_leave(Some(cursor(2, 4, None)), Seq::new(8)),
            Some(cursor(2, 4, Some(8)))
        );
        assert_eq!(cursor_on_last_leave(None, Seq::new(8)), None);
    }
}
