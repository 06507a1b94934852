//! A device's MLS identity: its Ed25519 signature key pair and the BasicCredential
//! naming `name@domain/device_id`, which its homeserver binds together at enrolment.

use conclave_core::enrolment::EnrolmentTranscript;
use conclave_core::ids::{CredentialIdentity, Domain, Username};
use conclave_core::mls::CIPHERSUITE;
use openmls::prelude::{BasicCredential, CredentialWithKey};
use openmls_basic_credential::SignatureKeyPair;

use super::MlsError;

/// A fresh signature key pair for [`CIPHERSUITE`] (Ed25519). It is generated before
/// the device exists on the server, because Register and Login carry its public key.
pub(crate) fn generate_signer() -> Result<SignatureKeyPair, MlsError> {
    SignatureKeyPair::new(CIPHERSUITE.signature_algorithm()).map_err(MlsError::GenerateSigner)
}

/// The device's proof that it holds `signer`'s private key, for one enrolment
/// at `domain` as `username` with the server's `challenge` (the transcript of
/// [`conclave_core::enrolment`]).
pub(crate) fn sign_enrolment(
    signer: &SignatureKeyPair,
    domain: &Domain,
    username: &Username,
    challenge: &[u8],
    display_name: &str,
) -> Result<Vec<u8>, MlsError> {
    let signature_public_key = signer.to_public_vec();
    let transcript = EnrolmentTranscript {
        domain,
        username,
        challenge,
        signature_public_key: &signature_public_key,
        display_name,
    };
    Ok(transcript.sign(signer)?)
}

/// The credential and key this device puts in every leaf node it creates.
pub(crate) fn credential_with_key(
    identity: &CredentialIdentity,
    signer: &SignatureKeyPair,
) -> CredentialWithKey {
    CredentialWithKey {
        credential: BasicCredential::new(identity.to_bytes()).into(),
        signature_key: signer.public().into(),
    }
}
