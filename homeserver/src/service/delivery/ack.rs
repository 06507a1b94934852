//! Ack: moves the device's cursors forward; all acknowledgements of a request
//! are checked before any is applied.

use super::super::Context;
use super::super::accounts::AuthenticatedDevice;
use super::DeliveryError;
use crate::rules::delivery::check_ack;
use crate::rules::ids::{GroupId, Seq};
use crate::store;

/// Acknowledgements of one device.
pub(crate) struct Acks {
    /// (MLS group id, sequence number).
    pub(crate) groups: Vec<(GroupId, Seq)>,
    pub(crate) inbox_seq: Seq,
}

/// Moves the device's cursors forward. All acknowledgements are checked before
/// any is applied.
pub(crate) async fn ack(
    context: &Context,
    device: &AuthenticatedDevice,
    acks: Acks,
) -> Result<(), DeliveryError> {
    let identity = device.identity.to_string();
    let device_id = device.device_id().as_str();
    let transaction = context.store.begin().await?;
    let mut advances = Vec::with_capacity(acks.groups.len());
    for (group_id, seq) in acks.groups {
        let group = store::find_group_header(&transaction, &group_id)
            .await?
            .ok_or_else(|| DeliveryError::UnknownGroup(group_id.clone()))?;
        let member = store::find_member(&transaction, group.key, &identity)
            .await?
            .ok_or_else(|| DeliveryError::NotAMember(group_id.clone()))?;
        let newest = member.removed_at_seq.unwrap_or(group.last_seq);
        check_ack("group sequence number", seq, newest)?;
        advances.push((group.key, seq));
    }
    if acks.inbox_seq > Seq::ZERO {
        let inbox = store::inbox_position(&transaction, device_id).await?;
        check_ack("inbox sequence number", acks.inbox_seq, inbox.last_seq)?;
        store::advance_inbox_cursor(&transaction, device_id, acks.inbox_seq).await?;
    }
    for (group, seq) in advances {
        store::advance_member_cursor(&transaction, group, &identity, seq).await?;
    }
    transaction.commit().await?;
    Ok(())
}
