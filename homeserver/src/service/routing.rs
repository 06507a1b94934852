//! Where a device's group request goes. A group hosted here is handled by the hub
//! (`groups`). For a group hosted by another domain this homeserver is a
//! follower: it relays the submission to the group's hub with SubmitToHub and
//! hands the hub's verdict back to the device, so a device talks to its own
//! homeserver only, whichever domain hosts the group.

use super::Context;
use super::accounts::AuthenticatedDevice;
use super::follower;
use super::groups::{self, Accepted, GroupError, NewCommit, NewMessage, NewProposal};
use super::idempotency;
use crate::rules::ids::{Epoch, GroupId, Seq};
use crate::store;
use conclave_core::ids::Domain;
use conclave_federation::client::{CallError, RefusalKind};
use conclave_proto::federation::v1 as proto;
use proto::submit_to_hub_request::Submission as Relayed;

/// A device's submission to a group.
pub(crate) enum GroupSubmission {
    Commit(NewCommit),
    Proposal(NewProposal),
    Message(NewMessage),
}

impl GroupSubmission {
    fn group_id(&self) -> &GroupId {
        match self {
            GroupSubmission::Commit(commit) => &commit.group_id,
            GroupSubmission::Proposal(proposal) => &proposal.group_id,
            GroupSubmission::Message(message) => &message.group_id,
        }
    }

    fn idempotency_key(&self) -> &[u8] {
        match self {
            GroupSubmission::Commit(commit) => &commit.idempotency_key,
            GroupSubmission::Proposal(proposal) => &proposal.idempotency_key,
            GroupSubmission::Message(message) => &message.idempotency_key,
        }
    }
}

/// Applies the submission here if the group is hosted here, else relays it to
/// the group's hub.
pub(crate) async fn submit(
    context: &Context,
    device: &AuthenticatedDevice,
    submission: GroupSubmission,
) -> Result<Accepted, GroupError> {
    let submission = match submission {
        GroupSubmission::Message(message) => return send_message(context, device, message).await,
        other => other,
    };
    if let Some(hub) = hub_of(context, submission.group_id()).await? {
        return relay(context, device, &hub, submission).await;
    }
    let sender = &device.identity;
    match submission {
        GroupSubmission::Commit(commit) => groups::submit_commit(context, sender, commit).await,
        GroupSubmission::Proposal(proposal) => {
            groups::submit_proposal(context, sender, proposal).await
        }
        GroupSubmission::Message(message) => groups::send_message(context, sender, message).await,
    }
}

/// An application message goes to this hub's batch first, without looking the
/// group up before: the batch finds a group hosted here under its lock anyway,
/// and messages are the hot path (one read of the database fewer each). Only
/// a group not hosted here is looked up then, to relay the message to its hub.
async fn send_message(
    context: &Context,
    device: &AuthenticatedDevice,
    message: NewMessage,
) -> Result<Accepted, GroupError> {
    // Kept for the relay: a copy of a message's bytes costs less than a read.
    let relayed = message.clone();
    match groups::send_message(context, &device.identity, message).await {
        Err(GroupError::UnknownGroup(group_id)) => match hub_of(context, &group_id).await? {
            Some(hub) => relay(context, device, &hub, GroupSubmission::Message(relayed)).await,
            None => Err(GroupError::UnknownGroup(group_id)),
        },
        outcome => outcome,
    }
}

/// The newest GroupInfo of a group the device's user is a member of, from the
/// group's hub.
pub(crate) async fn group_info(
    context: &Context,
    device: &AuthenticatedDevice,
    mls_group_id: &GroupId,
) -> Result<(Vec<u8>, Vec<u8>, Epoch), GroupError> {
    let Some(hub) = hub_of(context, mls_group_id).await? else {
        return groups::group_info(context, device.user_id(), mls_group_id).await;
    };
    let federation = federation_to(context, &hub)?;
    let answer = federation
        .fetch_group_info(&hub, &device.identity, mls_group_id.as_bytes().to_vec())
        .await
        .map_err(|error| hub_error(&hub, mls_group_id, error))?;
    Ok((
        answer.group_info,
        answer.ratchet_tree,
        Epoch::new(answer.epoch),
    ))
}

/// The hub's domain if the group is a follower's copy; `None` if it is hosted
/// here or unknown (the hub path then answers as for any unknown group).
async fn hub_of(context: &Context, mls_group_id: &GroupId) -> Result<Option<Domain>, GroupError> {
    if mls_group_id.is_empty() {
        return Err(GroupError::MissingField("group_id"));
    }
    let header = store::find_group_header(&context.store, mls_group_id).await?;
    let Some(hub) = header.and_then(|header| header.hub_domain) else {
        return Ok(None);
    };
    hub.parse().map(Some).map_err(|_| {
        GroupError::Internal(super::InternalError::Corrupt(format!(
            "group {mls_group_id} names an invalid hub domain {hub:?}"
        )))
    })
}

fn federation_to<'a>(
    context: &'a Context,
    hub: &Domain,
) -> Result<&'a conclave_federation::client::FederationClient, GroupError> {
    context
        .federation
        .as_deref()
        .filter(|federation| federation.is_peer(hub))
        .ok_or_else(|| GroupError::HubNotAPeer {
            hub: hub.to_string(),
        })
}

async fn relay(
    context: &Context,
    device: &AuthenticatedDevice,
    hub: &Domain,
    submission: GroupSubmission,
) -> Result<Accepted, GroupError> {
    // The same key rules as for local submissions, checked before the call.
    idempotency::check_key(submission.idempotency_key())?;
    let federation = federation_to(context, hub)?;
    let mls_group_id = submission.group_id().clone();
    let (idempotency_key, relayed) = match submission {
        GroupSubmission::Commit(commit) => (
            commit.idempotency_key,
            Relayed::Commit(proto::CommitBundle {
                commit: commit.commit,
                welcome: commit.welcome,
                group_info: commit.group_info,
            }),
        ),
        GroupSubmission::Proposal(proposal) => (
            proposal.idempotency_key,
            Relayed::Proposal(proposal.proposal),
        ),
        GroupSubmission::Message(message) => (
            message.idempotency_key,
            Relayed::ApplicationMessage(message.message),
        ),
    };
    let answer = federation
        .submit_to_hub(
            hub,
            proto::SubmitToHubRequest {
                sender: device.identity.to_string(),
                idempotency_key,
                group_id: mls_group_id.as_bytes().to_vec(),
                submission: Some(relayed),
            },
        )
        .await
        .map_err(|error| hub_error(hub, &mls_group_id, error))?;
    match answer.outcome {
        Some(proto::submit_to_hub_response::Outcome::Accepted(accepted)) => Ok(Accepted {
            seq: Seq::new(accepted.seq),
            epoch: Epoch::new(accepted.epoch),
        }),
        Some(proto::submit_to_hub_response::Outcome::Rejected(rejected)) => {
            // The client API promises a commit that lost its epoch the winner's
            // position, to fetch it from here: have it here first.
            if let Some(conflict) = &rejected.commit_conflict
                && let Err(error) = follower::catch_up(
                    context,
                    hub,
                    &mls_group_id,
                    Seq::new(conflict.winning_commit_seq),
                )
                .await
            {
                tracing::warn!(hub_domain = %hub, group = %mls_group_id, %error, "could not fetch the commit that won the epoch from the hub");
            }
            Err(GroupError::RejectedByHub(rejected))
        }
        None => Err(GroupError::HubUnavailable {
            hub: hub.to_string(),
            reason: "it answered with neither a result nor a refusal".to_owned(),
        }),
    }
}

/// A failed call to the hub, as the device should see it: a group the hub does
/// not know is unknown; the hub's rate limit is this homeserver's; anything else
/// is the hub being unavailable (the device retries with the same idempotency
/// key).
fn hub_error(hub: &Domain, mls_group_id: &GroupId, error: CallError) -> GroupError {
    match error {
        CallError::Refused {
            kind: RefusalKind::NotFound,
            ..
        } => GroupError::UnknownGroup(mls_group_id.clone()),
        CallError::Refused {
            kind: RefusalKind::ResourceExhausted,
            message,
            ..
        } => GroupError::HubRateLimited {
            hub: hub.to_string(),
            reason: message,
        },
        error => GroupError::HubUnavailable {
            hub: hub.to_string(),
            reason: error.to_string(),
        },
    }
}
