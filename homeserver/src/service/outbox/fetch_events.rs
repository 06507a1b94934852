//! FetchEvents at the hub: a follower domain repairing its copy of a group
//! gets the events after a position, within what it is due.

use super::super::{Context, InternalError};
use super::deliver_batch::events_for_follower;
use crate::rules::ids::{GroupId, Seq};
use crate::store::{self, StoreError};
use conclave_core::ids::Domain;
use conclave_proto::federation::v1 as proto;

/// Why a follower's FetchEvents was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FetchEventsError {
    /// Not hosted here, or the asking domain never had members in it: answered
    /// alike, so group ids cannot be probed.
    #[error("group {0} is not hosted here for your domain")]
    UnknownGroup(GroupId),
    /// Events after `after_seq` were pruned.
    #[error(
        "events of group {group} after {after_seq} were pruned; the first kept is {first_kept}"
    )]
    Pruned {
        group: GroupId,
        after_seq: Seq,
        first_kept: Seq,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Internal(#[from] InternalError),
}

/// Events of a hosted group after `after_seq`, for follower domain `peer` to
/// repair its copy: only from the commit that (last) added its devices, and only
/// up to the commit that removed them. Returns the events and the last sequence
/// number the domain is due.
pub(crate) async fn fetch_for_follower(
    context: &Context,
    peer: &Domain,
    mls_group_id: &GroupId,
    after_seq: Seq,
    limit: u32,
) -> Result<(Vec<proto::FederatedEvent>, Seq), FetchEventsError> {
    let connection = &context.store;
    let unknown = || FetchEventsError::UnknownGroup(mls_group_id.clone());
    let group = store::find_group_header(connection, mls_group_id)
        .await?
        .filter(|group| group.hub_domain.is_none())
        .ok_or_else(unknown)?;
    let cursor = store::find_peer_cursor(connection, group.key, peer.as_str())
        .await?
        .ok_or_else(unknown)?;
    let end_seq = cursor.until_seq.unwrap_or(group.last_seq);
    let after_seq = after_seq.max(cursor.joined_after_seq);
    let batch_size = context.config.federation.outbox_batch_size;
    let limit = match u64::from(limit) {
        0 => batch_size,
        limit => limit.min(batch_size),
    };
    let (events, _, _) =
        events_for_follower(context, group.key, peer, after_seq, end_seq, limit).await?;
    if let Some(first) = events.first()
        && first.seq > after_seq.next().get()
    {
        return Err(FetchEventsError::Pruned {
            group: mls_group_id.clone(),
            after_seq,
            first_kept: Seq::new(first.seq),
        });
    }
    if events.is_empty() && after_seq < end_seq {
        return Err(FetchEventsError::Pruned {
            group: mls_group_id.clone(),
            after_seq,
            first_kept: end_seq.next(),
        });
    }
    Ok((events, end_seq))
}
