//! Reading one page of a device's events: its inbox first, then its groups'
//! logs inside the windows the device may read, shared fairly among the groups.
//!
//! # Fairness
//! The groups with unread events share the page: each gets up to an equal
//! share of what is left, and what a group leaves unused goes to those that
//! filled theirs, round after round, until the page is full or every group is
//! read to its end (or to its first commit, where its events stop for this
//! page). The first group of a round turns from page to page. So a device in
//! many groups gets a quiet group's event in its next page, however busy the
//! others are, and one busy group still fills a page alone.

use super::super::Context;
use super::{Delivery, DeliveryError, Positions};
use crate::rules::delivery::unread_window;
use crate::rules::ids::{GroupId, GroupKey, Seq};
use crate::store::{self, EventKind, LogEvent, Membership, StoreError};
use std::collections::HashMap;
use std::sync::Arc;

/// Where group events are read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LogSource {
    /// The database, each time (Fetch).
    Database,
    /// The shared tail cache (`tails`), exact for a stream that is woken for
    /// each new event.
    Tails,
}

/// Reads up to `limit` events after the positions, inbox first (a Welcome must be
/// processed before the group's events make sense), and advances the positions.
/// The inbox is read only if it may hold more (`positions.inbox_pending`).
pub(super) async fn read_page(
    context: &Context,
    source: LogSource,
    device_id: &str,
    positions: &mut Positions,
    memberships: &[Membership],
    group_ids: &HashMap<GroupKey, Arc<GroupId>>,
    limit: u64,
) -> Result<Vec<Delivery>, DeliveryError> {
    let connection = &context.store;
    let mut page = Vec::new();
    if positions.inbox_pending {
        let events =
            store::inbox_events_after(connection, device_id, positions.inbox, limit).await?;
        // A full page may have more behind it.
        positions.inbox_pending = events.len() as u64 == limit;
        for mut event in events {
            positions.inbox = event.seq;
            if let Some(state) = event.tree_state.take() {
                event.ratchet_tree = context
                    .welcome_trees
                    .ratchet_tree(event.group, event.commit_seq, state)
                    .await?;
            }
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
    }
    // The groups that may have more for this page, the first one turning.
    let count = memberships.len();
    let start = if count == 0 {
        0
    } else {
        positions.next_first_group % count
    };
    positions.next_first_group = positions.next_first_group.wrapping_add(1);
    let mut open: Vec<&Membership> = memberships[start..]
        .iter()
        .chain(&memberships[..start])
        .filter(|member| group_ids.contains_key(&member.group))
        .collect();
    let mut remaining = limit.saturating_sub(page.len() as u64);
    while remaining > 0 && !open.is_empty() {
        let share = remaining.div_ceil(open.len() as u64);
        let mut hungry = Vec::new();
        for member in open {
            if remaining == 0 {
                break;
            }
            let asked = share.min(remaining);
            let position = positions
                .groups
                .entry(member.group)
                .or_insert(member.acked_seq);
            let Some(window) =
                unread_window(*position, member.joined_after_seq, member.removed_at_seq)
            else {
                continue;
            };
            let events = read_group(
                context,
                source,
                member.group,
                window.after,
                window.up_to,
                asked,
            )
            .await?;
            let Some(group_id) = group_ids.get(&member.group) else {
                continue;
            };
            let read = events.len() as u64;
            let mut stopped = false;
            for event in events {
                *position = event.seq;
                remaining -= 1;
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
                    stopped = true;
                    break;
                }
            }
            if !stopped && read == asked {
                hungry.push(member);
            }
        }
        open = hungry;
    }
    Ok(page)
}

async fn read_group(
    context: &Context,
    source: LogSource,
    group: GroupKey,
    after: Seq,
    up_to: Option<Seq>,
    limit: u64,
) -> Result<Vec<LogEvent>, StoreError> {
    match source {
        LogSource::Database => {
            store::events_after(&context.store, group, after, up_to, limit).await
        }
        LogSource::Tails => {
            context
                .group_tails
                .events_after(
                    &context.store,
                    context.notifier.as_ref(),
                    group,
                    after,
                    up_to,
                    limit,
                )
                .await
        }
    }
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
