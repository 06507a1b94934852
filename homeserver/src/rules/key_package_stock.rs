//! A device's stock of KeyPackages, and which packages the directory handed out.
//!
//! A device keeps ordinary packages, each handed out once (RFC 9420 §16.8), and
//! at most one last-resort package (marked with the `last_resort_key_package`
//! extension of draft-ietf-mls-extensions), handed out only when no ordinary
//! package is left and never used up. The store takes packages with one
//! conditional statement per claim, so concurrent claims never get the same
//! ordinary package; these rules say what its counts and records mean.

/// One kind of a device's packages that a claim could still take: unclaimed
/// and unexpired, as the store counts them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct KindCount {
    pub(crate) count: u64,
    /// The earliest `not_after` among them, in milliseconds since the Unix epoch.
    pub(crate) earliest_expiry_ms: Option<i64>,
}

/// A device's unclaimed, unexpired packages, as its owner sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KeyPackageStock {
    /// Ordinary packages a claim could still take.
    pub(crate) available: u64,
    /// True if a claim finding no ordinary package would get the last-resort one.
    pub(crate) has_last_resort: bool,
    /// When the first of them expires (milliseconds since the Unix epoch): the
    /// device should upload fresh ones before then.
    pub(crate) earliest_expiry_ms: Option<i64>,
}

/// The stock, from the counts of ordinary and last-resort packages.
pub(crate) fn stock(ordinary: KindCount, last_resort: KindCount) -> KeyPackageStock {
    let earliest_expiry_ms = match (ordinary.earliest_expiry_ms, last_resort.earliest_expiry_ms) {
        (Some(ordinary), Some(last_resort)) => Some(ordinary.min(last_resort)),
        (ordinary, last_resort) => ordinary.or(last_resort),
    };
    KeyPackageStock {
        available: ordinary.count,
        has_last_resort: last_resort.count > 0,
        earliest_expiry_ms,
    }
}

/// What the directory recorded of a stored package's claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClaimRecord {
    pub(crate) last_resort: bool,
    /// A claim took it (its `claimed_at` is set): an ordinary package, used up.
    pub(crate) taken: bool,
    /// A claimer is recorded (its `claimed_by` is set): for a last-resort
    /// package, who was handed it last.
    pub(crate) claimer_recorded: bool,
}

/// True if the directory handed the package out, which is what lets an Add of
/// its device use it: an ordinary package that a claim took, or a last-resort
/// package handed out (without being used up) at least once.
pub(crate) fn was_handed_out(record: ClaimRecord) -> bool {
    record.taken || (record.last_resort && record.claimer_recorded)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(count: u64, earliest_expiry_ms: Option<i64>) -> KindCount {
        KindCount {
            count,
            earliest_expiry_ms,
        }
    }

    #[test]
    fn stock_counts_ordinary_packages_and_notes_the_last_resort() {
        let none = KindCount::default();
        for (case, ordinary, last_resort, available, has_last_resort, earliest) in [
            ("nothing", none, none, 0, false, None),
            (
                "ordinary only",
                count(3, Some(50)),
                none,
                3,
                false,
                Some(50),
            ),
            (
                "last resort only",
                none,
                count(1, Some(70)),
                0,
                true,
                Some(70),
            ),
            (
                "both, ordinary first",
                count(2, Some(50)),
                count(1, Some(70)),
                2,
                true,
                Some(50),
            ),
            (
                "both, last resort first",
                count(2, Some(90)),
                count(1, Some(70)),
                2,
                true,
                Some(70),
            ),
        ] {
            assert_eq!(
                stock(ordinary, last_resort),
                KeyPackageStock {
                    available,
                    has_last_resort,
                    earliest_expiry_ms: earliest,
                },
                "{case}"
            );
        }
    }

    #[test]
    fn a_package_was_handed_out_if_taken_or_given_as_last_resort() {
        for (case, last_resort, taken, claimer_recorded, handed_out) in [
            ("ordinary, never claimed", false, false, false, false),
            ("ordinary, claimed", false, true, true, true),
            (
                "ordinary, claimer without a claim time",
                false,
                false,
                true,
                false,
            ),
            ("last resort, never handed out", true, false, false, false),
            ("last resort, handed out", true, false, true, true),
        ] {
            let record = ClaimRecord {
                last_resort,
                taken,
                claimer_recorded,
            };
            assert_eq!(was_handed_out(record), handed_out, "{case}");
        }
    }
}
