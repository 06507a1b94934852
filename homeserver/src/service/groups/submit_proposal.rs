//! SubmitProposal: a proposal by reference for the current epoch, kept in the
//! group's state until a commit covers it.

use super::super::Context;
use super::super::idempotency::Submission;
use super::log::{LogAppend, append_and_commit, load_state, lock_hosted_group, lost_epoch};
use super::{Accepted, GroupError};
use crate::rules::hub::{HubRejection, check_proposal_room};
use crate::rules::ids::{GroupId, Seq};
use crate::store::{self, EventKind};
use conclave_core::ids::CredentialIdentity;

pub(crate) struct NewProposal {
    pub(crate) idempotency_key: Vec<u8>,
    pub(crate) group_id: GroupId,
    pub(crate) proposal: Vec<u8>,
}

/// Accepts a proposal from `sender`: one of this homeserver's devices, or one a
/// follower domain's homeserver authenticated and relayed.
pub(crate) async fn submit_proposal(
    context: &Context,
    sender: &CredentialIdentity,
    request: NewProposal,
) -> Result<Accepted, GroupError> {
    if request.proposal.is_empty() {
        return Err(GroupError::MissingField("proposal"));
    }
    let identity = sender.to_string();
    let submission = Submission::new(
        &identity,
        &request.idempotency_key,
        "proposal",
        &[request.group_id.as_bytes(), &request.proposal],
    )?;
    let transaction = context.store.begin().await?;
    // The idempotency check comes after the lock: a retry racing its original
    // then waits for it and finds its outcome, instead of being judged on its own.
    let group = lock_hosted_group(&transaction, &request.group_id).await?;
    if let Some(previous) = submission.previous_outcome(&transaction).await? {
        return Ok(previous?.into());
    }
    // The epoch began with the commit that ended the previous one (or with the
    // group, at sequence number 0).
    let epoch_start_seq = match group.epoch.previous() {
        Some(previous_epoch) => store::commit_seq(&transaction, group.key, previous_epoch)
            .await?
            .unwrap_or(Seq::ZERO),
        None => Seq::ZERO,
    };
    let pending = store::count_events_after(
        &transaction,
        group.key,
        EventKind::Proposal,
        epoch_start_seq,
    )
    .await?;
    check_proposal_room(pending)?;
    let mut hub_group = load_state(&group)?;
    match hub_group.add_proposal(sender, &request.proposal) {
        Ok(()) => {}
        // A commit ended the proposal's epoch: the same answer as to a commit
        // that lost its epoch, so the device can fetch the winner.
        Err(HubRejection::StaleEpoch {
            message_epoch,
            current_epoch,
        }) => {
            let lost = "proposal";
            return Err(
                lost_epoch(&transaction, group.key, lost, message_epoch, current_epoch).await?,
            );
        }
        Err(rejection) => return Err(rejection.into()),
    }
    append_and_commit(
        context,
        transaction,
        &submission,
        LogAppend {
            group: group.key,
            state_welcome_seq: group.state_welcome_seq,
            last_seq: group.last_seq,
            group_epoch: group.epoch,
            message_epoch: group.epoch,
            kind: EventKind::Proposal,
            message: &request.proposal,
            new_state: Some(hub_group.to_state()),
        },
    )
    .await
}
