//! Beginning an enrolment: a fresh challenge for the device to sign.

use super::AccountError;
use super::enrolment::challenge_key;
use crate::rules::enrolment::{IssuedChallenge, issue_challenge};
use crate::service::{Context, secrets};
use conclave_core::ids::Domain;

/// A challenge, and the domain the device signs with it.
#[derive(Debug)]
pub(crate) struct BegunEnrolment {
    pub(crate) challenge: IssuedChallenge,
    pub(crate) domain: Domain,
}

/// Issues a challenge. Writes nothing: the challenge carries its issue time and
/// its MAC (the first call of a new domain stores the domain's secret once).
pub(crate) async fn begin_enrolment(context: &Context) -> Result<BegunEnrolment, AccountError> {
    let key = challenge_key(context).await?;
    Ok(BegunEnrolment {
        challenge: issue_challenge(key, context.now_ms(), secrets::random_bytes()),
        domain: context.domain.clone(),
    })
}
