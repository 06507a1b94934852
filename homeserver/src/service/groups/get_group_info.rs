//! GetGroupInfo at the hub: the newest GroupInfo and ratchet tree, for devices of
//! member users (of any domain), to rejoin by external commit.

use super::super::Context;
use super::GroupError;
use super::log::load_state;
use crate::rules::ids::{Epoch, GroupId};
use crate::store;
use conclave_core::ids::UserId;

/// (GroupInfo, ratchet tree, epoch).
pub(crate) async fn group_info(
    context: &Context,
    requester: &UserId,
    group_id: &GroupId,
) -> Result<(Vec<u8>, Vec<u8>, Epoch), GroupError> {
    let group = store::find_hosted_group(&context.store, group_id)
        .await?
        .ok_or_else(|| GroupError::UnknownGroup(group_id.clone()))?;
    // Not a member user: answered as an unknown group, so that group ids cannot
    // be probed (the one place "not a member" is NOT_FOUND; see status.proto).
    if !store::user_is_member(&context.store, group.key, &requester.to_string()).await? {
        return Err(GroupError::UnknownGroup(group_id.clone()));
    }
    let hub_group = load_state(&group)?;
    Ok((
        hub_group.group_info(),
        hub_group.ratchet_tree(),
        Epoch::new(hub_group.epoch()),
    ))
}
