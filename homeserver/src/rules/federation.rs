//! The hub's rules for its follower domains: when a domain starts and stops
//! receiving a group's events (its outbox cursor), as plain functions of the
//! cursor and the commit that changed the domain's membership.

use crate::rules::ids::Seq;

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
    fn the_last_leave_ends_delivery_at_the_removing_commit() {
        assert_eq!(
            cursor_on_last_leave(Some(cursor(2, 4, None)), Seq::new(8)),
            Some(cursor(2, 4, Some(8)))
        );
        assert_eq!(cursor_on_last_leave(None, Seq::new(8)), None);
    }
}
