//! A device's stock of key packages on its homeserver, and when to top it up.
//!
//! Pure rules: the decision takes the stock the server reported and returns how
//! many packages to publish, so it is tested without a server.

use chrono::{DateTime, Utc};

/// The calling device's unclaimed key packages, as its homeserver reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyPackageStock {
    /// Ordinary packages not yet claimed and not expired.
    pub available: u32,
    /// Whether an unexpired last-resort package is published.
    pub has_last_resort: bool,
    /// When the first of the available packages (last-resort included) expires.
    pub earliest_expiry: Option<DateTime<Utc>>,
}

/// When to publish more key packages, and how many.
///
/// Every claim by someone adding this user to a group uses one package, so the
/// stock is refilled in bulk when it runs low rather than one by one, which keeps
/// uploads rare. The last-resort package keeps the device addable even when the
/// ordinary stock runs out before the device next comes online.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplenishPolicy {
    /// Publish when fewer ordinary packages than this are left.
    pub threshold: u32,
    /// Fill the stock up to this many ordinary packages.
    pub target: u32,
}

impl Default for ReplenishPolicy {
    fn default() -> Self {
        ReplenishPolicy {
            threshold: 10,
            target: 50,
        }
    }
}

impl ReplenishPolicy {
    /// How many ordinary packages to publish (always with a new last-resort one),
    /// or `None` when the stock is fine as it is.
    pub fn packages_to_publish(&self, stock: &KeyPackageStock) -> Option<usize> {
        if stock.available < self.threshold || !stock.has_last_resort {
            // A missing last-resort package alone is worth an upload, even one
            // carrying no ordinary packages.
            Some(self.target.saturating_sub(stock.available) as usize)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(available: u32, has_last_resort: bool, expected: Option<usize>) {
        let stock = KeyPackageStock {
            available,
            has_last_resort,
            earliest_expiry: None,
        };
        assert_eq!(
            ReplenishPolicy::default().packages_to_publish(&stock),
            expected,
            "available {available}, last resort {has_last_resort}"
        );
    }

    #[test]
    fn replenish_decisions() {
        check(0, false, Some(50));
        check(0, true, Some(50));
        check(9, true, Some(41));
        check(10, true, None);
        check(50, true, None);
        check(10, false, Some(40));
        check(50, false, Some(0));
        check(70, false, Some(0));
    }
}
