//! Checked conversions between the database's signed integers and the domain's
//! counters. A stored value that does not fit (a negative sequence number, say)
//! is corruption: it is reported with the row it came from, never read as 0.
//! Going the other way, a counter beyond `i64::MAX` cannot be stored.

use super::StoreError;
use crate::rules::ids::{Epoch, GroupKey, Seq};
use std::fmt::Display;
use std::str::FromStr;

/// A stored non-negative integer, or corruption in `row`.
pub(crate) fn to_u64(value: i64, row: impl Display, column: &str) -> Result<u64, StoreError> {
    u64::try_from(value)
        .map_err(|_| StoreError::Corrupt(format!("{row}: {column} is {value}, which is negative")))
}

pub(crate) fn to_seq(value: i64, row: impl Display, column: &str) -> Result<Seq, StoreError> {
    to_u64(value, row, column).map(Seq::new)
}

pub(crate) fn to_epoch(value: i64, row: impl Display, column: &str) -> Result<Epoch, StoreError> {
    to_u64(value, row, column).map(Epoch::new)
}

/// A stored text value parsed into its domain type (a username, a device id), or
/// corruption in `row`: it was checked when it was stored.
pub(crate) fn to_parsed<T>(value: &str, row: impl Display, column: &str) -> Result<T, StoreError>
where
    T: FromStr,
    T::Err: Display,
{
    value.parse().map_err(|error| {
        StoreError::Corrupt(format!("{row}: {column} {value:?} is not valid: {error}"))
    })
}

/// A counter as the database stores it.
pub(crate) fn to_i64(value: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(value)
        .map_err(|_| StoreError::Corrupt(format!("{what} {value} is too large to store")))
}

pub(crate) fn seq_to_db(seq: Seq) -> Result<i64, StoreError> {
    to_i64(seq.get(), "sequence number")
}

pub(crate) fn epoch_to_db(epoch: Epoch) -> Result<i64, StoreError> {
    to_i64(epoch.get(), "epoch")
}

/// Names a group's row in corruption reports.
pub(crate) fn group_row(key: GroupKey) -> String {
    format!("group row {}", key.row_id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_that_do_not_fit_are_errors_naming_the_row() {
        assert_eq!(to_seq(7, "group row 1", "last_seq").unwrap(), Seq::new(7));
        let error = to_seq(-1, "group row 1", "last_seq").unwrap_err();
        assert_eq!(
            error.to_string(),
            "stored data is corrupt: group row 1: last_seq is -1, which is negative"
        );
        assert!(to_epoch(-5, "x", "epoch").is_err());
        assert_eq!(seq_to_db(Seq::new(3)).unwrap(), 3);
        assert!(seq_to_db(Seq::new(u64::MAX)).is_err());
        assert!(epoch_to_db(Epoch::new(u64::MAX)).is_err());
    }

    #[test]
    fn text_that_does_not_parse_is_an_error_naming_the_row() {
        let parsed: Result<u8, _> = to_parsed("7", "device row x", "count");
        assert_eq!(parsed.unwrap(), 7);
        let error = to_parsed::<u8>("-1", "device row x", "count").unwrap_err();
        assert_eq!(
            error.to_string(),
            "stored data is corrupt: device row x: count \"-1\" is not valid: invalid digit found in string"
        );
    }
}
