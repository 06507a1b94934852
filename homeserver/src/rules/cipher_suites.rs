//! Which MLS cipher suites this homeserver offers, and what it refuses for a
//! suite it does not offer (key packages, claims, new groups) or, with
//! `groups.require_post_quantum`, for a new group that is not post-quantum.

use conclave_core::mls::{ALL_CIPHER_SUITES, CipherSuite};

/// The `[groups]` suite settings, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SuitePolicy {
    /// The suites offered, in Conclave's order (classic first).
    pub(crate) offered: Vec<CipherSuite>,
    /// New groups must use a post-quantum suite.
    pub(crate) require_post_quantum: bool,
}

/// Why a suite was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SuiteRefusal {
    /// The suite is not among `groups.cipher_suites`.
    #[error(
        "{domain} does not offer cipher suite {suite}; it offers {}",
        list(offered)
    )]
    NotOffered {
        domain: String,
        suite: CipherSuite,
        offered: Vec<CipherSuite>,
    },
    /// A new group in a classic suite where `groups.require_post_quantum` is set.
    #[error(
        "{domain} requires post-quantum groups: create the group with cipher suite {}",
        list(offered.iter().filter(|suite| suite.is_post_quantum()).copied().collect::<Vec<_>>().as_slice())
    )]
    PostQuantumRequired {
        domain: String,
        offered: Vec<CipherSuite>,
    },
}

fn list(suites: &[CipherSuite]) -> String {
    suites
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl Default for SuitePolicy {
    /// Every suite offered, none required: the configuration's default.
    fn default() -> Self {
        SuitePolicy {
            offered: ALL_CIPHER_SUITES.to_vec(),
            require_post_quantum: false,
        }
    }
}

impl SuitePolicy {
    /// Whether `suite` is offered here: key packages of it are stored and
    /// claimed, groups of it hosted and followed.
    pub(crate) fn check_offered(
        &self,
        domain: &str,
        suite: CipherSuite,
    ) -> Result<(), SuiteRefusal> {
        if self.offered.contains(&suite) {
            Ok(())
        } else {
            Err(SuiteRefusal::NotOffered {
                domain: domain.to_owned(),
                suite,
                offered: self.offered.clone(),
            })
        }
    }

    /// Whether a new group of `suite` may be created here.
    pub(crate) fn check_new_group(
        &self,
        domain: &str,
        suite: CipherSuite,
    ) -> Result<(), SuiteRefusal> {
        self.check_offered(domain, suite)?;
        if self.require_post_quantum && !suite.is_post_quantum() {
            return Err(SuiteRefusal::PostQuantumRequired {
                domain: domain.to_owned(),
                offered: self.offered.clone(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(policy: &SuitePolicy, suite: CipherSuite, expected: Result<(), &str>) {
        let outcome = policy
            .check_new_group("a.example", suite)
            .map_err(|refusal| refusal.to_string());
        match (outcome, expected) {
            (Ok(()), Ok(())) => {}
            (Err(actual), Err(expected)) => assert_eq!(actual, expected),
            (actual, expected) => panic!("{suite}: {actual:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn new_groups_by_policy() {
        let default = SuitePolicy::default();
        check(&default, CipherSuite::Classic, Ok(()));
        check(&default, CipherSuite::PostQuantum, Ok(()));

        let classic_only = SuitePolicy {
            offered: vec![CipherSuite::Classic],
            require_post_quantum: false,
        };
        check(&classic_only, CipherSuite::Classic, Ok(()));
        check(
            &classic_only,
            CipherSuite::PostQuantum,
            Err(
                "a.example does not offer cipher suite 0x004f (MLS_128_MLKEM768X25519_AES128GCM_SHA256_Ed25519); it offers 0x0001 (MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519)",
            ),
        );

        let post_quantum_only = SuitePolicy {
            offered: vec![CipherSuite::Classic, CipherSuite::PostQuantum],
            require_post_quantum: true,
        };
        check(&post_quantum_only, CipherSuite::PostQuantum, Ok(()));
        check(
            &post_quantum_only,
            CipherSuite::Classic,
            Err(
                "a.example requires post-quantum groups: create the group with cipher suite 0x004f (MLS_128_MLKEM768X25519_AES128GCM_SHA256_Ed25519)",
            ),
        );
        // Offering classic still lets its key packages in, for older groups.
        assert!(
            post_quantum_only
                .check_offered("a.example", CipherSuite::Classic)
                .is_ok()
        );
    }
}
