//! How the API's values read on a page: timestamps, states, outcomes.

use chrono::{DateTime, NaiveDate, Utc};
use conclave_proto::admin::v1::{CheckOutcome, RegistrationTokenState, Severity, UserState};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use prost_types::Timestamp;

/// `2026-12-03 23:10 UTC`, or `never` when unset.
pub(crate) fn timestamp(at: Option<&Timestamp>) -> String {
    timestamp_or(at, "never")
}

/// As [`timestamp`], with `unset` when there is none.
pub(crate) fn timestamp_or(at: Option<&Timestamp>, unset: &str) -> String {
    at.and_then(to_datetime)
        .map(|at| at.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|| unset.to_owned())
}

/// RFC 3339 with seconds, for the JSON lines export; empty when unset.
pub(crate) fn rfc3339(at: Option<&Timestamp>) -> String {
    at.and_then(to_datetime)
        .map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

fn to_datetime(at: &Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(at.seconds, u32::try_from(at.nanos).ok()?)
}

/// Midnight UTC at the start of `date`.
pub(crate) fn start_of_day(date: NaiveDate) -> Timestamp {
    Timestamp {
        seconds: date.and_time(chrono::NaiveTime::MIN).and_utc().timestamp(),
        nanos: 0,
    }
}

pub(crate) fn user_state(state: i32) -> &'static str {
    match UserState::try_from(state) {
        Ok(UserState::Active) => "active",
        Ok(UserState::Suspended) => "suspended",
        Ok(UserState::Deactivated) => "deactivated",
        _ => "unknown",
    }
}

pub(crate) fn token_state(state: i32) -> &'static str {
    match RegistrationTokenState::try_from(state) {
        Ok(RegistrationTokenState::Usable) => "usable",
        Ok(RegistrationTokenState::UsedUp) => "used up",
        Ok(RegistrationTokenState::Expired) => "expired",
        Ok(RegistrationTokenState::Revoked) => "revoked",
        _ => "unknown",
    }
}

/// `pass`, `warn`, `fail` or `skipped`: the value of `data-outcome`.
pub(crate) fn check_outcome(outcome: i32) -> &'static str {
    match CheckOutcome::try_from(outcome) {
        Ok(CheckOutcome::Pass) => "pass",
        Ok(CheckOutcome::Warn) => "warn",
        Ok(CheckOutcome::Fail) => "fail",
        Ok(CheckOutcome::Skipped) => "skipped",
        _ => "unknown",
    }
}

pub(crate) fn severity(severity: i32) -> &'static str {
    match Severity::try_from(severity) {
        Ok(Severity::Critical) => "critical",
        _ => "warning",
    }
}

/// Everything but unreserved characters is escaped, `/` and `@` included, so
/// a user id or token is one path segment or one query value.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `text` as one URL path segment.
pub(crate) fn segment(text: &str) -> String {
    utf8_percent_encode(text, SEGMENT).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_read_to_the_minute_in_utc() {
        let at = Timestamp {
            seconds: 1_796_339_400,
            nanos: 0,
        };
        assert_eq!(timestamp(Some(&at)), "2026-12-03 23:10 UTC");
        assert_eq!(rfc3339(Some(&at)), "2026-12-03T23:10:00Z");
        assert_eq!(timestamp(None), "never");
        assert_eq!(rfc3339(None), "");
    }

    #[test]
    fn a_user_id_is_one_segment() {
        assert_eq!(segment("alice@a.example"), "alice%40a.example");
        assert_eq!(segment("a/b"), "a%2Fb");
    }

    #[test]
    fn a_day_starts_at_midnight_utc() {
        let date = NaiveDate::from_ymd_opt(2026, 12, 3).expect("a date");
        assert_eq!(start_of_day(date).seconds, 1_796_256_000);
    }
}
