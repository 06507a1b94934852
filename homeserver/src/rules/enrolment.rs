//! Proof of possession at enrolment: the challenges the homeserver issues, and
//! what a Register or Login must carry to enrol a signature key (a live challenge
//! of this homeserver, signed with that key over the transcript of
//! `conclave_core::enrolment`).
//!
//! A challenge is stateless: `issued_at_ms (8 bytes, big-endian) || random (16
//! bytes) || HMAC-SHA256(domain secret, label || issued_at_ms || random)`. Issuing
//! one writes nothing, and every replica of the domain accepts the others'
//! challenges because they share the secret (kept in the database). Single use is
//! the store's part: a successful enrolment records the challenge's digest under a
//! unique key in its own transaction.

use conclave_core::enrolment::{EnrolmentTranscript, PossessionError};
use conclave_core::ids::{Domain, Username};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// How long a challenge is accepted after it was issued: long enough for a
/// person typing a password, short enough that few are live at once.
pub(crate) const CHALLENGE_LIFETIME_MS: i64 = 5 * 60 * 1000;
/// Length of the domain's challenge secret, in bytes.
pub(crate) const CHALLENGE_KEY_LENGTH: usize = 32;
/// Random bytes in each challenge: two challenges of one millisecond differ.
pub(crate) const CHALLENGE_RANDOM_LENGTH: usize = 16;
/// Issue time, random bytes and MAC.
const CHALLENGE_LENGTH: usize = 8 + CHALLENGE_RANDOM_LENGTH + 32;
/// Separates this MAC from any other use of the secret.
const MAC_LABEL: &[u8] = b"conclave enrolment challenge v1";

/// The domain's secret for challenges. Its `Debug` shows nothing of it.
#[derive(Clone)]
pub(crate) struct ChallengeKey([u8; CHALLENGE_KEY_LENGTH]);

impl std::fmt::Debug for ChallengeKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("ChallengeKey(..)")
    }
}

impl ChallengeKey {
    /// The key, from stored bytes; `None` if they have the wrong length.
    pub(crate) fn from_bytes(bytes: &[u8]) -> Option<ChallengeKey> {
        bytes.try_into().ok().map(ChallengeKey)
    }

    fn mac(&self, issued_at: &[u8], random: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(MAC_LABEL);
        mac.update(issued_at);
        mac.update(random);
        mac
    }
}

/// A challenge as BeginEnrolment returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IssuedChallenge {
    pub(crate) bytes: Vec<u8>,
    pub(crate) expires_at_ms: i64,
}

/// The challenge issued at `issued_at_ms` with these random bytes.
pub(crate) fn issue_challenge(
    key: &ChallengeKey,
    issued_at_ms: i64,
    random: [u8; CHALLENGE_RANDOM_LENGTH],
) -> IssuedChallenge {
    let issued_at = issued_at_ms.to_be_bytes();
    let tag = key.mac(&issued_at, &random).finalize().into_bytes();
    IssuedChallenge {
        bytes: [&issued_at[..], &random, &tag].concat(),
        expires_at_ms: issued_at_ms.saturating_add(CHALLENGE_LIFETIME_MS),
    }
}

/// A challenge this homeserver issued that is still live, with what marks it
/// used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LiveChallenge {
    /// SHA-256 of the challenge, the key under which its use is recorded.
    pub(crate) digest: Vec<u8>,
    /// Until when it would be accepted; its use record may go after that.
    pub(crate) expires_at_ms: i64,
}

/// Why an enrolment's proof of possession was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PossessionRefusal {
    /// No challenge.
    #[error("device.challenge is required: get one from BeginEnrolment")]
    MissingChallenge,
    /// No signature.
    #[error(
        "device.possession_signature is required: sign the enrolment transcript with the device's key"
    )]
    MissingSignature,
    /// The challenge is not the length of one of ours.
    #[error(
        "device.challenge was not issued by this homeserver: expected {CHALLENGE_LENGTH} bytes, got {0}"
    )]
    MalformedChallenge(usize),
    /// The challenge's MAC does not verify: forged, altered, or another domain's.
    #[error("device.challenge was not issued by this homeserver")]
    ForeignChallenge,
    /// The challenge is older than its lifetime.
    #[error("device.challenge expired {expired_ms_ago} ms ago; get a new one from BeginEnrolment")]
    Expired { expired_ms_ago: i64 },
    /// An enrolment already used the challenge.
    #[error("device.challenge was already used by an enrolment; get a new one from BeginEnrolment")]
    AlreadyUsed,
    /// The signature does not verify over the transcript.
    #[error(transparent)]
    Signature(#[from] PossessionError),
}

/// What a request offers as proof.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PossessionProof<'a> {
    pub(crate) challenge: &'a [u8],
    pub(crate) signature: &'a [u8],
    pub(crate) signature_public_key: &'a [u8],
    /// As sent, before normalisation: that is what was signed.
    pub(crate) display_name: &'a str,
}

/// Checks the challenge (ours, live at `now_ms`) and then the signature over the
/// transcript for `domain` and `username`: the cheap MAC before the signature.
/// Whether the challenge was used already is the store's to say.
pub(crate) fn check_possession(
    key: &ChallengeKey,
    now_ms: i64,
    domain: &Domain,
    username: &Username,
    proof: PossessionProof<'_>,
) -> Result<LiveChallenge, PossessionRefusal> {
    if proof.challenge.is_empty() {
        return Err(PossessionRefusal::MissingChallenge);
    }
    if proof.signature.is_empty() {
        return Err(PossessionRefusal::MissingSignature);
    }
    let live = check_challenge(key, now_ms, proof.challenge)?;
    EnrolmentTranscript {
        domain,
        username,
        challenge: proof.challenge,
        signature_public_key: proof.signature_public_key,
        display_name: proof.display_name,
    }
    .verify(proof.signature)?;
    Ok(live)
}

fn check_challenge(
    key: &ChallengeKey,
    now_ms: i64,
    challenge: &[u8],
) -> Result<LiveChallenge, PossessionRefusal> {
    if challenge.len() != CHALLENGE_LENGTH {
        return Err(PossessionRefusal::MalformedChallenge(challenge.len()));
    }
    let (issued_at, rest) = challenge.split_at(8);
    let (random, tag) = rest.split_at(CHALLENGE_RANDOM_LENGTH);
    key.mac(issued_at, random)
        .verify_slice(tag)
        .map_err(|_| PossessionRefusal::ForeignChallenge)?;
    let issued_at_ms = i64::from_be_bytes(issued_at.try_into().expect("split at 8 bytes"));
    let expires_at_ms = issued_at_ms.saturating_add(CHALLENGE_LIFETIME_MS);
    if now_ms >= expires_at_ms {
        return Err(PossessionRefusal::Expired {
            expired_ms_ago: now_ms.saturating_sub(expires_at_ms),
        });
    }
    Ok(LiveChallenge {
        digest: Sha256::digest(challenge).to_vec(),
        expires_at_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use openmls_basic_credential::SignatureKeyPair;
    use openmls_traits::types::SignatureScheme;

    const ISSUED_MS: i64 = 1_000_000;

    fn key(fill: u8) -> ChallengeKey {
        ChallengeKey::from_bytes(&[fill; CHALLENGE_KEY_LENGTH]).unwrap()
    }

    fn challenge() -> IssuedChallenge {
        issue_challenge(&key(1), ISSUED_MS, [9; CHALLENGE_RANDOM_LENGTH])
    }

    #[test]
    fn keys_have_one_length_and_stay_secret() {
        assert!(ChallengeKey::from_bytes(&[0; 31]).is_none());
        assert!(ChallengeKey::from_bytes(&[0; 33]).is_none());
        assert_eq!(format!("{:?}", key(7)), "ChallengeKey(..)");
    }

    #[test]
    fn challenges_live_for_their_lifetime_under_their_key() {
        let issued = challenge();
        assert_eq!(issued.bytes.len(), CHALLENGE_LENGTH);
        assert_eq!(issued.expires_at_ms, ISSUED_MS + CHALLENGE_LIFETIME_MS);
        let live = check_challenge(&key(1), ISSUED_MS, &issued.bytes).unwrap();
        assert_eq!(live.expires_at_ms, issued.expires_at_ms);
        assert_eq!(live.digest, Sha256::digest(&issued.bytes).to_vec());
        assert!(check_challenge(&key(1), issued.expires_at_ms - 1, &issued.bytes).is_ok());

        let mut tampered_time = issued.bytes.clone();
        tampered_time[7] ^= 1;
        let mut tampered_mac = issued.bytes.clone();
        tampered_mac[CHALLENGE_LENGTH - 1] ^= 1;
        for (case, key, now_ms, bytes, expected) in [
            (
                "expired",
                key(1),
                issued.expires_at_ms,
                issued.bytes.clone(),
                PossessionRefusal::Expired { expired_ms_ago: 0 },
            ),
            (
                "another domain's key",
                key(2),
                ISSUED_MS,
                issued.bytes.clone(),
                PossessionRefusal::ForeignChallenge,
            ),
            (
                "issue time moved",
                key(1),
                ISSUED_MS,
                tampered_time,
                PossessionRefusal::ForeignChallenge,
            ),
            (
                "MAC altered",
                key(1),
                ISSUED_MS,
                tampered_mac,
                PossessionRefusal::ForeignChallenge,
            ),
            (
                "cut short",
                key(1),
                ISSUED_MS,
                issued.bytes[..10].to_vec(),
                PossessionRefusal::MalformedChallenge(10),
            ),
        ] {
            assert_eq!(
                check_challenge(&key, now_ms, &bytes),
                Err(expected),
                "{case}"
            );
        }
        // Two challenges of the same millisecond differ by their random bytes.
        let other = issue_challenge(&key(1), ISSUED_MS, [8; CHALLENGE_RANDOM_LENGTH]);
        assert_ne!(other.bytes, issued.bytes);
    }

    #[test]
    fn a_proof_needs_a_live_challenge_and_the_keys_signature() {
        let domain: Domain = "a.example".parse().unwrap();
        let alice: Username = "alice".parse().unwrap();
        let signer = SignatureKeyPair::new(SignatureScheme::ED25519).unwrap();
        let squatter = SignatureKeyPair::new(SignatureScheme::ED25519).unwrap();
        let issued = challenge();
        let public_key = signer.to_public_vec();
        let sign = |by: &SignatureKeyPair, challenge: &[u8]| {
            EnrolmentTranscript {
                domain: &domain,
                username: &alice,
                challenge,
                signature_public_key: &public_key,
                display_name: "laptop",
            }
            .sign(by)
            .unwrap()
        };
        let signature = sign(&signer, &issued.bytes);
        let proof = PossessionProof {
            challenge: &issued.bytes,
            signature: &signature,
            signature_public_key: &public_key,
            display_name: "laptop",
        };
        let check = |proof| check_possession(&key(1), ISSUED_MS, &domain, &alice, proof);
        assert!(check(proof).is_ok());

        let squatted = sign(&squatter, &issued.bytes);
        let expired = ISSUED_MS + CHALLENGE_LIFETIME_MS + 5;
        for (case, result, expected) in [
            (
                "no challenge",
                check(PossessionProof {
                    challenge: &[],
                    ..proof
                }),
                PossessionRefusal::MissingChallenge,
            ),
            (
                "no signature",
                check(PossessionProof {
                    signature: &[],
                    ..proof
                }),
                PossessionRefusal::MissingSignature,
            ),
            (
                "signed by another key",
                check(PossessionProof {
                    signature: &squatted,
                    ..proof
                }),
                PossessionRefusal::Signature(PossessionError::BadSignature),
            ),
            (
                "another display name than signed",
                check(PossessionProof {
                    display_name: "phone",
                    ..proof
                }),
                PossessionRefusal::Signature(PossessionError::BadSignature),
            ),
            (
                "for another user",
                check_possession(&key(1), ISSUED_MS, &domain, &"bob".parse().unwrap(), proof),
                PossessionRefusal::Signature(PossessionError::BadSignature),
            ),
            (
                "expired, though well signed",
                check_possession(&key(1), expired, &domain, &alice, proof),
                PossessionRefusal::Expired { expired_ms_ago: 5 },
            ),
        ] {
            assert_eq!(result, Err(expected), "{case}");
        }
    }
}
