//! The federation doctor's judgements, apart from the I/O that gathers what
//! they judge: each check's outcome and its one-sentence detail (what was
//! found; on failure, what was wrong and what to do), a certificate's validity
//! at a time (shared with `preflight`, which judges the configured
//! certificates at a start), the clock skew from one round trip, the protocol
//! version, and which checks a failure leaves impossible (SKIPPED).

use std::time::Duration;

/// A certificate expiring sooner than this is worth a warning: time to renew
/// it before peers and clients refuse it.
pub(crate) const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);
/// A peer clock further off than this is worth a warning: certificates and
/// enrolment challenges are judged by each side's clock.
pub(crate) const CLOCK_SKEW_WARNING_MS: i64 = 30_000;
/// A peer clock further off than this fails: enrolment challenges live five
/// minutes, and leases and retention assume clocks agree far better.
pub(crate) const CLOCK_SKEW_FAILURE_MS: i64 = 5 * 60_000;

/// How a check came out (`conclave.admin.v1.CheckOutcome`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum CheckOutcome {
    Pass,
    /// Passed, but needs attention soon.
    Warn,
    Fail,
    /// Could not run because an earlier check failed.
    Skipped,
}

impl CheckOutcome {
    /// `PASS`, `WARN`, `FAIL`, `SKIPPED`, as the CLI prints it.
    pub(crate) fn label(self) -> &'static str {
        match self {
            CheckOutcome::Pass => "PASS",
            CheckOutcome::Warn => "WARN",
            CheckOutcome::Fail => "FAIL",
            CheckOutcome::Skipped => "SKIPPED",
        }
    }
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct DoctorCheck {
    /// Its stable name, such as `certificate_name`.
    pub(crate) name: &'static str,
    pub(crate) outcome: CheckOutcome,
    /// One sentence: what was found (on failure: what was wrong and what to do).
    pub(crate) detail: String,
    pub(crate) duration_ms: u32,
}

/// The doctor's findings for a peer, or for this homeserver's own certificate.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct DoctorReport {
    /// The domain checked (ours for the own certificate).
    pub(crate) domain: String,
    /// `host:port` connected to; empty for the own certificate.
    pub(crate) endpoint: String,
    /// In the order they ran.
    pub(crate) checks: Vec<DoctorCheck>,
    /// When the checks ran, in milliseconds since the Unix epoch.
    pub(crate) checked_at_ms: i64,
}

impl DoctorReport {
    /// True if no check failed (warnings and skips after a pass allowed).
    pub(crate) fn healthy(&self) -> bool {
        self.checks
            .iter()
            .all(|check| check.outcome != CheckOutcome::Fail)
    }

    /// The audit entry's detail: the count of each outcome and the checks
    /// that failed or warned, such as
    /// `6 passed, 0 warned, 1 failed (certificate_name), 1 skipped`.
    pub(crate) fn summary(&self) -> String {
        let named = |outcome: CheckOutcome| -> (usize, String) {
            let names: Vec<&str> = self
                .checks
                .iter()
                .filter(|check| check.outcome == outcome)
                .map(|check| check.name)
                .collect();
            let listed = match (outcome, names.is_empty()) {
                (CheckOutcome::Warn | CheckOutcome::Fail, false) => {
                    format!(" ({})", names.join(", "))
                }
                _ => String::new(),
            };
            (names.len(), listed)
        };
        let (passed, _) = named(CheckOutcome::Pass);
        let (warned, warned_names) = named(CheckOutcome::Warn);
        let (failed, failed_names) = named(CheckOutcome::Fail);
        let (skipped, _) = named(CheckOutcome::Skipped);
        format!(
            "{passed} passed, {warned} warned{warned_names}, {failed} failed{failed_names}, {skipped} skipped"
        )
    }
}

/// The checks run in order; once one fails in a way that makes some later
/// ones impossible, those are recorded SKIPPED, naming the check that
/// stopped them.
#[derive(Debug, Default)]
pub(crate) struct Checklist {
    checks: Vec<DoctorCheck>,
}

impl Checklist {
    pub(crate) fn record(
        &mut self,
        name: &'static str,
        outcome: CheckOutcome,
        detail: impl Into<String>,
        duration: Duration,
    ) {
        self.checks.push(DoctorCheck {
            name,
            outcome,
            detail: detail.into(),
            duration_ms: u32::try_from(duration.as_millis()).unwrap_or(u32::MAX), // tidy: saturating (a check lasting 49 days)
        });
    }

    /// Records each of `names` SKIPPED because `cause` (a check's name) did
    /// not pass.
    pub(crate) fn skip(&mut self, names: &[&'static str], cause: &str) {
        for name in names {
            self.record(
                name,
                CheckOutcome::Skipped,
                format!("not run: it needs {cause} to pass first"),
                Duration::ZERO,
            );
        }
    }

    /// The outcome of the check `name`, if it ran.
    pub(crate) fn outcome(&self, name: &str) -> Option<CheckOutcome> {
        self.checks
            .iter()
            .find(|check| check.name == name)
            .map(|check| check.outcome)
    }

    pub(crate) fn into_checks(self) -> Vec<DoctorCheck> {
        self.checks
    }
}

/// A certificate's validity at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Validity {
    NotYetValid,
    Expired,
    /// Valid, but for less than [`EXPIRY_WARNING`] more.
    ExpiresSoon {
        days_left: i64,
    },
    Valid,
}

/// Whether a certificate valid from `not_before` to `not_after` is valid at
/// `now` (all Unix seconds), and for how long.
pub(crate) fn validity(not_before: i64, not_after: i64, now: i64) -> Validity {
    let warning_seconds = i64::try_from(EXPIRY_WARNING.as_secs()).unwrap_or(i64::MAX); // tidy: saturating (a constant of 14 days)
    if now < not_before {
        Validity::NotYetValid
    } else if now > not_after {
        Validity::Expired
    } else if not_after - now < warning_seconds {
        Validity::ExpiresSoon {
            days_left: (not_after - now) / (24 * 3600),
        }
    } else {
        Validity::Valid
    }
}

/// The `certificate_expiry` check of a certificate (`whose`: "the peer's",
/// "our") valid from `not_before` to `not_after`, at `now`; `utc` writes a
/// time for people.
pub(crate) fn judge_expiry(
    whose: &str,
    not_before: i64,
    not_after: i64,
    now: i64,
    utc: impl Fn(i64) -> String,
) -> (CheckOutcome, String) {
    match validity(not_before, not_after, now) {
        Validity::NotYetValid => (
            CheckOutcome::Fail,
            format!(
                "{whose} certificate is not valid before {} (our clock says {}): check both clocks, or use a certificate valid now",
                utc(not_before),
                utc(now)
            ),
        ),
        Validity::Expired => (
            CheckOutcome::Fail,
            format!(
                "{whose} certificate expired at {}: renew it",
                utc(not_after)
            ),
        ),
        Validity::ExpiresSoon { days_left } => (
            CheckOutcome::Warn,
            format!(
                "{whose} certificate expires at {}, in {days_left} day(s): renew it before then",
                utc(not_after)
            ),
        ),
        Validity::Valid => (
            CheckOutcome::Pass,
            format!("{whose} certificate is valid until {}", utc(not_after)),
        ),
    }
}

/// The `certificate_name` check: is the certificate valid for `domain`?
/// `presented` are the names it carries (for the detail only).
pub(crate) fn judge_name(
    whose: &str,
    valid_for_domain: bool,
    presented: &[String],
    domain: &str,
) -> (CheckOutcome, String) {
    if valid_for_domain {
        return (
            CheckOutcome::Pass,
            format!("{whose} certificate is valid for {domain}"),
        );
    }
    let names = if presented.is_empty() {
        "no DNS name".to_owned()
    } else {
        presented.join(", ")
    };
    (
        CheckOutcome::Fail,
        format!(
            "{whose} certificate names {names}, not {domain}: it needs a certificate with {domain} as a SAN dNSName"
        ),
    )
}

/// The `clock_skew` check: the peer answered `peer_time_ms` to a call sent at
/// `sent_at_ms` by our clock that took `round_trip` in all. The peer read its
/// clock about half the round trip after we sent.
pub(crate) fn judge_clock_skew(
    peer_time_ms: i64,
    sent_at_ms: i64,
    round_trip: Duration,
) -> (CheckOutcome, String) {
    let half_round_trip_ms = i64::try_from(round_trip.as_millis() / 2).unwrap_or(i64::MAX); // tidy: saturating (a round trip of ages)
    let skew_ms = peer_time_ms.saturating_sub(sent_at_ms.saturating_add(half_round_trip_ms));
    let direction = if skew_ms >= 0 { "ahead of" } else { "behind" };
    let found = format!(
        "the peer's clock is {:.1} s {direction} ours (round trip {} ms)",
        skew_ms.unsigned_abs() as f64 / 1000.0,
        round_trip.as_millis()
    );
    let magnitude = skew_ms.unsigned_abs();
    if magnitude > CLOCK_SKEW_FAILURE_MS.unsigned_abs() {
        (
            CheckOutcome::Fail,
            format!(
                "{found}, more than 5 minutes: synchronise both clocks with NTP (certificates and enrolment challenges are judged by them)"
            ),
        )
    } else if magnitude > CLOCK_SKEW_WARNING_MS.unsigned_abs() {
        (
            CheckOutcome::Warn,
            format!("{found}, more than 30 s: check NTP on both homeservers"),
        )
    } else {
        (CheckOutcome::Pass, found)
    }
}

/// The `protocol_version` check: the peer speaks `peer_version` (release
/// `peer_release`), we speak `ours`.
pub(crate) fn judge_protocol_version(
    ours: &str,
    peer_version: &str,
    peer_release: &str,
) -> (CheckOutcome, String) {
    if peer_version == ours {
        (
            CheckOutcome::Pass,
            format!("the peer speaks {ours}, as we do (its release: {peer_release})"),
        )
    } else {
        (
            CheckOutcome::Fail,
            format!(
                "the peer speaks {peer_version:?} (release {peer_release}), we speak {ours}: upgrade the older homeserver"
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 24 * 3600;

    fn utc(seconds: i64) -> String {
        format!("t{seconds}")
    }

    #[test]
    fn validity_and_expiry() {
        let (not_before, not_after) = (1_000 * DAY, 1_365 * DAY);
        for (now, expected, outcome, fragment) in [
            (
                not_before - 1,
                Validity::NotYetValid,
                CheckOutcome::Fail,
                "is not valid before",
            ),
            (
                not_before,
                Validity::Valid,
                CheckOutcome::Pass,
                "is valid until",
            ),
            (
                not_after - 14 * DAY,
                Validity::Valid,
                CheckOutcome::Pass,
                "is valid until",
            ),
            (
                not_after - 14 * DAY + 1,
                Validity::ExpiresSoon { days_left: 13 },
                CheckOutcome::Warn,
                "in 13 day(s): renew it",
            ),
            (
                not_after,
                Validity::ExpiresSoon { days_left: 0 },
                CheckOutcome::Warn,
                "in 0 day(s)",
            ),
            (
                not_after + 1,
                Validity::Expired,
                CheckOutcome::Fail,
                "expired at t",
            ),
        ] {
            assert_eq!(validity(not_before, not_after, now), expected, "at {now}");
            let (judged, detail) = judge_expiry("the peer's", not_before, not_after, now, utc);
            assert_eq!(judged, outcome, "at {now}: {detail}");
            assert!(detail.contains(fragment), "at {now}: {detail}");
        }
    }

    #[test]
    fn names() {
        let presented = vec!["b-other.example".to_owned()];
        let (outcome, detail) = judge_name("the peer's", false, &presented, "b.example");
        assert_eq!(outcome, CheckOutcome::Fail);
        assert!(
            detail.contains("the peer's certificate names b-other.example, not b.example"),
            "{detail}"
        );
        let (outcome, detail) = judge_name("our", false, &[], "a.example");
        assert_eq!(outcome, CheckOutcome::Fail);
        assert!(
            detail.contains("names no DNS name, not a.example"),
            "{detail}"
        );
        assert_eq!(
            judge_name("our", true, &presented, "a.example").0,
            CheckOutcome::Pass
        );
    }

    #[test]
    fn clock_skew_allows_half_the_round_trip() {
        let sent = 1_000_000;
        let round_trip = Duration::from_millis(4_000);
        for (peer_time, outcome, fragment) in [
            // Read half-way through the round trip: no skew at all.
            (sent + 2_000, CheckOutcome::Pass, "0.0 s ahead of ours"),
            (sent + 2_000 + 30_000, CheckOutcome::Pass, "30.0 s ahead"),
            (sent + 2_000 + 30_001, CheckOutcome::Warn, "more than 30 s"),
            (
                sent + 2_000 - 30_001,
                CheckOutcome::Warn,
                "30.0 s behind ours",
            ),
            (sent + 2_000 + 300_000, CheckOutcome::Warn, "300.0 s ahead"),
            (
                sent + 2_000 + 300_001,
                CheckOutcome::Fail,
                "more than 5 minutes",
            ),
            (sent + 2_000 - 400_000, CheckOutcome::Fail, "400.0 s behind"),
        ] {
            let (judged, detail) = judge_clock_skew(peer_time, sent, round_trip);
            assert_eq!(judged, outcome, "{peer_time}: {detail}");
            assert!(detail.contains(fragment), "{peer_time}: {detail}");
            assert!(detail.contains("round trip 4000 ms"), "{detail}");
        }
    }

    #[test]
    fn protocol_versions_must_be_equal() {
        let ours = "conclave.federation.v1";
        assert_eq!(
            judge_protocol_version(ours, ours, "0.1.0").0,
            CheckOutcome::Pass
        );
        let (outcome, detail) = judge_protocol_version(ours, "conclave.federation.v2", "0.9.0");
        assert_eq!(outcome, CheckOutcome::Fail);
        assert!(detail.contains("upgrade"), "{detail}");
    }

    #[test]
    fn skipped_checks_name_their_cause_and_the_summary_counts() {
        let mut checklist = Checklist::default();
        checklist.record(
            "connect",
            CheckOutcome::Pass,
            "ok",
            Duration::from_millis(3),
        );
        checklist.record(
            "tls_handshake",
            CheckOutcome::Fail,
            "refused",
            Duration::ZERO,
        );
        checklist.skip(&["certificate_chain", "pin"], "tls_handshake");
        assert_eq!(checklist.outcome("pin"), Some(CheckOutcome::Skipped));
        assert_eq!(checklist.outcome("clock_skew"), None);
        let report = DoctorReport {
            domain: "b.example".to_owned(),
            endpoint: "127.0.0.2:7401".to_owned(),
            checks: checklist.into_checks(),
            checked_at_ms: 0,
        };
        assert!(!report.healthy());
        assert_eq!(
            report.checks[2].detail,
            "not run: it needs tls_handshake to pass first"
        );
        assert_eq!(report.checks[0].duration_ms, 3);
        assert_eq!(
            report.summary(),
            "1 passed, 0 warned, 1 failed (tls_handshake), 2 skipped"
        );
    }
}
