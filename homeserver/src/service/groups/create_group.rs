//! CreateGroup: registers a group whose only member is the calling device, from
//! its epoch-0 GroupInfo and ratchet tree.

use super::super::accounts::AuthenticatedDevice;
use super::super::idempotency::{Outcome, Submission};
use super::super::{Context, InternalError};
use super::GroupError;
use crate::rules::hub::{HubGroup, HubRejection};
use crate::rules::ids::{Epoch, GroupId, Seq};
use crate::store::{self, NewMember};
use conclave_core::mls::CipherSuite;

pub(crate) struct NewGroup {
    pub(crate) idempotency_key: Vec<u8>,
    pub(crate) group_info: Vec<u8>,
    pub(crate) ratchet_tree: Vec<u8>,
}

pub(crate) async fn create(
    context: &Context,
    device: &AuthenticatedDevice,
    request: NewGroup,
) -> Result<(GroupId, Epoch), GroupError> {
    let identity = device.identity.to_string();
    let submission = Submission::new(
        &identity,
        &request.idempotency_key,
        "create",
        &[&request.group_info, &request.ratchet_tree],
    )?;
    if let Some(created) = previous_creation(context, &submission).await? {
        return Ok(created);
    }
    let hub_group = HubGroup::create(&request.group_info, &request.ratchet_tree, &device.identity)?;
    let suite = CipherSuite::from_id(hub_group.cipher_suite())
        .map_err(|unknown| HubRejection::InvalidCreation(format!("the group uses {unknown}")))?;
    context
        .config
        .groups
        .suite_policy()
        .check_new_group(&context.domain.to_string(), suite)?;
    let group_id = GroupId::new(hub_group.group_id());
    let epoch = Epoch::new(hub_group.epoch());
    let now_ms = context.now_ms();
    let transaction = context.store.begin().await?;
    let group = store::insert_group(
        &transaction,
        &group_id,
        epoch,
        hub_group.to_state(),
        &identity,
        now_ms,
    )
    .await?;
    let Some(group) = group else {
        drop(transaction);
        // A retry that raced its original finds the original's result here.
        return match previous_creation(context, &submission).await? {
            Some(created) => Ok(created),
            None => Err(GroupError::GroupExists(group_id)),
        };
    };
    let member = NewMember {
        identity: &identity,
        user_id: &device.identity.user_id().to_string(),
        device_id: device.identity.device_id().as_str(),
        joined_after_seq: Seq::ZERO,
        remote_domain: None,
    };
    store::upsert_member(&transaction, group.key, member).await?;
    let outcome = Outcome {
        group: group.key,
        seq: Seq::ZERO,
        epoch,
    };
    submission.record(&transaction, outcome, now_ms).await?;
    transaction.commit().await?;
    tracing::info!(group = %group_id, creator = %identity, "group created");
    Ok((group_id, epoch))
}

/// The group and epoch an earlier identical CreateGroup produced.
async fn previous_creation(
    context: &Context,
    submission: &Submission<'_>,
) -> Result<Option<(GroupId, Epoch)>, GroupError> {
    let Some(previous) = submission.previous_outcome(&context.store).await? else {
        return Ok(None);
    };
    let outcome = previous?;
    let group = store::find_group_headers(&context.store, &[outcome.group])
        .await?
        .pop()
        .ok_or_else(|| {
            GroupError::Internal(InternalError::Corrupt(
                "an idempotency record names a group that does not exist".to_owned(),
            ))
        })?;
    Ok(Some((group.group_id, outcome.epoch)))
}
