//! Building this device's key packages, and checking the ones claimed for others.

use conclave_core::ids::CredentialIdentity;
use conclave_core::key_package::{
    ExpectedOwner, KeyPackageError, KeyPackagePolicy, VerifiedKeyPackage, verify_key_package,
};
use conclave_core::mls::CipherSuite;
use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
use openmls::prelude::{KeyPackage, KeyPackageIn, KeyPackageRef, Lifetime};
use openmls_basic_credential::SignatureKeyPair;
use openmls_traits::OpenMlsProvider;
use openmls_traits::storage::StorageProvider as _;

use super::config::leaf_capabilities;
use super::{MlsError, credential_with_key};
use crate::state::MlsProvider;

const DAY_SECONDS: u64 = 24 * 60 * 60;

/// Lifetime given to each new key package: four weeks. Short enough that a package's
/// keys are not exposed for long (RFC 9420 §16.8), well within a homeserver's
/// default maximum of 90 days, and long enough that a device which is offline for a
/// while can still be added to groups.
pub(crate) const KEY_PACKAGE_LIFETIME_SECONDS: u64 = 28 * DAY_SECONDS;

/// Longest lifetime accepted on a claimed package. The claimer cannot know the
/// issuing homeserver's configured maximum (which that server enforced at upload),
/// so this is the widest any Conclave homeserver can be configured to allow; it
/// only refuses absurd lifetimes.
pub(crate) const CLAIM_MAX_LIFETIME_SECONDS: u64 = 365 * DAY_SECONDS;

/// One upload's worth of new packages, TLS-encoded as bare `KeyPackage` structs.
pub(crate) struct KeyPackageBatch {
    /// Single-use packages.
    pub(crate) ordinary: Vec<Vec<u8>>,
    /// The package handed out when the ordinary stock is empty, if one was built.
    pub(crate) last_resort: Option<Vec<u8>>,
    /// References of every package above, whose private keys are now in storage;
    /// used to forget them if the upload fails.
    pub(crate) hash_refs: Vec<KeyPackageRef>,
}

/// Builds `count` ordinary packages of `suite` for this device, and a
/// last-resort package if `with_last_resort`.
/// openmls writes each package's private keys into the provider's storage as it
/// builds it, which is what lets this device open a Welcome for it later; run this
/// inside a state transaction so the keys are stored in one commit.
pub(crate) fn build_key_packages(
    provider: &MlsProvider<'_>,
    signer: &SignatureKeyPair,
    identity: &CredentialIdentity,
    suite: CipherSuite,
    count: usize,
    with_last_resort: bool,
    lifetime_seconds: u64,
) -> Result<KeyPackageBatch, MlsError> {
    let credential = credential_with_key(identity, signer);
    let build = |last_resort: bool| -> Result<(Vec<u8>, KeyPackageRef), MlsError> {
        let mut builder = KeyPackage::builder()
            .key_package_lifetime(Lifetime::new(lifetime_seconds))
            .leaf_node_capabilities(leaf_capabilities());
        if last_resort {
            builder = builder.mark_as_last_resort();
        }
        let bundle = builder.build(suite.ciphersuite(), provider, signer, credential.clone())?;
        let key_package = bundle.key_package();
        let hash_ref = key_package
            .hash_ref(provider.crypto())
            .map_err(MlsError::HashRef)?;
        Ok((key_package.tls_serialize_detached()?, hash_ref))
    };
    let mut hash_refs = Vec::with_capacity(count + 1);
    let mut ordinary = Vec::with_capacity(count);
    for _ in 0..count {
        let (bytes, hash_ref) = build(false)?;
        ordinary.push(bytes);
        hash_refs.push(hash_ref);
    }
    let last_resort = if with_last_resort {
        let (bytes, hash_ref) = build(true)?;
        hash_refs.push(hash_ref);
        Some(bytes)
    } else {
        None
    };
    Ok(KeyPackageBatch {
        ordinary,
        last_resort,
        hash_refs,
    })
}

/// Deletes the private keys of packages that never reached the server, so a
/// failed upload leaves no unusable secrets behind.
pub(crate) fn forget_key_packages(
    provider: &MlsProvider<'_>,
    hash_refs: &[KeyPackageRef],
) -> Result<(), MlsError> {
    for hash_ref in hash_refs {
        provider.storage().delete_key_package(hash_ref)?;
    }
    Ok(())
}

/// Checks a package claimed for the device named `identity`: it must decode, be
/// signed by its own leaf key, be in a cipher suite Conclave speaks (the caller
/// checks it is the one claimed), be currently valid,
/// and carry a BasicCredential naming exactly that device.
///
/// The claim response does not carry the device's registered signature key, so
/// the package's own leaf key stands in for it here: the check shows the package
/// is self-consistent and names the right device. Whether that key really is the
/// device's is the Authentication Service's answer (the device's homeserver
/// checked it at upload).
pub(crate) fn verify_claimed_key_package(
    bytes: &[u8],
    identity: &CredentialIdentity,
    now_unix_seconds: u64,
) -> Result<VerifiedKeyPackage, KeyPackageError> {
    // A decoding failure here is reported again, with the same cause, by
    // `verify_key_package` below, so an unreadable package just skips this step.
    let leaf_signature_key = KeyPackageIn::tls_deserialize(&mut &bytes[..])
        .map(|package| {
            package
                .unverified_credential()
                .signature_key
                .as_slice()
                .to_vec()
        })
        .unwrap_or_default();
    let owner = ExpectedOwner {
        identity,
        signature_public_key: &leaf_signature_key,
    };
    let policy = KeyPackagePolicy {
        now_unix_seconds,
        max_lifetime_seconds: CLAIM_MAX_LIFETIME_SECONDS,
    };
    verify_key_package(bytes, &owner, &policy)
}

#[cfg(test)]
mod tests {
    use std::time::{SystemTime, UNIX_EPOCH};

    use openmls_traits::storage::StorageProvider as _;

    use super::*;
    use crate::state::State;

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn alice() -> CredentialIdentity {
        "alice@localhost/00000000000000aa".parse().unwrap()
    }

    #[test]
    fn built_packages_verify_and_their_keys_are_stored() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = State::open(dir.path()).unwrap();
        let signer = crate::mls::generate_signer().unwrap();
        let batch = state
            .transaction(|provider, _| {
                build_key_packages(
                    provider,
                    &signer,
                    &alice(),
                    CipherSuite::Classic,
                    3,
                    true,
                    KEY_PACKAGE_LIFETIME_SECONDS,
                )
            })
            .unwrap();
        assert_eq!(batch.ordinary.len(), 3);
        assert_eq!(batch.hash_refs.len(), 4);

        for bytes in &batch.ordinary {
            let verified = verify_claimed_key_package(bytes, &alice(), now()).unwrap();
            assert!(!verified.last_resort);
            assert_eq!(
                verified.key_package.leaf_node().signature_key().as_slice(),
                signer.public()
            );
        }
        let last_resort_bytes = batch.last_resort.as_deref().unwrap();
        let last_resort = verify_claimed_key_package(last_resort_bytes, &alice(), now()).unwrap();
        assert!(last_resort.last_resort);
        assert!(
            last_resort.not_after_unix_seconds - last_resort.not_before_unix_seconds
                <= 90 * DAY_SECONDS,
            "within the homeserver's default maximum"
        );

        let provider = state.provider();
        let stored = |hash_ref: &KeyPackageRef| {
            provider
                .storage()
                .key_package::<_, openmls::prelude::KeyPackageBundle>(hash_ref)
                .unwrap()
                .is_some()
        };
        assert!(batch.hash_refs.iter().all(stored));
        forget_key_packages(&provider, &batch.hash_refs).unwrap();
        assert!(!batch.hash_refs.iter().any(stored));
    }

    #[test]
    fn a_package_for_another_device_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = State::open(dir.path()).unwrap();
        let signer = crate::mls::generate_signer().unwrap();
        let batch = state
            .transaction(|provider, _| {
                build_key_packages(
                    provider,
                    &signer,
                    &alice(),
                    CipherSuite::Classic,
                    0,
                    true,
                    KEY_PACKAGE_LIFETIME_SECONDS,
                )
            })
            .unwrap();
        let mallory: CredentialIdentity = "mallory@localhost/00000000000000bb".parse().unwrap();
        let error =
            verify_claimed_key_package(batch.last_resort.as_deref().unwrap(), &mallory, now())
                .unwrap_err();
        assert!(
            matches!(error, KeyPackageError::WrongOwner { .. }),
            "{error}"
        );
        let error = verify_claimed_key_package(b"not a key package", &alice(), now()).unwrap_err();
        assert!(matches!(error, KeyPackageError::Malformed(_)), "{error}");
    }
}
