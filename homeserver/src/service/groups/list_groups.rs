//! ListGroups: the calling device's current groups, with its position in each.

use super::super::Context;
use super::super::accounts::AuthenticatedDevice;
use super::GroupError;
use crate::rules::ids::{Epoch, GroupId, GroupKey, Seq};
use crate::store;

/// One of the caller's groups.
#[derive(Debug)]
pub(crate) struct GroupSummary {
    pub(crate) group_id: GroupId,
    pub(crate) epoch: Epoch,
    pub(crate) member_count: u64,
    pub(crate) last_seq: Seq,
    pub(crate) acked_seq: Seq,
}

pub(crate) async fn list(
    context: &Context,
    device: &AuthenticatedDevice,
) -> Result<Vec<GroupSummary>, GroupError> {
    let memberships: Vec<_> =
        store::memberships_of_device(&context.store, device.device_id().as_str())
            .await?
            .into_iter()
            .filter(|member| member.is_current())
            .collect();
    let keys: Vec<GroupKey> = memberships.iter().map(|member| member.group).collect();
    let headers = store::find_group_headers(&context.store, &keys).await?;
    let mut summaries = Vec::with_capacity(headers.len());
    for header in headers {
        let acked_seq = memberships
            .iter()
            .find(|member| member.group == header.key)
            .map_or(Seq::ZERO, |member| member.acked_seq);
        let member_count = match header.hub_member_count {
            // A follower's copy: the hub knows the whole membership.
            Some(count) => count,
            None => store::member_count(&context.store, header.key).await?,
        };
        summaries.push(GroupSummary {
            member_count,
            group_id: header.group_id,
            epoch: header.epoch,
            last_seq: header.last_seq,
            acked_seq,
        });
    }
    Ok(summaries)
}
