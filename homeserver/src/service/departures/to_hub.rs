//! Telling hubs of other domains that a device of this domain departed: the
//! queued announcements for one hub, sent by that peer's outbox task (so on the
//! one replica holding its lease, with the outbox's backoff after a failure).
//! A row goes once the hub answered; a hub's refusal is for good (the group or
//! the membership is gone, or the hub disagrees about the device's domain),
//! logged and forgotten, since sending it again would be refused again.

use super::super::Context;
use crate::store::{self, StoreError};
use conclave_core::ids::Domain;
use conclave_federation::client::{CallError, FederationClient, RefusalKind};

/// Announcements sent per pass.
const ANNOUNCEMENTS_PER_PASS: u64 = 64;

/// Why a pass stopped: the hub could not be told (retry later), or the database.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AnnounceError {
    #[error(transparent)]
    Call(#[from] CallError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Sends the departures queued for `hub` (up to a pass's worth); returns how
/// many were answered (accepted or refused for good).
pub(crate) async fn announce_pending(
    context: &Context,
    federation: &FederationClient,
    hub: &Domain,
) -> Result<usize, AnnounceError> {
    let pending =
        store::pending_departures(&context.store, hub.as_str(), ANNOUNCEMENTS_PER_PASS).await?;
    let mut answered = 0;
    for departure in pending {
        let group = store::find_group_headers(&context.store, &[departure.group])
            .await?
            .pop();
        let Some(group) = group else {
            store::forget_departure(&context.store, departure.group, &departure.identity).await?;
            continue;
        };
        let answer = federation
            .announce_departure(
                hub,
                group.group_id.as_bytes().to_vec(),
                &departure.identity,
                &departure.reason,
            )
            .await;
        match answer {
            Ok(answer) => {
                tracing::info!(hub_domain = %hub, group = %group.group_id, departed = %departure.identity, seq = answer.seq, "the hub has the departure notice");
            }
            // Refusals of this announcement (PERMISSION_DENIED is not among
            // them: it means the hub does not accept this homeserver now, a
            // configuration matter that retrying outlives).
            Err(CallError::Refused {
                kind:
                    kind @ (RefusalKind::NotFound
                    | RefusalKind::InvalidArgument
                    | RefusalKind::FailedPrecondition),
                message,
                ..
            }) => {
                tracing::warn!(hub_domain = %hub, group = %group.group_id, departed = %departure.identity, ?kind, reason = %message, "the hub refused a departure; forgotten");
            }
            Err(error @ CallError::ForeignRequester { .. }) => {
                tracing::error!(hub_domain = %hub, %error, "a queued departure names another domain's device; forgotten");
            }
            Err(error) => return Err(error.into()),
        }
        store::forget_departure(&context.store, departure.group, &departure.identity).await?;
        answered += 1;
    }
    Ok(answered)
}
