//! Whether a batch of KeyPackages may be stored: all of it, or none of it.

use conclave_core::key_package::{
    ExpectedOwner, KeyPackageError, KeyPackagePolicy, VerifiedKeyPackage, verify_key_package,
};
use std::collections::HashSet;

use crate::rules::cipher_suites::{SuitePolicy, SuiteRefusal};

const SECONDS_PER_DAY: u64 = 24 * 60 * 60;

/// The policy packages are verified against at `now_ms` (milliseconds since the
/// Unix epoch; a clock before 1970 counts as 1970), when a package may live at
/// most `max_lifetime_days`.
pub(crate) fn upload_policy(now_ms: i64, max_lifetime_days: u64) -> KeyPackagePolicy {
    KeyPackagePolicy {
        now_unix_seconds: (now_ms.max(0) / 1000).unsigned_abs(),
        max_lifetime_seconds: max_lifetime_days.saturating_mul(SECONDS_PER_DAY),
    }
}

/// A package's `not_after` (seconds since the Unix epoch) as the store keeps
/// it, in milliseconds; one beyond what fits is kept as the latest that does.
pub(crate) fn not_after_ms(not_after_unix_seconds: u64) -> i64 {
    i64::try_from(not_after_unix_seconds)
        .unwrap_or(i64::MAX / 1000)
        .saturating_mul(1000)
}

/// A batch that passed every check.
#[derive(Debug)]
pub(crate) struct VerifiedUpload {
    pub(crate) ordinary: Vec<VerifiedKeyPackage>,
    pub(crate) last_resort: Option<VerifiedKeyPackage>,
}

/// Where in the request a bad package sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PackagePosition {
    /// `key_packages[i]`.
    Ordinary(usize),
    /// `last_resort_key_package`.
    LastResort,
}

impl std::fmt::Display for PackagePosition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PackagePosition::Ordinary(index) => write!(f, "key_packages[{index}]"),
            PackagePosition::LastResort => f.write_str("last_resort_key_package"),
        }
    }
}

/// Why a batch was refused. Nothing of a refused batch is stored.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UploadRejection {
    /// The request carries no package at all.
    #[error("the upload contains no key packages")]
    Empty,
    /// More packages than one upload may carry.
    #[error("key_packages has {count} entries, more than the limit of {limit}")]
    TooMany { count: usize, limit: usize },
    /// One package failed verification.
    #[error("{position} was rejected: {reason}")]
    Invalid {
        position: PackagePosition,
        reason: KeyPackageError,
    },
    /// The package given as last resort lacks the last-resort marker: the
    /// `last_resort_key_package` KeyPackage extension (0x000a) of
    /// draft-ietf-mls-extensions, in the IANA "MLS Extension Types" registry.
    /// RFC 9420 defines no such marker (§16.8 only allows reusing a package).
    #[error(
        "{0} lacks the last_resort_key_package extension (0x000a, draft-ietf-mls-extensions) that a last-resort key package must carry"
    )]
    NotLastResort(PackagePosition),
    /// The same package appears twice in the request, or is stored already.
    #[error("{0} was already uploaded")]
    Duplicate(PackagePosition),
    /// A package is of a cipher suite this homeserver does not offer.
    #[error("{position} was rejected: {refusal}")]
    SuiteNotOffered {
        position: PackagePosition,
        refusal: SuiteRefusal,
    },
}

/// Verifies every package of an upload. `already_stored` tells whether a hash ref
/// is in the directory already (the caller looks them up in one query after this
/// function's first pass; see [`check_not_stored`]).
pub(crate) fn verify_upload(
    ordinary: &[Vec<u8>],
    last_resort: Option<&[u8]>,
    owner: &ExpectedOwner<'_>,
    policy: &KeyPackagePolicy,
    max_per_upload: usize,
) -> Result<VerifiedUpload, UploadRejection> {
    if ordinary.is_empty() && last_resort.is_none() {
        return Err(UploadRejection::Empty);
    }
    if ordinary.len() > max_per_upload {
        return Err(UploadRejection::TooMany {
            count: ordinary.len(),
            limit: max_per_upload,
        });
    }
    let verify = |position, bytes: &[u8]| {
        verify_key_package(bytes, owner, policy)
            .map_err(|reason| UploadRejection::Invalid { position, reason })
    };
    let mut seen = HashSet::new();
    let mut verified_ordinary = Vec::with_capacity(ordinary.len());
    for (index, bytes) in ordinary.iter().enumerate() {
        let position = PackagePosition::Ordinary(index);
        let verified = verify(position, bytes)?;
        if !seen.insert(verified.hash_ref.clone()) {
            return Err(UploadRejection::Duplicate(position));
        }
        verified_ordinary.push(verified);
    }
    let verified_last_resort = match last_resort {
        None => None,
        Some(bytes) => {
            let position = PackagePosition::LastResort;
            let verified = verify(position, bytes)?;
            if !verified.last_resort {
                return Err(UploadRejection::NotLastResort(position));
            }
            if !seen.insert(verified.hash_ref.clone()) {
                return Err(UploadRejection::Duplicate(position));
            }
            Some(verified)
        }
    };
    Ok(VerifiedUpload {
        ordinary: verified_ordinary,
        last_resort: verified_last_resort,
    })
}

/// Refuses the upload if any of its packages is of a suite `domain` does not
/// offer.
pub(crate) fn check_suites_offered(
    upload: &VerifiedUpload,
    policy: &SuitePolicy,
    domain: &str,
) -> Result<(), UploadRejection> {
    for (position, package) in upload.positions() {
        policy
            .check_offered(domain, package.cipher_suite)
            .map_err(|refusal| UploadRejection::SuiteNotOffered { position, refusal })?;
    }
    Ok(())
}

/// Refuses the upload if any of its packages is stored already.
pub(crate) fn check_not_stored(
    upload: &VerifiedUpload,
    stored_hash_refs: &[Vec<u8>],
) -> Result<(), UploadRejection> {
    let stored: HashSet<&[u8]> = stored_hash_refs.iter().map(Vec::as_slice).collect();
    for (position, package) in upload.positions() {
        if stored.contains(package.hash_ref.as_slice()) {
            return Err(UploadRejection::Duplicate(position));
        }
    }
    Ok(())
}

impl VerifiedUpload {
    /// Every package with its place in the request.
    fn positions(&self) -> impl Iterator<Item = (PackagePosition, &VerifiedKeyPackage)> {
        self.ordinary
            .iter()
            .enumerate()
            .map(|(index, package)| (PackagePosition::Ordinary(index), package))
            .chain(
                self.last_resort
                    .iter()
                    .map(|package| (PackagePosition::LastResort, package)),
            )
    }

    /// Hash refs of every package in the upload.
    pub(crate) fn hash_refs(&self) -> Vec<Vec<u8>> {
        self.ordinary
            .iter()
            .chain(&self.last_resort)
            .map(|package| package.hash_ref.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use conclave_core::ids::CredentialIdentity;
    use conclave_core::mls::{CIPHERSUITE, GROUP_METADATA_EXTENSION_TYPE};
    use openmls::prelude::tls_codec::Serialize as _;
    use openmls::prelude::{
        BasicCredential, Capabilities, CredentialType, CredentialWithKey, ExtensionType,
        KeyPackage, Lifetime,
    };
    use openmls_basic_credential::SignatureKeyPair;
    use openmls_rust_crypto::OpenMlsRustCrypto;

    const LIMIT: usize = 3;
    const DAY: u64 = 24 * 60 * 60;

    /// A device that builds its own KeyPackages, as a client would.
    struct Device {
        identity: CredentialIdentity,
        signer: SignatureKeyPair,
    }

    impl Device {
        fn new(identity: &str) -> Device {
            Device {
                identity: identity.parse().unwrap(),
                signer: SignatureKeyPair::new(CIPHERSUITE.signature_algorithm()).unwrap(),
            }
        }

        fn package(&self, last_resort: bool) -> Vec<u8> {
            let capabilities = Capabilities::builder()
                .extensions(vec![
                    ExtensionType::LastResort,
                    ExtensionType::Unknown(GROUP_METADATA_EXTENSION_TYPE),
                ])
                .credentials(vec![CredentialType::Basic])
                .build();
            let mut builder = KeyPackage::builder()
                .key_package_lifetime(Lifetime::new(DAY))
                .leaf_node_capabilities(capabilities);
            if last_resort {
                builder = builder.mark_as_last_resort();
            }
            let credential_with_key = CredentialWithKey {
                credential: BasicCredential::new(self.identity.to_bytes()).into(),
                signature_key: self.signer.to_public_vec().into(),
            };
            builder
                .build(
                    CIPHERSUITE,
                    &OpenMlsRustCrypto::default(),
                    &self.signer,
                    credential_with_key,
                )
                .unwrap()
                .key_package()
                .tls_serialize_detached()
                .unwrap()
        }

        fn verify(
            &self,
            ordinary: &[Vec<u8>],
            last_resort: Option<&[u8]>,
        ) -> Result<VerifiedUpload, UploadRejection> {
            let owner = ExpectedOwner {
                identity: &self.identity,
                signature_public_key: &self.signer.to_public_vec(),
            };
            // openmls's builder stamps packages with the system clock, so the
            // policy's clock must be the system clock too.
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            let policy = KeyPackagePolicy {
                now_unix_seconds: now,
                max_lifetime_seconds: DAY,
            };
            verify_upload(ordinary, last_resort, &owner, &policy, LIMIT)
        }
    }

    /// What an upload must come to: accepted with this many ordinary packages and
    /// with or without a last-resort one, or refused with this message.
    enum Expect {
        Accepted { ordinary: usize, last_resort: bool },
        Refused(&'static str),
    }

    fn check(name: &str, result: Result<VerifiedUpload, UploadRejection>, expect: Expect) {
        match (result, expect) {
            (
                Ok(upload),
                Expect::Accepted {
                    ordinary,
                    last_resort,
                },
            ) => {
                assert_eq!(upload.ordinary.len(), ordinary, "{name}");
                assert_eq!(upload.last_resort.is_some(), last_resort, "{name}");
            }
            (Ok(upload), Expect::Refused(message)) => {
                panic!("{name}: accepted {upload:?}, expected {message:?}")
            }
            (Err(rejection), Expect::Accepted { .. }) => panic!("{name}: refused: {rejection}"),
            (Err(rejection), Expect::Refused(message)) => {
                let actual = rejection.to_string();
                assert!(
                    actual.starts_with(message),
                    "{name}: refused with {actual:?}, expected {message:?}"
                );
            }
        }
    }

    fn accepted(ordinary: usize, last_resort: bool) -> Expect {
        Expect::Accepted {
            ordinary,
            last_resort,
        }
    }

    #[test]
    fn the_policy_takes_its_time_from_the_argument() {
        for (now_ms, days, now_seconds, lifetime_seconds) in [
            (1_700_000_000_999, 90, 1_700_000_000, 90 * DAY),
            (0, 1, 0, DAY),
            (-1_500, 1, 0, DAY),
            (1_000, u64::MAX, 1, u64::MAX),
        ] {
            let policy = upload_policy(now_ms, days);
            assert_eq!(policy.now_unix_seconds, now_seconds, "{now_ms}");
            assert_eq!(policy.max_lifetime_seconds, lifetime_seconds, "{days}");
        }
    }

    #[test]
    fn expiry_is_kept_in_milliseconds() {
        for (seconds, milliseconds) in [
            (0, 0),
            (1_700_000_000, 1_700_000_000_000),
            (
                u64::try_from(i64::MAX / 1000).unwrap(),
                i64::MAX / 1000 * 1000,
            ),
            (u64::try_from(i64::MAX).unwrap(), i64::MAX),
            (u64::MAX, i64::MAX / 1000 * 1000),
        ] {
            assert_eq!(not_after_ms(seconds), milliseconds, "{seconds}");
        }
    }

    #[test]
    fn uploads_are_verified_as_a_whole() {
        let device = Device::new("alice@a.example/00000000000000aa");
        let other_device = Device::new("alice@a.example/00000000000000bb");
        let [p0, p1, p2] = [(); 3].map(|()| device.package(false));
        let last_resort = device.package(true);
        let garbage = b"not a key package".to_vec();
        let foreign = other_device.package(false);

        for (name, ordinary, last, expect) in [
            ("ordinary only", vec![p0.clone()], None, accepted(1, false)),
            (
                "last resort only",
                vec![],
                Some(last_resort.as_slice()),
                accepted(0, true),
            ),
            (
                "up to the limit, with a last resort",
                vec![p0.clone(), p1.clone(), p2.clone()],
                Some(last_resort.as_slice()),
                accepted(3, true),
            ),
            (
                "nothing",
                vec![],
                None,
                Expect::Refused("the upload contains no key packages"),
            ),
            (
                "over the limit, counted before any package is verified",
                vec![garbage.clone(); LIMIT + 1],
                None,
                Expect::Refused("key_packages has 4 entries, more than the limit of 3"),
            ),
            (
                "empty package",
                vec![p0.clone(), vec![]],
                None,
                Expect::Refused("key_packages[1] was rejected: key package is empty"),
            ),
            (
                "bad package in the middle of a batch",
                vec![p0.clone(), garbage.clone(), p1.clone()],
                None,
                Expect::Refused("key_packages[1] was rejected: key package does not decode"),
            ),
            (
                "first bad package is the one named",
                vec![p0.clone(), p1.clone(), foreign.clone()],
                Some(garbage.as_slice()),
                Expect::Refused("key_packages[2] was rejected: key package credential names"),
            ),
            (
                "another device's package",
                vec![foreign.clone()],
                None,
                Expect::Refused(
                    "key_packages[0] was rejected: key package credential names \
                     alice@a.example/00000000000000bb but the expected device is \
                     alice@a.example/00000000000000aa",
                ),
            ),
            (
                "same package twice",
                vec![p0.clone(), p1.clone(), p0.clone()],
                None,
                Expect::Refused("key_packages[2] was already uploaded"),
            ),
            (
                "bad last resort",
                vec![p0.clone()],
                Some(garbage.as_slice()),
                Expect::Refused(
                    "last_resort_key_package was rejected: key package does not decode",
                ),
            ),
            (
                "ordinary package as last resort",
                vec![],
                Some(p0.as_slice()),
                Expect::Refused(
                    "last_resort_key_package lacks the last_resort_key_package extension (0x000a, draft-ietf-mls-extensions)",
                ),
            ),
            (
                "last resort repeated among the ordinary ones",
                vec![last_resort.clone()],
                Some(last_resort.as_slice()),
                Expect::Refused("last_resort_key_package was already uploaded"),
            ),
            (
                "last-resort package as an ordinary one",
                vec![last_resort.clone()],
                None,
                accepted(1, false),
            ),
        ] {
            check(name, device.verify(&ordinary, last), expect);
        }
    }

    #[test]
    fn hash_refs_list_ordinary_packages_then_the_last_resort() {
        let device = Device::new("alice@a.example/00000000000000aa");
        let ordinary = vec![device.package(false), device.package(false)];
        let last_resort = device.package(true);
        let upload = device
            .verify(&ordinary, Some(last_resort.as_slice()))
            .unwrap();
        let alone = |bytes: &[u8]| {
            let single = device.verify(&[bytes.to_vec()], None).unwrap();
            single.ordinary[0].hash_ref.clone()
        };
        let expected = vec![
            alone(&ordinary[0]),
            alone(&ordinary[1]),
            alone(&last_resort),
        ];
        assert_eq!(upload.hash_refs(), expected);
        let mut distinct = expected.clone();
        distinct.dedup();
        assert_eq!(distinct.len(), 3);
    }

    #[test]
    fn packages_stored_already_are_refused_by_position() {
        let device = Device::new("alice@a.example/00000000000000aa");
        let ordinary = vec![device.package(false), device.package(false)];
        let last_resort = device.package(true);
        let upload = device
            .verify(&ordinary, Some(last_resort.as_slice()))
            .unwrap();
        let [first, second, last] = <[Vec<u8>; 3]>::try_from(upload.hash_refs()).unwrap();
        let unrelated = vec![0; first.len()];

        for (name, stored, expected) in [
            ("nothing stored", vec![], None),
            (
                "only unrelated packages stored",
                vec![unrelated.clone()],
                None,
            ),
            (
                "second ordinary stored",
                vec![unrelated, second.clone()],
                Some("key_packages[1] was already uploaded"),
            ),
            (
                "last resort stored",
                vec![last.clone()],
                Some("last_resort_key_package was already uploaded"),
            ),
            (
                "several stored: the first position is named",
                vec![last, second, first],
                Some("key_packages[0] was already uploaded"),
            ),
        ] {
            let result = check_not_stored(&upload, &stored).map_err(|error| error.to_string());
            assert_eq!(
                result,
                expected.map_or(Ok(()), |m| Err(m.to_owned())),
                "{name}"
            );
        }
    }
}
