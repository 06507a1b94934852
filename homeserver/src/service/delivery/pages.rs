//! Reading one page of a device's events: its inbox first, then each group's
//! log inside the window the device may read.

use super::super::Context;
use super::{Delivery, DeliveryError, Positions};
use crate::rules::delivery::unread_window;
use crate::rules::ids::{GroupId, GroupKey};
use crate::store::{self, EventKind, Membership, StoreError};
use std::collections::HashMap;
use std::sync::Arc;

/// Reads up to `limit` events after the positions, inbox first (a Welcome must be
/// processed before the group's events make sense), and advances the positions.
pub(super) async fn read_page(
    context: &Context,
    device_id: &str,
    positions: &mut Positions,
    memberships: &[Membership],
    group_ids: &HashMap<GroupKey, Arc<GroupId>>,
    limit: u64,
) -> Result<Vec<Delivery>, DeliveryError> {
    let connection = &context.store;
    let mut page = Vec::new();
    for event in store::inbox_events_after(connection, device_id, positions.inbox, limit).await? {
        positions.inbox = event.seq;
        let group_id = store::find_group_headers(connection, &[event.group])
            .await?
            .pop()
            .map(|group| group.group_id)
            .ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "inbox entry {} of {device_id} names a group that does not exist",
                    event.seq
                ))
            })?;
        page.push(Delivery::Inbox { group_id, event });
    }
    for member in memberships {
        let remaining = limit.saturating_sub(page.len() as u64);
        if remaining == 0 {
            break;
        }
        let position = positions
            .groups
            .entry(member.group)
            .or_insert(member.acked_seq);
        let Some(window) = unread_window(*position, member.joined_after_seq, member.removed_at_seq)
        else {
            continue;
        };
        let events = store::events_after(
            connection,
            member.group,
            window.after,
            window.up_to,
            remaining,
        )
        .await?;
        let Some(group_id) = group_ids.get(&member.group) else {
            continue;
        };
        for event in events {
            *position = event.seq;
            let is_commit = event.kind == EventKind::Commit;
            page.push(Delivery::Group {
                group_id: group_id.clone(),
                event,
            });
            // A commit may remove this device: `memberships` was read before it
            // and does not say so, so this group's events stop here until the
            // caller reads the memberships again (the next Fetch, or the stream's
            // reload after a commit). Otherwise events after the removal leak.
            if is_commit {
                break;
            }
        }
    }
    Ok(page)
}

/// The device's memberships and the MLS ids of their groups.
pub(super) async fn load_memberships(
    context: &Context,
    device_id: &str,
) -> Result<(Vec<Membership>, HashMap<GroupKey, Arc<GroupId>>), DeliveryError> {
    let connection = &context.store;
    let memberships = store::memberships_of_device(connection, device_id).await?;
    let keys: Vec<GroupKey> = memberships.iter().map(|member| member.group).collect();
    let headers = store::find_group_headers(connection, &keys).await?;
    let group_ids = headers
        .into_iter()
        .map(|header| (header.key, Arc::new(header.group_id)))
        .collect();
    Ok((memberships, group_ids))
}
