//! Identifiers and counters of the hub's logs, as types that cannot be mixed up:
//! an MLS group id, the homeserver's own key for a group, a log sequence number,
//! an epoch. The store converts them from and to database integers with checks
//! (see `store::convert`); everywhere else they are trusted.

use std::fmt;

/// An MLS group id: opaque bytes chosen by the group's creator. Shown as hex.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct GroupId(Vec<u8>);

impl GroupId {
    pub(crate) fn new(bytes: Vec<u8>) -> GroupId {
        GroupId(bytes)
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.0
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<&[u8]> for GroupId {
    fn from(bytes: &[u8]) -> GroupId {
        GroupId(bytes.to_vec())
    }
}

/// Most bytes of a group id shown (as hex) in messages and logs; a longer id is
/// cut and marked with an ellipsis, so a client's 100 KB group id cannot make an
/// error message too large to send.
pub(crate) const MAX_SHOWN_GROUP_ID_BYTES: usize = 32;

impl fmt::Display for GroupId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.get(..MAX_SHOWN_GROUP_ID_BYTES) {
            Some(shown) if self.0.len() > MAX_SHOWN_GROUP_ID_BYTES => {
                write!(formatter, "{}…", hex::encode(shown))
            }
            _ => formatter.write_str(&hex::encode(&self.0)),
        }
    }
}

impl fmt::Debug for GroupId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "GroupId({self})")
    }
}

/// This homeserver's key for a group it hosts or follows (the `groups` row):
/// shorter than the MLS group id, and what every per-group table is keyed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct GroupKey(i64);

impl GroupKey {
    /// Only the store makes keys, from rows it read or wrote.
    pub(crate) fn from_row(row_id: i64) -> GroupKey {
        GroupKey(row_id)
    }

    pub(crate) fn row_id(self) -> i64 {
        self.0
    }
}

/// A position in a group's log (or a device's inbox): dense, from 1; 0 means
/// "before the first event".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub(crate) struct Seq(u64);

impl Seq {
    /// Before the first event.
    pub(crate) const ZERO: Seq = Seq(0);

    pub(crate) const fn new(value: u64) -> Seq {
        Seq(value)
    }

    pub(crate) fn get(self) -> u64 {
        self.0
    }

    /// The position after this one.
    pub(crate) fn next(self) -> Seq {
        Seq(self.0.saturating_add(1))
    }

    /// The position before this one (0 stays 0).
    pub(crate) fn previous(self) -> Seq {
        Seq(self.0.saturating_sub(1))
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(formatter)
    }
}

/// An MLS epoch (RFC 9420 section 8): 0 at creation, one more with each commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub(crate) struct Epoch(u64);

impl Epoch {
    pub(crate) const fn new(value: u64) -> Epoch {
        Epoch(value)
    }

    pub(crate) fn get(self) -> u64 {
        self.0
    }

    /// The epoch a commit in this one starts.
    pub(crate) fn next(self) -> Epoch {
        Epoch(self.0.saturating_add(1))
    }

    /// The epoch before (0 stays 0).
    pub(crate) fn previous(self) -> Option<Epoch> {
        self.0.checked_sub(1).map(Epoch)
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(formatter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_group_ids_are_shown_cut() {
        assert_eq!(GroupId::new(vec![0xab; 2]).to_string(), "abab");
        let at_the_limit = GroupId::new(vec![0xab; MAX_SHOWN_GROUP_ID_BYTES]);
        assert_eq!(
            at_the_limit.to_string(),
            "ab".repeat(MAX_SHOWN_GROUP_ID_BYTES)
        );
        let long = GroupId::new(vec![0xab; 100_000]);
        assert_eq!(
            long.to_string(),
            format!("{}…", "ab".repeat(MAX_SHOWN_GROUP_ID_BYTES))
        );
    }
}
