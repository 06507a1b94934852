//! Departures: a device of this domain was deleted (revoked or removed, logged
//! out, its account deactivated) and must leave every group it was in. Its
//! homeserver cannot commit for it (no member can commit for another without
//! being asked), so each group's hub writes a departure notice into the group's
//! log, and the remaining members' clients commit the removal of its leaf when
//! they read it; the one-commit-per-epoch rule settles their race, and the
//! device's member rows end when that commit lands (as for any removal).
//!
//! Why not the hub as an RFC 9420 external sender proposing the Remove: a group
//! accepts external proposals only from senders in its `external_senders`
//! group-context extension, which groups made before it lack (changing it takes
//! a commit by a member), and a member would still have to commit the proposal.
//!
//! For a group hosted here the notice is written at once; for a group hosted
//! elsewhere the departure is queued (`pending_departures`) in the same breath
//! and the peer's outbox task tells the hub (AnnounceDeparture) until it
//! answers, so a hub that is down hears of it when it is back.
//!
//! # Layout
//! - this file: `announce`, what account use cases call after deleting devices.
//! - `notice`: the hub writes a notice (for its own devices, and for a peer's).
//! - `to_hub`: the queued announcements, sent by the outbox task of each hub.

mod notice;
mod to_hub;

pub(crate) use notice::{AnnouncementError, Notice, accept_announcement};
pub(crate) use to_hub::{AnnounceError, announce_pending};

use super::{Context, InternalError};
use crate::notify::Topic;
use crate::rules::departure::reason_text;
use crate::store;
use conclave_core::ids::CredentialIdentity;
use std::collections::BTreeSet;

/// Gives every group that `departed` devices (of this domain, already deleted)
/// are current members of a departure notice with `reason`: written now for the
/// groups hosted here, queued for their hubs' for the others. Returns the number
/// of groups noticed. A group that had a notice for the device already keeps
/// its one notice (and counts).
pub(crate) async fn announce(
    context: &Context,
    departed: &[CredentialIdentity],
    reason: &str,
) -> Result<u32, InternalError> {
    let reason = reason_text(reason);
    let mut noticed = BTreeSet::new();
    let mut queued = false;
    for device in departed {
        let identity = device.to_string();
        let keys = store::current_groups_of_local_device(&context.store, &identity).await?;
        if keys.is_empty() {
            continue;
        }
        let groups_before = noticed.len();
        for group in store::find_group_headers(&context.store, &keys).await? {
            match &group.hub_domain {
                None => match notice::post_notice(context, &group.group_id, device, &reason).await?
                {
                    Notice::Written(_) | Notice::AlreadyThere(_) => {
                        noticed.insert(group.key);
                    }
                    // Removed, or the group gone, since the lookup.
                    Notice::NotAMember | Notice::UnknownGroup => {}
                },
                Some(hub) => {
                    store::queue_departure(
                        &context.store,
                        group.key,
                        &identity,
                        hub,
                        &reason,
                        context.now_ms(),
                    )
                    .await?;
                    queued = true;
                    noticed.insert(group.key);
                }
            }
        }
        let groups = noticed.len() - groups_before;
        tracing::info!(device = %device, groups, "announced a departure");
    }
    if queued {
        context.notifier.publish(&Topic::Outbox);
    }
    Ok(u32::try_from(noticed.len()).unwrap_or(u32::MAX))
}
