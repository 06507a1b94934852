//! What an administrator's group search asks for (`ListGroups.query`), the
//! order groups are listed in, and how far a cursor is behind a log.

use conclave_core::ids::UserId;

/// Longest hex query: the digits of a 255-byte group id.
pub(crate) const MAX_ID_HEX_DIGITS: usize = 510;

/// The groups a search selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum GroupSearch {
    /// Every group.
    All,
    /// Groups whose MLS id starts with some hex digits: the ids in this range.
    IdPrefix(IdRange),
    /// Groups a current member device of this user is in.
    Member(UserId),
}

/// The group ids from `from` (inclusive) to `to` (exclusive; `None`: no end),
/// compared byte by byte as both databases compare binary strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IdRange {
    pub(crate) from: Vec<u8>,
    pub(crate) to: Option<Vec<u8>>,
}

/// Why a search is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum GroupSearchError {
    #[error("query {0:?} is neither hex digits of a group id nor a user id name@domain")]
    Unrecognised(String),
    #[error("query {query:?} is not a valid user id: {reason}")]
    BadUserId { query: String, reason: String },
    #[error("query has {0} hex digits; a group id has at most {MAX_ID_HEX_DIGITS}")]
    TooLong(usize),
}

/// Reads a search: empty for all groups, a user id (it has an `@`), or hex
/// digits (either case) that group ids start with.
pub(crate) fn parse_group_search(query: &str) -> Result<GroupSearch, GroupSearchError> {
    let query = query.trim();
    if query.is_empty() {
        return Ok(GroupSearch::All);
    }
    if query.contains('@') {
        return query
            .parse::<UserId>()
            .map(GroupSearch::Member)
            .map_err(|error| GroupSearchError::BadUserId {
                query: conclave_core::ids::echo(query),
                reason: error.to_string(),
            });
    }
    if !query.chars().all(|digit| digit.is_ascii_hexdigit()) {
        return Err(GroupSearchError::Unrecognised(conclave_core::ids::echo(
            query,
        )));
    }
    if query.len() > MAX_ID_HEX_DIGITS {
        return Err(GroupSearchError::TooLong(query.len()));
    }
    Ok(GroupSearch::IdPrefix(id_prefix_range(query)))
}

/// The ids whose hex starts with `hex_digits` (checked to be hex digits): from
/// the digits padded with `0` to whole bytes, to the next prefix of the same
/// length (the digits plus one, in base 16), none if they are all `f`.
fn id_prefix_range(hex_digits: &str) -> IdRange {
    let nibbles: Vec<u8> = hex_digits
        .chars()
        .filter_map(|digit| digit.to_digit(16))
        .map(|nibble| nibble as u8) // tidy: lossless (a hex digit is below 16)
        .collect();
    let mut next = nibbles.clone();
    while next.last() == Some(&0xf) {
        next.pop();
    }
    let to = match next.last_mut() {
        Some(last) => {
            *last += 1;
            Some(to_bytes(&next))
        }
        None => None,
    };
    IdRange {
        from: to_bytes(&nibbles),
        to,
    }
}

/// Nibbles as bytes, the last one padded with a 0 nibble.
fn to_bytes(nibbles: &[u8]) -> Vec<u8> {
    nibbles
        .chunks(2)
        .map(|pair| {
            pair.iter()
                .zip([4, 0])
                .fold(0, |byte, (nibble, shift)| byte | (nibble << shift))
        })
        .collect()
}

/// Where a listing of groups stands: groups are listed most recently active
/// first, ties by their row, newest first. A page token holds the last listed
/// group's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ActivityKey {
    pub(crate) last_activity_at_ms: i64,
    pub(crate) row_id: i64,
}

impl ActivityKey {
    /// `at_ms:row`, for a page token.
    pub(crate) fn to_page_key(self) -> String {
        format!("{}:{}", self.last_activity_at_ms, self.row_id)
    }

    /// The key a page token held; `None` if it holds something else.
    pub(crate) fn from_page_key(text: &str) -> Option<ActivityKey> {
        let (at_ms, row_id) = text.split_once(':')?;
        Some(ActivityKey {
            last_activity_at_ms: at_ms.parse().ok()?,
            row_id: row_id.parse().ok()?,
        })
    }
}

/// Events of a log up to `last_seq` a cursor at `acked_seq` has not
/// acknowledged (none if it is ahead, as a removed device's may be).
pub(crate) fn events_behind(last_seq: u64, acked_seq: u64) -> u64 {
    last_seq.saturating_sub(acked_seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(from: &[u8], to: Option<&[u8]>) -> GroupSearch {
        GroupSearch::IdPrefix(IdRange {
            from: from.to_vec(),
            to: to.map(<[u8]>::to_vec),
        })
    }

    #[test]
    fn searches_are_read() {
        for (query, expected) in [
            ("", Ok(GroupSearch::All)),
            ("  ", Ok(GroupSearch::All)),
            ("ab", Ok(range(&[0xab], Some(&[0xac])))),
            ("AB", Ok(range(&[0xab], Some(&[0xac])))),
            ("a", Ok(range(&[0xa0], Some(&[0xb0])))),
            ("abf", Ok(range(&[0xab, 0xf0], Some(&[0xac])))),
            ("0fff", Ok(range(&[0x0f, 0xff], Some(&[0x10])))),
            ("ff", Ok(range(&[0xff], None))),
            ("f", Ok(range(&[0xf0], None))),
            (
                "alice@a.example",
                Ok(GroupSearch::Member("alice@a.example".parse().unwrap())),
            ),
            ("xyz", Err(GroupSearchError::Unrecognised("xyz".to_owned()))),
        ] {
            assert_eq!(parse_group_search(query), expected, "{query:?}");
        }
        assert!(matches!(
            parse_group_search("@a.example"),
            Err(GroupSearchError::BadUserId { .. })
        ));
        assert_eq!(
            parse_group_search(&"a".repeat(MAX_ID_HEX_DIGITS + 2)),
            Err(GroupSearchError::TooLong(MAX_ID_HEX_DIGITS + 2))
        );
    }

    /// The range holds exactly the ids whose hex starts with the digits.
    #[test]
    fn a_prefix_range_holds_exactly_the_ids_starting_with_it() {
        let ids: Vec<Vec<u8>> = vec![
            vec![],
            vec![0x0a],
            vec![0xab],
            vec![0xab, 0x00],
            vec![0xab, 0xef],
            vec![0xab, 0xf0],
            vec![0xab, 0xff, 0x01],
            vec![0xac],
            vec![0xff],
            vec![0xff, 0xff],
        ];
        for prefix in ["a", "ab", "abf", "abff", "ac", "f", "ff", "fff", "0"] {
            let GroupSearch::IdPrefix(range) = parse_group_search(prefix).unwrap() else {
                panic!("{prefix} is a prefix");
            };
            for id in &ids {
                let in_range = id.as_slice() >= range.from.as_slice()
                    && range
                        .to
                        .as_ref()
                        .is_none_or(|to| id.as_slice() < to.as_slice());
                let starts = hex::encode(id).starts_with(prefix);
                assert_eq!(in_range, starts, "{prefix} and {}", hex::encode(id));
            }
        }
    }

    #[test]
    fn page_keys_round_trip_and_refuse_anything_else() {
        let key = ActivityKey {
            last_activity_at_ms: 1_700_000_000_123,
            row_id: 42,
        };
        assert_eq!(ActivityKey::from_page_key(&key.to_page_key()), Some(key));
        for bad in ["", "12", "a:b", "1:2:3", ":5"] {
            assert_eq!(ActivityKey::from_page_key(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn behind_counts_unacknowledged_events() {
        assert_eq!(events_behind(10, 4), 6);
        assert_eq!(events_behind(10, 10), 0);
        assert_eq!(events_behind(3, 5), 0);
    }
}
