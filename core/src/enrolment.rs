//! Proof of possession at device enrolment: what a device signs, with the key it
//! enrols, to show the homeserver it holds that key's private half.
//!
//! Without it, anyone could enrol a device under someone else's signature public
//! key (key squatting). The signed transcript binds the homeserver's domain, the
//! username, a fresh challenge from the homeserver (`AccountService.BeginEnrolment`),
//! the key itself and the device's display name, so a proof is good for one
//! enrolment only and cannot be carried to another user, domain or key.
//!
//! The layout follows RFC 9420's `SignWithLabel` (§5.1.2), with its own label so
//! that no MLS signature can be taken for a proof or the other way round:
//!
//! ```text
//! struct {
//!     opaque label<V>;    // "MLS 1.0 conclave enrolment"
//!     opaque content<V>;  // EnrolmentContent, TLS-encoded
//! } SignContent;
//!
//! struct {
//!     opaque domain<V>;               // UTF-8, e.g. "a.example"
//!     opaque username<V>;             // UTF-8 local part, e.g. "alice"
//!     opaque challenge<V>;            // as BeginEnrolment returned it
//!     opaque signature_public_key<V>; // the 32-byte Ed25519 key enrolled
//!     opaque display_name<V>;         // UTF-8, exactly as sent
//! } EnrolmentContent;
//! ```
//!
//! `<V>` is RFC 9420's variable-length vector (§2.1.2): a QUIC-style varint length,
//! then the bytes. The signature is Ed25519 over the encoded `SignContent`.

use openmls::prelude::SignatureScheme;
use openmls::prelude::tls_codec::{self, SerializeBytes as _, VLByteSlice};
use openmls_traits::crypto::OpenMlsCrypto as _;
use openmls_traits::signatures::{Signer, SignerError};

use crate::ids::{Domain, Username};
use crate::mls::verification_crypto;

/// The label of the signed transcript, RFC 9420's "MLS 1.0 " prefix included.
pub const ENROLMENT_LABEL: &[u8] = b"MLS 1.0 conclave enrolment";

/// What a device proves it holds the key of, at one enrolment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnrolmentTranscript<'a> {
    /// The homeserver's domain.
    pub domain: &'a Domain,
    /// The local part of the user the device is enrolled for.
    pub username: &'a Username,
    /// The challenge the homeserver issued, opaque to the device.
    pub challenge: &'a [u8],
    /// The Ed25519 public key being enrolled, which signs the transcript.
    pub signature_public_key: &'a [u8],
    /// The device's display name as sent in the request (before normalisation).
    pub display_name: &'a str,
}

/// Why a proof of possession was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PossessionError {
    /// A field is too long for a TLS variable-length vector (2^30 bytes).
    #[error("the enrolment transcript cannot be encoded: {0}")]
    Encoding(String),
    /// The signature does not verify under the enrolled key over this transcript.
    #[error(
        "device.possession_signature is not a signature by device.signature_public_key over this enrolment (domain, username, challenge, key and display name)"
    )]
    BadSignature,
    /// The signer could not sign.
    #[error("the device key could not sign the enrolment: {0:?}")]
    Signer(SignerError),
}

impl EnrolmentTranscript<'_> {
    /// The bytes that are signed: the TLS-encoded `SignContent` (see the module
    /// documentation).
    pub fn to_be_signed(&self) -> Result<Vec<u8>, PossessionError> {
        let encoding = |error: tls_codec::Error| PossessionError::Encoding(format!("{error:?}"));
        let mut content = Vec::new();
        for field in [
            self.domain.as_str().as_bytes(),
            self.username.as_str().as_bytes(),
            self.challenge,
            self.signature_public_key,
            self.display_name.as_bytes(),
        ] {
            content.extend(VLByteSlice(field).tls_serialize_bytes().map_err(encoding)?);
        }
        let mut sign_content = VLByteSlice(ENROLMENT_LABEL)
            .tls_serialize_bytes()
            .map_err(encoding)?;
        sign_content.extend(
            VLByteSlice(&content)
                .tls_serialize_bytes()
                .map_err(encoding)?,
        );
        Ok(sign_content)
    }

    /// The device's proof: its signature over [`Self::to_be_signed`].
    pub fn sign(&self, signer: &impl Signer) -> Result<Vec<u8>, PossessionError> {
        signer
            .sign(&self.to_be_signed()?)
            .map_err(PossessionError::Signer)
    }

    /// Checks that `signature` is the enrolled key's signature over this
    /// transcript.
    pub fn verify(&self, signature: &[u8]) -> Result<(), PossessionError> {
        let signed = self.to_be_signed()?;
        verification_crypto()
            .verify_signature(
                SignatureScheme::ED25519,
                &signed,
                self.signature_public_key,
                signature,
            )
            .map_err(|_| PossessionError::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openmls_basic_credential::SignatureKeyPair;

    /// A fixed Ed25519 key pair (RFC 8032 §7.1, test 1), so signatures are fixed too.
    fn fixed_signer() -> SignatureKeyPair {
        let private = hex_bytes("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60");
        let public = hex_bytes("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a");
        SignatureKeyPair::from_raw(SignatureScheme::ED25519, private, public)
    }

    fn hex_bytes(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|at| u8::from_str_radix(&text[at..at + 2], 16).expect("hex"))
            .collect()
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|byte| format!("{byte:02x}")).collect()
    }

    struct Owned {
        domain: Domain,
        username: Username,
        challenge: Vec<u8>,
        key: Vec<u8>,
        display_name: String,
    }

    impl Owned {
        fn example() -> Owned {
            Owned {
                domain: "a.example".parse().unwrap(),
                username: "alice".parse().unwrap(),
                challenge: vec![1, 2, 3],
                key: fixed_signer().to_public_vec(),
                display_name: "laptop".to_owned(),
            }
        }

        fn transcript(&self) -> EnrolmentTranscript<'_> {
            EnrolmentTranscript {
                domain: &self.domain,
                username: &self.username,
                challenge: &self.challenge,
                signature_public_key: &self.key,
                display_name: &self.display_name,
            }
        }
    }

    #[test]
    fn the_encoding_is_stable() {
        let example = Owned::example();
        let encoded = example.transcript().to_be_signed().unwrap();
        // label<V>: 26 bytes; content<V>: 1+9, 1+5, 1+3, 1+32, 1+6 = 60 bytes.
        let expected = [
            "1a",
            &hex(b"MLS 1.0 conclave enrolment"),
            "3c",
            "09",
            &hex(b"a.example"),
            "05",
            &hex(b"alice"),
            "03010203",
            "20d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
            "06",
            &hex(b"laptop"),
        ]
        .concat();
        assert_eq!(hex(&encoded), expected);
        // Ed25519 is deterministic: the proof of this transcript by this key, the
        // same as an independent implementation (Python's `cryptography`) computes.
        let signature = example.transcript().sign(&fixed_signer()).unwrap();
        assert_eq!(
            hex(&signature),
            "9ef9acb22f6c48aa391a27214965878aaa820f7146057a354e73b1c67b4d0b9a9ae7b2742f0097c5f234a8958c3b6430a4e80a84a2fad3d147fa0519ac7ec101"
        );
    }

    #[test]
    fn long_fields_take_two_byte_lengths() {
        let mut example = Owned::example();
        example.display_name = "x".repeat(64);
        let encoded = example.transcript().to_be_signed().unwrap();
        // 64 does not fit the one-byte form (up to 63): 0x40 0x40.
        let name_at = encoded.len() - 66;
        assert_eq!(&encoded[name_at..name_at + 2], &[0x40, 0x40]);
    }

    /// Changes one part of a transcript (given another key pair to use).
    type Change = fn(&mut Owned, &SignatureKeyPair);

    #[test]
    fn a_proof_holds_for_its_own_transcript_only() {
        let example = Owned::example();
        let signature = example.transcript().sign(&fixed_signer()).unwrap();
        assert_eq!(example.transcript().verify(&signature), Ok(()));

        let other_signer =
            SignatureKeyPair::new(SignatureScheme::ED25519).expect("Ed25519 key generation");
        let changes: [(&str, Change); 6] = [
            ("another domain", |owned, _| {
                owned.domain = "b.example".parse().unwrap()
            }),
            ("another user", |owned, _| {
                owned.username = "mallory".parse().unwrap()
            }),
            ("another challenge", |owned, _| {
                owned.challenge = vec![1, 2, 4]
            }),
            ("another key", |owned, signer| {
                owned.key = signer.to_public_vec()
            }),
            ("another display name", |owned, _| {
                owned.display_name = "phone".to_owned()
            }),
            ("fields shifted across boundaries", |owned, _| {
                owned.username = "alic".parse().unwrap();
                owned.challenge = [b"e".as_slice(), &[1, 2, 3]].concat();
            }),
        ];
        for (case, change) in changes {
            let mut changed = Owned::example();
            change(&mut changed, &other_signer);
            assert_eq!(
                changed.transcript().verify(&signature),
                Err(PossessionError::BadSignature),
                "{case}"
            );
        }
        // Someone else's key, signed by another key: the squatter's case.
        let mut squatted = Owned::example();
        let forged = squatted.transcript().sign(&other_signer).unwrap();
        assert_eq!(
            squatted.transcript().verify(&forged),
            Err(PossessionError::BadSignature)
        );
        squatted.challenge.clear();
        assert_eq!(
            squatted.transcript().verify(&[]),
            Err(PossessionError::BadSignature)
        );
    }
}
