//! Enrolling a device, the steps register and login share: check that the device
//! holds the key it enrols (a live challenge of this domain, signed by that key
//! and not used before), then bind a fresh device id and bearer token to the key
//! and mark the challenge used, in the caller's transaction.

use super::{AccountError, Enrolment, Session, identity_of};
use crate::rules::enrolment::{
    CHALLENGE_KEY_LENGTH, ChallengeKey, LiveChallenge, PossessionProof, PossessionRefusal,
    check_possession,
};
use crate::service::{Context, secrets};
use crate::store::{self, NewDevice, StoreError, UserKey};
use conclave_core::ids::{DeviceId, Username};

/// The domain's challenge secret: loaded (or made) once per process.
pub(super) async fn challenge_key(context: &Context) -> Result<&ChallengeKey, StoreError> {
    context
        .challenge_key
        .get_or_try_init(|| async {
            let candidate = secrets::random_bytes::<CHALLENGE_KEY_LENGTH>();
            let stored =
                store::enrolment_challenge_secret(&context.store, &candidate, context.now_ms())
                    .await?;
            ChallengeKey::from_bytes(&stored).ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "the enrolment challenge secret is {} bytes, not {CHALLENGE_KEY_LENGTH}",
                    stored.len()
                ))
            })
        })
        .await
}

/// Checks the device's proof of possession for `username` of this domain, as
/// sent (the display name before normalisation): cheap and without writing, so
/// register and login run it before the password hash. Whether the challenge
/// was used is read here and decided again by [`enrol_device`]'s write.
pub(super) async fn check_proof(
    context: &Context,
    username: &Username,
    device: &Enrolment,
) -> Result<LiveChallenge, AccountError> {
    let key = challenge_key(context).await?;
    let proof = PossessionProof {
        challenge: &device.challenge,
        signature: &device.possession_signature,
        signature_public_key: &device.signature_public_key,
        display_name: &device.display_name,
    };
    let live = check_possession(key, context.now_ms(), &context.domain, username, proof)?;
    if store::enrolment_challenge_used(&context.store, &live.digest).await? {
        return Err(PossessionRefusal::AlreadyUsed.into());
    }
    Ok(live)
}

/// Enrols a checked device of `user` in `transaction`, using up its challenge;
/// fails if the challenge was used meanwhile or the signature key is bound to
/// another device already.
pub(super) async fn enrol_device(
    context: &Context,
    transaction: &store::Transaction,
    user: UserKey,
    username: &Username,
    device: Enrolment,
    challenge: &LiveChallenge,
) -> Result<Session, AccountError> {
    // First, so a concurrent enrolment with the same challenge loses here,
    // whatever else it would have failed on.
    if !store::record_enrolment_challenge_use(
        transaction,
        &challenge.digest,
        challenge.expires_at_ms,
    )
    .await?
    {
        return Err(PossessionRefusal::AlreadyUsed.into());
    }
    if store::signature_key_in_use(transaction, &device.signature_public_key).await? {
        return Err(AccountError::SignatureKeyTaken);
    }
    let device_id = DeviceId::from_random_bytes(secrets::random_bytes_8());
    let access_token = secrets::new_token();
    let inserted = store::insert_device(
        transaction,
        NewDevice {
            device_id: &device_id,
            user,
            display_name: &device.display_name,
            signature_public_key: &device.signature_public_key,
            access_token_hash: &secrets::hash_token(&access_token),
            now_ms: context.now_ms(),
        },
    )
    .await?;
    if !inserted {
        // The key check above ran in this transaction, but a concurrent login may
        // have committed the same key since; the unique key caught it. (A device id
        // collision, 1 in 2^64, lands here too and the client simply retries.)
        return Err(AccountError::SignatureKeyTaken);
    }
    Ok(Session {
        identity: identity_of(context, username, &device_id),
        access_token,
    })
}
