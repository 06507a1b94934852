//! Verification of MLS KeyPackages: the checks a homeserver runs on every upload (and a
//! client may run again on a package it claimed), from raw bytes to a package that is
//! well formed, correctly signed, in Conclave's cipher suite, currently valid, and bound
//! to the device that must own it.

use std::fmt;

use openmls::prelude::tls_codec::{self, Deserialize as _};
use openmls::prelude::{
    BasicCredential, CredentialType, ExtensionType, KeyPackage, KeyPackageIn,
    KeyPackageVerifyError, ProtocolVersion,
};
use openmls::treesync::errors::LifetimeError;

use crate::ids::{CredentialIdentity, IdError};
use crate::mls::{CipherSuite, GROUP_METADATA_EXTENSION_TYPE, verification_crypto};

/// How far a package's `not_before` may lie ahead of the verifier's clock. Device
/// clocks run a few minutes fast often enough that refusing them would lose uploads,
/// and a few minutes of early validity gives an attacker nothing.
///
/// openmls's own check inside `KeyPackageIn::validate` reads the system clock and has
/// no tolerance; packages made with `Lifetime::new` start an hour in the past
/// ([`OPENMLS_BACKDATE_SECONDS`]), so that check only bites a device whose clock runs
/// more than an hour fast.
pub const CLOCK_SKEW_TOLERANCE_SECONDS: u64 = 5 * 60;

/// How far openmls 0.9's `Lifetime::new(t)` moves `not_before` into the past (its
/// private `DEFAULT_KEY_PACKAGE_LIFETIME_MARGIN_SECONDS`, one hour), so a package made
/// with `Lifetime::new(t)` spans `t` plus this. The length rule adds it back, so that
/// `Lifetime::new(max_lifetime_seconds)` passes and anything longer fails.
pub const OPENMLS_BACKDATE_SECONDS: u64 = 60 * 60;

/// What the verifier expects of a KeyPackage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyPackagePolicy {
    /// The verifier's clock, in seconds since the Unix epoch; passed in so the rules stay
    /// free of clocks.
    pub now_unix_seconds: u64,
    /// The longest lifetime a device may give a package, as passed to openmls's
    /// `Lifetime::new`. The allowed span `not_after - not_before` is this plus
    /// [`OPENMLS_BACKDATE_SECONDS`].
    pub max_lifetime_seconds: u64,
}

/// The device that must own the KeyPackage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpectedOwner<'a> {
    /// The identity that the package's BasicCredential must carry.
    pub identity: &'a CredentialIdentity,
    /// The signature public key registered for the device (raw Ed25519 key bytes); the
    /// package's leaf node must carry exactly this key.
    pub signature_public_key: &'a [u8],
}

/// A KeyPackage that passed every check, with what callers store or index it by.
#[derive(Debug, Clone)]
pub struct VerifiedKeyPackage {
    /// The KeyPackageRef (RFC 9420 §5.2), by which Welcome messages name the package.
    pub hash_ref: Vec<u8>,
    /// The package's cipher suite: only a group of this suite can add it.
    pub cipher_suite: CipherSuite,
    /// Start of the package's lifetime, in seconds since the Unix epoch.
    pub not_before_unix_seconds: u64,
    /// End of the package's lifetime, in seconds since the Unix epoch; unusable from then.
    pub not_after_unix_seconds: u64,
    /// Whether the package carries the `last_resort_key_package` extension (0x000a,
    /// draft-ietf-mls-extensions; openmls's `LastResort`): it may be handed out
    /// again when no other package is left.
    pub last_resort: bool,
    /// The validated package, for callers who need more.
    pub key_package: KeyPackage,
}

/// Why a KeyPackage was refused. Each message says what was wrong with the package.
#[derive(Debug, thiserror::Error)]
pub enum KeyPackageError {
    /// No bytes at all.
    #[error("key package is empty")]
    Empty,
    /// The bytes are not a TLS-encoded RFC 9420 KeyPackage (one wrapped in an
    /// MLSMessage is refused here too).
    #[error("key package does not decode as an RFC 9420 KeyPackage: {0}")]
    Malformed(tls_codec::Error),
    /// A whole KeyPackage decoded, but more bytes follow it.
    #[error("key package is followed by {trailing} unexpected bytes")]
    TrailingBytes {
        /// How many bytes follow the package.
        trailing: usize,
    },
    /// The package is for an MLS version other than 1.0.
    #[error("key package is for protocol version {found} but conclave speaks only MLS 1.0 (1)")]
    ProtocolVersion {
        /// The version number in the package.
        found: u16,
    },
    /// The package is in a cipher suite Conclave does not speak (see
    /// [`crate::mls::ALL_CIPHER_SUITES`]).
    #[error(
        "key package uses cipher suite {found:#06x} but conclave accepts only 0x0001 (MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519) and 0x004f (MLS_128_MLKEM768X25519_AES128GCM_SHA256_Ed25519)"
    )]
    Ciphersuite {
        /// The cipher suite number in the package.
        found: u16,
    },
    /// The leaf node's signature does not verify under its own signature key.
    #[error("key package leaf node signature does not verify")]
    LeafNodeSignature,
    /// The package's signature does not verify under the leaf node's signature key.
    #[error("key package signature does not verify")]
    Signature,
    /// openmls found the package structurally invalid for another reason (missing
    /// lifetime, unsupported or misplaced extension, init key equal to the encryption
    /// key, and so on).
    #[error("key package is invalid: {0}")]
    Invalid(KeyPackageVerifyError),
    /// The lifetime has not started yet, even allowing [`CLOCK_SKEW_TOLERANCE_SECONDS`].
    #[error("key package is not valid before {not_before}, now is {now}")]
    NotYetValid {
        /// The package's `not_before`.
        not_before: u64,
        /// The clock the package was checked against.
        now: u64,
    },
    /// The lifetime has ended.
    #[error("key package expired at {not_after}, now is {now}")]
    Expired {
        /// The package's `not_after`.
        not_after: u64,
        /// The clock the package was checked against.
        now: u64,
    },
    /// The lifetime spans longer than the policy allows.
    #[error(
        "key package lifetime spans {span} seconds (from {not_before} to {not_after}) but at most {allowed} are allowed"
    )]
    LifetimeTooLong {
        /// `not_after - not_before`.
        span: u64,
        /// The package's `not_before`.
        not_before: u64,
        /// The package's `not_after`.
        not_after: u64,
        /// The policy's maximum plus [`OPENMLS_BACKDATE_SECONDS`].
        allowed: u64,
    },
    /// The credential is not a BasicCredential.
    #[error("key package credential is of type {found:?} but conclave uses only basic credentials")]
    CredentialType {
        /// The credential type in the package.
        found: CredentialType,
    },
    /// The BasicCredential's identity is not `name@domain/device_id`.
    #[error("key package credential does not name a device: {0}")]
    CredentialIdentity(IdError),
    /// The credential names a device other than the expected owner.
    #[error("key package credential names {found} but the expected device is {expected}")]
    WrongOwner {
        /// The identity in the package (boxed, like `expected`, to keep the error small).
        found: Box<CredentialIdentity>,
        /// The identity the package must carry.
        expected: Box<CredentialIdentity>,
    },
    /// The leaf node's signature key is not the owner's registered key.
    #[error(
        "key package signature key {} is not the device's registered signature key {}",
        Hex(found),
        Hex(expected)
    )]
    WrongSignatureKey {
        /// The signature key in the package.
        found: Vec<u8>,
        /// The owner's registered signature key.
        expected: Vec<u8>,
    },
    /// The leaf's capabilities do not list an extension every Conclave group
    /// carries in its context, so no group could add the package (RFC 9420
    /// §12.1.1).
    #[error(
        "key package leaf capabilities lack extension type {extension_type:#06x} ({name}), which every conclave group requires"
    )]
    MissingExtensionCapability {
        /// The extension type the capabilities must list.
        extension_type: u16,
        /// What the extension is.
        name: &'static str,
    },
}

/// Checks a TLS-serialised KeyPackage (RFC 9420 §10, not wrapped in an MLSMessage)
/// against the device that must own it and the policy (and that its leaf lists the
/// extensions every Conclave group carries), and returns it with its KeyPackageRef
/// and lifetime.
///
/// The checks run cheapest first: decoding, protocol version and cipher suite, then
/// signatures and structure (openmls's `KeyPackageIn::validate`), lifetime against
/// `policy.now_unix_seconds`, credential identity, and signature key. openmls's
/// `validate` also checks the lifetime against the system clock, with no tolerance; its
/// refusals come back as [`KeyPackageError::Expired`] or [`KeyPackageError::NotYetValid`]
/// carrying the system clock's time.
pub fn verify_key_package(
    bytes: &[u8],
    owner: &ExpectedOwner<'_>,
    policy: &KeyPackagePolicy,
) -> Result<VerifiedKeyPackage, KeyPackageError> {
    if bytes.is_empty() {
        return Err(KeyPackageError::Empty);
    }
    // The `io::Read` decoder, not `DeserializeBytes`: tls_codec 0.5's byte-slice decoder
    // has a `debug_assert` that panics on a truncated vector in debug builds, and this
    // input comes from the network.
    let mut rest = bytes;
    let key_package_in =
        KeyPackageIn::tls_deserialize(&mut rest).map_err(KeyPackageError::Malformed)?;
    if !rest.is_empty() {
        return Err(KeyPackageError::TrailingBytes {
            trailing: rest.len(),
        });
    }
    let cipher_suite = check_header(bytes)?;

    let crypto = verification_crypto();
    let key_package = key_package_in
        .validate(&crypto, ProtocolVersion::Mls10)
        .map_err(from_openmls)?;

    let lifetime = key_package.life_time();
    let (not_before, not_after) = (lifetime.not_before(), lifetime.not_after());
    let now = policy.now_unix_seconds;
    if not_before > now.saturating_add(CLOCK_SKEW_TOLERANCE_SECONDS) {
        return Err(KeyPackageError::NotYetValid { not_before, now });
    }
    if now >= not_after {
        return Err(KeyPackageError::Expired { not_after, now });
    }
    let span = not_after.saturating_sub(not_before);
    let allowed = policy
        .max_lifetime_seconds
        .saturating_add(OPENMLS_BACKDATE_SECONDS);
    if span > allowed {
        return Err(KeyPackageError::LifetimeTooLong {
            span,
            not_before,
            not_after,
            allowed,
        });
    }

    let leaf_node = key_package.leaf_node();
    let credential = BasicCredential::try_from(leaf_node.credential().clone()).map_err(|_| {
        KeyPackageError::CredentialType {
            found: leaf_node.credential().credential_type(),
        }
    })?;
    let identity = CredentialIdentity::from_bytes(credential.identity())
        .map_err(KeyPackageError::CredentialIdentity)?;
    if &identity != owner.identity {
        return Err(KeyPackageError::WrongOwner {
            found: Box::new(identity),
            expected: Box::new(owner.identity.clone()),
        });
    }
    let signature_key = leaf_node.signature_key().as_slice();
    if signature_key != owner.signature_public_key {
        return Err(KeyPackageError::WrongSignatureKey {
            found: signature_key.to_vec(),
            expected: owner.signature_public_key.to_vec(),
        });
    }

    let group_metadata = ExtensionType::Unknown(GROUP_METADATA_EXTENSION_TYPE);
    if !leaf_node
        .capabilities()
        .extensions()
        .contains(&group_metadata)
    {
        return Err(KeyPackageError::MissingExtensionCapability {
            extension_type: GROUP_METADATA_EXTENSION_TYPE,
            name: "group metadata",
        });
    }

    let hash_ref = key_package
        .hash_ref(&crypto)
        .map_err(|error| KeyPackageError::Invalid(error.into()))?;
    Ok(VerifiedKeyPackage {
        hash_ref: hash_ref.as_slice().to_vec(),
        cipher_suite,
        not_before_unix_seconds: not_before,
        not_after_unix_seconds: not_after,
        last_resort: key_package.last_resort(),
        key_package,
    })
}

/// Checks the version and cipher suite before any cryptography, so a package in a
/// foreign suite gets a precise error whether or not our crypto provider could verify
/// it. `KeyPackageIn` does not expose these fields, but an RFC 9420 KeyPackage opens
/// with them: `uint16 version; uint16 cipher_suite;`. Only called once the bytes have
/// decoded as a whole KeyPackage, so they are at least four long.
fn check_header(bytes: &[u8]) -> Result<CipherSuite, KeyPackageError> {
    let field = |at: usize| {
        bytes
            .get(at..at + 2)
            .and_then(|pair| pair.try_into().ok())
            .map_or(0, u16::from_be_bytes)
    };
    let (version, ciphersuite) = (field(0), field(2));
    if ProtocolVersion::from(version) != ProtocolVersion::Mls10 {
        return Err(KeyPackageError::ProtocolVersion { found: version });
    }
    CipherSuite::from_id(ciphersuite)
        .map_err(|_| KeyPackageError::Ciphersuite { found: ciphersuite })
}

/// Sorts openmls's verdict into our variants. Its lifetime errors were measured with
/// the system clock rather than the policy's, but say the same thing, so they map to
/// the same variants with the clock openmls used.
fn from_openmls(error: KeyPackageVerifyError) -> KeyPackageError {
    match error {
        KeyPackageVerifyError::InvalidSignature => KeyPackageError::Signature,
        KeyPackageVerifyError::InvalidLeafNodeSignature => KeyPackageError::LeafNodeSignature,
        KeyPackageVerifyError::LifetimeError(LifetimeError::Expired { not_after, now }) => {
            KeyPackageError::Expired { not_after, now }
        }
        KeyPackageVerifyError::LifetimeError(LifetimeError::NotValidYet { not_before, now }) => {
            KeyPackageError::NotYetValid { not_before, now }
        }
        other => KeyPackageError::Invalid(other),
    }
}

/// Lowercase hex for keys in error messages.
struct Hex<'a>(&'a [u8]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
    }
}

#[cfg(test)]
mod tests {
    use openmls::prelude::tls_codec::Serialize as _;
    use openmls::prelude::{
        Capabilities, Ciphersuite, Credential, CredentialWithKey, ExtensionType, Lifetime,
    };
    use openmls_basic_credential::SignatureKeyPair;
    use openmls_rust_crypto::OpenMlsRustCrypto;
    use openmls_traits::OpenMlsProvider as _;

    use super::*;
    use crate::mls::CIPHERSUITE;

    const ALICE_AA: &str = "alice@a.example/00000000000000aa";
    const MAX_LIFETIME: u64 = 7 * 24 * 60 * 60;
    const UNKNOWN_CREDENTIAL_TYPE: CredentialType = CredentialType::Other(0xf000);

    /// A key package as a device would make it; `Fixture::device` makes a valid one and
    /// each field can be spoilt before `build`.
    struct Fixture {
        ciphersuite: Ciphersuite,
        credential: Credential,
        lifetime_seconds: u64,
        last_resort: bool,
        /// Whether the leaf lists Conclave's group metadata extension.
        group_metadata: bool,
    }

    /// A built package: its wire bytes, and what the test needs to know about it.
    struct Built {
        bytes: Vec<u8>,
        key_package: KeyPackage,
        signature_public_key: Vec<u8>,
        not_before: u64,
        not_after: u64,
    }

    impl Fixture {
        fn device(identity: &str) -> Self {
            Fixture {
                ciphersuite: CIPHERSUITE,
                credential: BasicCredential::new(identity.as_bytes().to_vec()).into(),
                lifetime_seconds: MAX_LIFETIME,
                last_resort: false,
                group_metadata: true,
            }
        }

        fn build(self) -> Built {
            let provider = OpenMlsRustCrypto::default();
            let signer = SignatureKeyPair::new(self.ciphersuite.signature_algorithm()).unwrap();
            // openmls refuses a package whose extensions its leaf does not list, and
            // `mark_as_last_resort` does not list LastResort by itself: clients must too.
            let mut extensions = vec![ExtensionType::LastResort];
            if self.group_metadata {
                extensions.push(ExtensionType::Unknown(GROUP_METADATA_EXTENSION_TYPE));
            }
            let capabilities = Capabilities::builder()
                .extensions(extensions)
                .credentials(vec![CredentialType::Basic, UNKNOWN_CREDENTIAL_TYPE])
                .build();
            let mut builder = KeyPackage::builder()
                .key_package_lifetime(Lifetime::new(self.lifetime_seconds))
                .leaf_node_capabilities(capabilities);
            if self.last_resort {
                builder = builder.mark_as_last_resort();
            }
            let credential_with_key = CredentialWithKey {
                credential: self.credential,
                signature_key: signer.to_public_vec().into(),
            };
            let key_package = builder
                .build(self.ciphersuite, &provider, &signer, credential_with_key)
                .unwrap()
                .into_key_package();
            Built {
                bytes: key_package.tls_serialize_detached().unwrap(),
                not_before: key_package.life_time().not_before(),
                not_after: key_package.life_time().not_after(),
                signature_public_key: signer.to_public_vec(),
                key_package,
            }
        }
    }

    impl Built {
        /// The moment the package was made (`Lifetime::new` backdates by an hour).
        fn made_at(&self) -> u64 {
            self.not_before + OPENMLS_BACKDATE_SECONDS
        }
    }

    enum Expect {
        Accepted,
        /// Refused with a message that starts with this text.
        Refused(String),
    }

    fn check(
        name: &str,
        bytes: &[u8],
        owner: (&str, &[u8]),
        now: u64,
        expect: Expect,
    ) -> Option<VerifiedKeyPackage> {
        let identity: CredentialIdentity = owner.0.parse().unwrap();
        let expected_owner = ExpectedOwner {
            identity: &identity,
            signature_public_key: owner.1,
        };
        let policy = KeyPackagePolicy {
            now_unix_seconds: now,
            max_lifetime_seconds: MAX_LIFETIME,
        };
        match (verify_key_package(bytes, &expected_owner, &policy), expect) {
            (Ok(verified), Expect::Accepted) => Some(verified),
            (Ok(_), Expect::Refused(message)) => panic!("{name}: accepted, expected {message:?}"),
            (Err(error), Expect::Accepted) => panic!("{name}: refused: {error}"),
            (Err(error), Expect::Refused(message)) => {
                let actual = error.to_string();
                assert!(
                    actual.starts_with(&message),
                    "{name}: refused with {actual:?}, expected {message:?}"
                );
                None
            }
        }
    }

    fn refused(message: impl Into<String>) -> Expect {
        Expect::Refused(message.into())
    }

    #[test]
    fn valid_packages_are_accepted_with_their_details() {
        for last_resort in [false, true] {
            let built = Fixture {
                last_resort,
                ..Fixture::device(ALICE_AA)
            }
            .build();
            let owner = (ALICE_AA, built.signature_public_key.as_slice());
            let verified = check(
                "valid",
                &built.bytes,
                owner,
                built.made_at(),
                Expect::Accepted,
            )
            .unwrap();
            let hash_ref = built
                .key_package
                .hash_ref(OpenMlsRustCrypto::default().crypto())
                .unwrap();
            assert!(!verified.hash_ref.is_empty());
            assert_eq!(verified.hash_ref, hash_ref.as_slice());
            assert_eq!(verified.not_before_unix_seconds, built.not_before);
            assert_eq!(verified.not_after_unix_seconds, built.not_after);
            assert_eq!(verified.last_resort, last_resort);
            assert_eq!(verified.key_package, built.key_package);
        }
    }

    #[test]
    fn malformed_bytes_are_refused() {
        let built = Fixture::device(ALICE_AA).build();
        let owner = (ALICE_AA, built.signature_public_key.as_slice());
        let now = built.made_at();
        let with_trailing = [built.bytes.as_slice(), &[0, 0, 0]].concat();
        let truncated = &built.bytes[..built.bytes.len() - 1];
        let mut tampered_signature = built.bytes.clone();
        *tampered_signature.last_mut().unwrap() ^= 1;
        let mut tampered_identity = built.bytes.clone();
        let at = find(&tampered_identity, ALICE_AA.as_bytes());
        tampered_identity[at] = b'b';
        let mut other_version = built.bytes.clone();
        other_version[1] = 2;

        for length in 1..built.bytes.len() {
            let name = format!("truncated to {length} bytes");
            let expect = refused("key package does not decode");
            check(&name, &built.bytes[..length], owner, now, expect);
        }
        // Whatever single bit is flipped, the package is refused, and nothing panics.
        for at in 0..built.bytes.len() {
            let mut corrupted = built.bytes.clone();
            corrupted[at] ^= 1;
            let name = format!("bit flipped at {at}");
            check(&name, &corrupted, owner, now, refused("key package "));
        }
        for (name, bytes, expect) in [
            ("empty", &[][..], refused("key package is empty")),
            (
                "garbage",
                b"not a key package",
                refused("key package does not decode"),
            ),
            (
                "truncated",
                truncated,
                refused("key package does not decode"),
            ),
            (
                "trailing bytes",
                &with_trailing,
                refused("key package is followed by 3 unexpected bytes"),
            ),
            (
                "tampered signature",
                &tampered_signature,
                refused("key package signature does not verify"),
            ),
            (
                "tampered leaf node",
                &tampered_identity,
                refused("key package leaf node signature does not verify"),
            ),
            (
                "other version",
                &other_version,
                refused("key package is for protocol version 2 but"),
            ),
        ] {
            check(name, bytes, owner, now, expect);
        }
    }

    #[test]
    fn packages_of_other_owners_are_refused() {
        let built = Fixture::device(ALICE_AA).build();
        let key = built.signature_public_key.as_slice();
        let other_key = SignatureKeyPair::new(CIPHERSUITE.signature_algorithm())
            .unwrap()
            .to_public_vec();
        let not_a_device = Fixture::device("alice@a.example").build();
        let not_basic = Fixture {
            credential: Credential::new(UNKNOWN_CREDENTIAL_TYPE, ALICE_AA.as_bytes().to_vec()),
            ..Fixture::device(ALICE_AA)
        }
        .build();

        for (name, built, owner, expect) in [
            ("owner", &built, (ALICE_AA, key), Expect::Accepted),
            (
                "other device",
                &built,
                ("alice@a.example/00000000000000bb", key),
                refused(
                    "key package credential names alice@a.example/00000000000000aa \
                     but the expected device is alice@a.example/00000000000000bb",
                ),
            ),
            (
                "other user",
                &built,
                ("bob@a.example/00000000000000aa", key),
                refused("key package credential names alice@a.example/00000000000000aa but"),
            ),
            (
                "other signature key",
                &built,
                (ALICE_AA, &other_key),
                refused(format!(
                    "key package signature key {} is not the device's registered signature key {}",
                    Hex(key),
                    Hex(&other_key)
                )),
            ),
            (
                "identity without device",
                &not_a_device,
                (ALICE_AA, &not_a_device.signature_public_key),
                refused(
                    "key package credential does not name a device: \
                     credential identity \"alice@a.example\" is invalid",
                ),
            ),
            (
                "not a basic credential",
                &not_basic,
                (ALICE_AA, &not_basic.signature_public_key),
                refused("key package credential is of type Other(61440) but"),
            ),
        ] {
            check(name, &built.bytes, owner, built.made_at(), expect);
        }
    }

    #[test]
    fn packages_must_support_the_group_metadata_extension() {
        let built = Fixture {
            group_metadata: false,
            ..Fixture::device(ALICE_AA)
        }
        .build();
        let owner = (ALICE_AA, built.signature_public_key.as_slice());
        let expect = refused(
            "key package leaf capabilities lack extension type 0xf0c1 (group metadata), \
             which every conclave group requires",
        );
        check(
            "no group metadata",
            &built.bytes,
            owner,
            built.made_at(),
            expect,
        );
    }

    #[test]
    fn other_cipher_suites_are_refused() {
        // RustCrypto can make P-256 packages, so this is a real, validly signed package.
        let built = Fixture {
            ciphersuite: Ciphersuite::MLS_128_DHKEMP256_AES128GCM_SHA256_P256,
            ..Fixture::device(ALICE_AA)
        }
        .build();
        let owner = (ALICE_AA, built.signature_public_key.as_slice());
        let expect = refused(
            "key package uses cipher suite 0x0002 but conclave accepts only 0x0001 \
             (MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519) and 0x004f",
        );
        check("p-256", &built.bytes, owner, built.made_at(), expect);
    }

    #[test]
    fn both_suites_are_accepted_and_reported() {
        for suite in crate::mls::ALL_CIPHER_SUITES {
            let built = Fixture {
                ciphersuite: suite.ciphersuite(),
                ..Fixture::device(ALICE_AA)
            }
            .build();
            let owner = (ALICE_AA, built.signature_public_key.as_slice());
            let verified = check(
                suite.short_name(),
                &built.bytes,
                owner,
                built.made_at(),
                Expect::Accepted,
            )
            .unwrap();
            assert_eq!(verified.cipher_suite, suite);
        }
    }

    #[test]
    fn lifetimes_are_checked_against_the_policy_clock() {
        let built = Fixture::device(ALICE_AA).build();
        let too_long = Fixture {
            lifetime_seconds: MAX_LIFETIME + 1,
            ..Fixture::device(ALICE_AA)
        }
        .build();
        let (not_before, not_after) = (built.not_before, built.not_after);
        let earliest = not_before - CLOCK_SKEW_TOLERANCE_SECONDS;

        for (name, built, now, expect) in [
            ("at not_before", &built, not_before, Expect::Accepted),
            ("within skew tolerance", &built, earliest, Expect::Accepted),
            (
                "before skew tolerance",
                &built,
                earliest - 1,
                refused(format!(
                    "key package is not valid before {not_before}, now is {}",
                    earliest - 1
                )),
            ),
            ("last valid second", &built, not_after - 1, Expect::Accepted),
            (
                "at not_after",
                &built,
                not_after,
                refused(format!(
                    "key package expired at {not_after}, now is {not_after}"
                )),
            ),
            (
                "long expired",
                &built,
                not_after + 365 * 24 * 60 * 60,
                refused(format!("key package expired at {not_after}, now is")),
            ),
            (
                "longer than the maximum",
                &too_long,
                too_long.made_at(),
                refused(format!(
                    "key package lifetime spans {} seconds (from {} to {}) but at most {} are allowed",
                    MAX_LIFETIME + 1 + OPENMLS_BACKDATE_SECONDS,
                    too_long.not_before,
                    too_long.not_after,
                    MAX_LIFETIME + OPENMLS_BACKDATE_SECONDS,
                )),
            ),
        ] {
            let owner = (ALICE_AA, built.signature_public_key.as_slice());
            check(name, &built.bytes, owner, now, expect);
        }
    }

    fn find(haystack: &[u8], needle: &[u8]) -> usize {
        haystack
            .windows(needle.len())
            .position(|window| window == needle)
            .unwrap()
    }
}
