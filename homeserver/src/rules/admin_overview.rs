//! The warnings of the admin overview: what an operator should act on, from
//! the facts the service gathers (certificates, peers, key-package stock),
//! most urgent first. Time is an argument.

/// Certificates expiring within this many days are warned about.
pub(crate) const CERTIFICATE_WARNING_DAYS: i64 = 14;

/// A peer failing without a success for this long is critical.
pub(crate) const PEER_CRITICAL_AFTER_MS: i64 = 3_600_000;

/// How urgent a warning is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Severity {
    Warning,
    Critical,
}

/// Something an operator should act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OverviewWarning {
    pub(crate) severity: Severity,
    pub(crate) message: String,
    /// The console page that shows more, e.g. `/admin/federation`.
    pub(crate) page: &'static str,
}

/// A peer whose deliveries are failing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FailingPeer {
    pub(crate) domain: String,
    pub(crate) consecutive_failures: u64,
    pub(crate) last_success_at_ms: Option<i64>,
    pub(crate) last_error: Option<String>,
}

/// What the warnings are made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OverviewFacts {
    /// Each listener's certificate and its notAfter in seconds since the epoch.
    pub(crate) certificates: Vec<(&'static str, i64)>,
    pub(crate) failing_peers: Vec<FailingPeer>,
    pub(crate) devices_low_on_key_packages: u64,
}

/// The warnings for `facts` at `now_ms`, critical ones first.
pub(crate) fn warnings(facts: &OverviewFacts, now_ms: i64) -> Vec<OverviewWarning> {
    let mut warnings = Vec::new();
    for &(listener, not_after_seconds) in &facts.certificates {
        let page = if listener == "federation" {
            "/admin/federation"
        } else {
            ""
        };
        let not_after_ms = not_after_seconds.saturating_mul(1000);
        let when = chrono::DateTime::from_timestamp(not_after_seconds, 0).map_or_else(
            || format!("{not_after_seconds}"),
            |at| at.format("%Y-%m-%d %H:%M UTC").to_string(),
        );
        if not_after_ms <= now_ms {
            warnings.push(OverviewWarning {
                severity: Severity::Critical,
                message: format!(
                    "the {listener} listener's certificate expired at {when}; renew it"
                ),
                page,
            });
        } else if not_after_ms - now_ms <= CERTIFICATE_WARNING_DAYS * 86_400_000 {
            warnings.push(OverviewWarning {
                severity: Severity::Warning,
                message: format!(
                    "the {listener} listener's certificate expires at {when}; renew it"
                ),
                page,
            });
        }
    }
    for peer in &facts.failing_peers {
        let failing_long = peer
            .last_success_at_ms
            .is_none_or(|at| now_ms.saturating_sub(at) >= PEER_CRITICAL_AFTER_MS);
        let error = peer.last_error.as_deref().unwrap_or("no error recorded");
        warnings.push(OverviewWarning {
            severity: if failing_long {
                Severity::Critical
            } else {
                Severity::Warning
            },
            message: format!(
                "deliveries to {} failed {} time(s) since the last success; the last error: {error}",
                peer.domain, peer.consecutive_failures
            ),
            page: "/admin/federation",
        });
    }
    if facts.devices_low_on_key_packages > 0 {
        warnings.push(OverviewWarning {
            severity: Severity::Warning,
            message: format!(
                "{} active device(s) are low on key packages: others may soon be unable to add them to groups",
                facts.devices_low_on_key_packages
            ),
            page: "/admin/key-packages",
        });
    }
    // Stable: within a severity, the order above.
    warnings.sort_by_key(|warning| std::cmp::Reverse(warning.severity));
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW_MS: i64 = 1_800_000_000_000;
    const DAY_S: i64 = 86_400;

    fn severities(facts: &OverviewFacts) -> Vec<(Severity, &'static str)> {
        warnings(facts, NOW_MS)
            .into_iter()
            .map(|warning| (warning.severity, warning.page))
            .collect()
    }

    #[test]
    fn certificates_peers_and_stock_give_warnings_most_urgent_first() {
        let now_s = NOW_MS / 1000;
        let quiet = OverviewFacts {
            certificates: vec![("client_api", now_s + 15 * DAY_S)],
            failing_peers: Vec::new(),
            devices_low_on_key_packages: 0,
        };
        assert_eq!(warnings(&quiet, NOW_MS), []);
        let busy = OverviewFacts {
            certificates: vec![("client_api", now_s + 14 * DAY_S), ("federation", now_s)],
            failing_peers: vec![
                FailingPeer {
                    domain: "b.example".to_owned(),
                    consecutive_failures: 3,
                    last_success_at_ms: Some(NOW_MS - 60_000),
                    last_error: Some("connection refused".to_owned()),
                },
                FailingPeer {
                    domain: "c.example".to_owned(),
                    consecutive_failures: 40,
                    last_success_at_ms: None,
                    last_error: None,
                },
            ],
            devices_low_on_key_packages: 2,
        };
        assert_eq!(
            severities(&busy),
            [
                (Severity::Critical, "/admin/federation"),
                (Severity::Critical, "/admin/federation"),
                (Severity::Warning, ""),
                (Severity::Warning, "/admin/federation"),
                (Severity::Warning, "/admin/key-packages"),
            ]
        );
        let all = warnings(&busy, NOW_MS);
        assert!(
            all[0]
                .message
                .starts_with("the federation listener's certificate expired"),
            "{all:?}"
        );
        assert!(
            all[1].message.contains("c.example failed 40 time(s)"),
            "{all:?}"
        );
        assert!(
            all[3]
                .message
                .ends_with("the last error: connection refused"),
            "{all:?}"
        );
    }
}
