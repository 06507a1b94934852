//! SendMessage: an application message from a current member. Costs a constant
//! number of writes whatever the group's size (the log entry, the group's
//! counter and the idempotency record); the group's (large) state is neither
//! read nor written.

use super::super::Context;
use super::super::idempotency::Submission;
use super::log::{LogAppend, append_and_commit};
use super::{Accepted, GroupError};
use crate::rules::hub::{PastEpochWindow, check_application_message};
use crate::rules::ids::{Epoch, GroupId};
use crate::store::{self, EventKind, Hosting};
use conclave_core::ids::CredentialIdentity;

pub(crate) struct NewMessage {
    pub(crate) idempotency_key: Vec<u8>,
    pub(crate) group_id: GroupId,
    pub(crate) message: Vec<u8>,
}

pub(crate) async fn send_message(
    context: &Context,
    sender: &CredentialIdentity,
    request: NewMessage,
) -> Result<Accepted, GroupError> {
    if request.message.is_empty() {
        return Err(GroupError::MissingField("message"));
    }
    if request.group_id.is_empty() {
        return Err(GroupError::MissingField("group_id"));
    }
    let identity = sender.to_string();
    let submission = Submission::new(
        &identity,
        &request.idempotency_key,
        "message",
        &[request.group_id.as_bytes(), &request.message],
    )?;
    let transaction = context.store.begin().await?;
    let group = store::lock_group_header(&transaction, &request.group_id, Hosting::HostedHere)
        .await?
        .ok_or_else(|| GroupError::UnknownGroup(request.group_id.clone()))?;
    // After the lock, for the reason given in `submit_proposal`.
    if let Some(previous) = submission.previous_outcome(&transaction).await? {
        return Ok(previous?.into());
    }
    let is_member = store::find_member(&transaction, group.key, &identity)
        .await?
        .is_some_and(|member| member.is_current());
    if !is_member {
        return Err(GroupError::NotAMember(request.group_id));
    }
    let message_epoch = check_application_message(
        &request.message,
        group.group_id.as_bytes(),
        group.epoch.get(),
        PastEpochWindow(context.config.groups.past_epoch_window),
    )?;
    append_and_commit(
        context,
        transaction,
        &submission,
        LogAppend {
            group: group.key,
            last_seq: group.last_seq,
            group_epoch: group.epoch,
            message_epoch: Epoch::new(message_epoch),
            kind: EventKind::Application,
            message: &request.message,
            new_state: None,
        },
    )
    .await
}
