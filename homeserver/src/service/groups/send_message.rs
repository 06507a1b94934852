//! SendMessage: an application message from a current member. Costs a constant
//! number of writes whatever the group's size (the log entry and the
//! idempotency record, plus one update of the group's `last_seq` per batch);
//! the group's (large) state is neither read nor written. Concurrent messages
//! share a transaction (`message_batch`).

use super::super::Context;
use super::super::idempotency::Submission;
use super::log::message_digest;
use super::message_batch::{BatchEnvironment, PendingMessage};
use super::{Accepted, GroupError};
use crate::rules::hub::PastEpochWindow;
use crate::rules::ids::GroupId;
use conclave_core::ids::CredentialIdentity;

#[derive(Clone)]
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
    let request_hash = Submission::new(
        &identity,
        &request.idempotency_key,
        "message",
        &[request.group_id.as_bytes(), &request.message],
    )?
    .request_hash;
    let pending = PendingMessage {
        identity,
        idempotency_key: request.idempotency_key,
        request_hash,
        // Here, in the caller's task, rather than in the batch's.
        digest: message_digest(&request.message),
        message: request.message,
        // Read here, in the request's span: the batch's worker runs outside it.
        trace_parent: context.trace_parent_for_outbox(),
    };
    let environment = || BatchEnvironment {
        store: context.store.clone(),
        notifier: context.notifier.clone(),
        metrics: context.metrics.clone(),
        clock: context.clock.clone(),
        past_epoch_window: PastEpochWindow(context.config.groups.past_epoch_window),
        federation: context.federation.is_some(),
    };
    context
        .message_batcher
        .submit(environment, request.group_id, pending)
        .await
}
