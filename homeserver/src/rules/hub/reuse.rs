//! When the hub may judge a commit against a group's public state it kept in
//! memory instead of reading and parsing the stored one: only when the kept
//! state is exactly the stored state.

use crate::rules::ids::{Epoch, Seq};

/// What a group's public state reflects: its epoch, and the newest log entry
/// (of any kind) when it was read or written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StatePosition {
    pub(crate) epoch: Epoch,
    pub(crate) seq: Seq,
}

/// Whether a kept state may stand for the stored one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reuse {
    Yes,
    /// Only if no log entry in `(after, up_to]` changed the state. Within an
    /// epoch only a proposal does (a commit ends the epoch); application
    /// messages and departure notices only grow the log.
    IfUnchangedBetween {
        after: Seq,
        up_to: Seq,
    },
    /// Read the stored state.
    No,
}

/// `kept`: where the state in memory stands; `stored`: the group's row now,
/// read under its lock. Another replica's commit moves the epoch; its proposal
/// moves the log within the epoch; a log that went back (a restored database)
/// is never trusted.
pub(crate) fn reuse(kept: StatePosition, stored: StatePosition) -> Reuse {
    if kept.epoch != stored.epoch {
        return Reuse::No;
    }
    match kept.seq.cmp(&stored.seq) {
        std::cmp::Ordering::Equal => Reuse::Yes,
        std::cmp::Ordering::Less => Reuse::IfUnchangedBetween {
            after: kept.seq,
            up_to: stored.seq,
        },
        std::cmp::Ordering::Greater => Reuse::No,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(epoch: u64, seq: u64) -> StatePosition {
        StatePosition {
            epoch: Epoch::new(epoch),
            seq: Seq::new(seq),
        }
    }

    #[test]
    fn the_same_position_is_reused() {
        assert_eq!(reuse(at(3, 10), at(3, 10)), Reuse::Yes);
    }

    #[test]
    fn another_epoch_is_read_again() {
        assert_eq!(reuse(at(3, 10), at(4, 11)), Reuse::No);
        // A commit on another replica moved the epoch; an older row never counts.
        assert_eq!(reuse(at(4, 11), at(3, 10)), Reuse::No);
    }

    #[test]
    fn entries_since_in_the_same_epoch_must_be_checked() {
        assert_eq!(
            reuse(at(3, 10), at(3, 14)),
            Reuse::IfUnchangedBetween {
                after: Seq::new(10),
                up_to: Seq::new(14)
            }
        );
    }

    #[test]
    fn a_log_that_went_back_is_read_again() {
        assert_eq!(reuse(at(3, 10), at(3, 9)), Reuse::No);
    }
}
