//! The follower side of a group hosted by another domain: batches of the group's
//! events arrive from its hub and go into this homeserver's copy of the log,
//! once each by `(group, seq)`, so the group's member devices here read them
//! through the same cursors and streams as a local group's.
//!
//! What a batch may do: only the group's hub may send it (the first batch fixes
//! the hub, and a group hosted here takes no events from a peer); a group
//! unknown here, or one with no member devices here any more, is accepted only
//! from a commit that adds devices of this domain; membership changes may name
//! devices of this domain only; every event's MLS bytes must be what the event
//! says (`rules::follower_mls`); a Welcome for a device here must be addressed
//! to a key package of that device that this directory handed to the hub's
//! domain or the committer's. A gap before the batch (this copy lost events,
//! e.g. restored from a backup) is repaired from the hub with FetchEvents first,
//! and the fetched events pass the same checks. Every refusal is logged with
//! the peer's domain and the group.
//!
//! Events arrive as `conclave.federation.v1.FederatedEvent`, the wire type of the
//! federation client, and are checked by `rules::follower_batch`.
//!
//! # Layout
//! - `apply_batch`: DeliverEvents from the hub, in one transaction per batch.
//! - `catch_up`: fetching from the hub what is missing (a gap, a lost race's
//!   winning commit, everything new at start).

mod apply_batch;
mod catch_up;

pub(crate) use apply_batch::apply_batch;
pub(crate) use catch_up::{catch_up, catch_up_on_start};

use super::InternalError;
use crate::rules::follower_batch::{
    CheckedEvent, IncomingEvent, IncomingKind, InvalidBatch, check_batch,
};
use crate::rules::ids::{GroupId, Seq};
use crate::store::StoreError;
use conclave_core::ids::Domain;
use conclave_proto::federation::v1 as proto;

/// Why a batch was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FollowerError {
    /// The batch breaks the protocol.
    #[error(transparent)]
    InvalidBatch(#[from] InvalidBatch),
    /// The sending peer is not the group's hub.
    #[error("group {group} is hosted by {actual}, not by {sender}")]
    NotTheHub {
        group: GroupId,
        actual: String,
        sender: String,
    },
    /// A Welcome for a device here is not addressed to a key package of that
    /// device that this directory handed to the hub's or the committer's domain.
    #[error(
        "event {seq}: the Welcome for {device} is not addressed to a key package of that device that this directory handed to {claimers}"
    )]
    UnclaimedWelcome {
        seq: Seq,
        device: String,
        claimers: String,
    },
    /// The group has no member devices here and the batch adds none.
    #[error(
        "group {group} has no member devices on {own}, and this batch does not begin with a commit adding one"
    )]
    NotFollowed { group: GroupId, own: String },
    /// A gap before the batch could not be repaired from the hub (yet).
    #[error(
        "events of group {group} after {have} are missing here and the hub could not supply them: {reason}"
    )]
    RepairFailed {
        group: GroupId,
        have: Seq,
        reason: String,
    },
    /// Another batch for the same new group is being applied; retry.
    #[error("group {0} is being created by another delivery; retry")]
    Busy(GroupId),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Internal(#[from] InternalError),
}

/// A batch as the hub sent it.
pub(crate) struct IncomingBatch {
    pub(crate) hub: Domain,
    pub(crate) mls_group_id: GroupId,
    pub(crate) events: Vec<proto::FederatedEvent>,
    pub(crate) member_count: u64,
}

/// How applying went.
pub(super) enum Applied {
    /// The copy now ends at this sequence number.
    Through(Seq),
    /// Events after `have` are missing before the batch.
    Gap { have: Seq },
}

/// Checks events of group `mls_group_id` as they came over the wire.
pub(crate) fn check_wire_batch(
    own: &Domain,
    mls_group_id: &GroupId,
    events: Vec<proto::FederatedEvent>,
) -> Result<Vec<CheckedEvent>, InvalidBatch> {
    check_batch(
        own,
        mls_group_id,
        events.into_iter().map(incoming_event).collect(),
    )
}

/// Logs a refusal of a peer's events (not a passing failure), naming the peer
/// and the group, for the operator.
pub(super) fn log_refusal(peer: &Domain, mls_group_id: &GroupId, error: &FollowerError) {
    match error {
        FollowerError::InvalidBatch(_)
        | FollowerError::NotTheHub { .. }
        | FollowerError::UnclaimedWelcome { .. }
        | FollowerError::NotFollowed { .. } => {
            tracing::warn!(peer_domain = %peer, group = %mls_group_id, %error, "refused a group's events from a peer");
        }
        FollowerError::RepairFailed { .. }
        | FollowerError::Busy(_)
        | FollowerError::Store(_)
        | FollowerError::Internal(_) => {}
    }
}

fn incoming_event(event: proto::FederatedEvent) -> IncomingEvent {
    let kind = match proto::EventKind::try_from(event.kind) {
        Ok(proto::EventKind::Commit) => IncomingKind::Commit,
        Ok(proto::EventKind::Proposal) => IncomingKind::Proposal,
        Ok(proto::EventKind::Application) => IncomingKind::Application,
        Ok(proto::EventKind::Departure) => IncomingKind::Departure,
        _ => IncomingKind::Unknown(event.kind),
    };
    IncomingEvent {
        seq: event.seq,
        kind,
        epoch: event.epoch,
        sender: event.sender,
        message: event.message,
        added: event.added,
        removed: event.removed,
        welcome: event.welcome,
        ratchet_tree: event.ratchet_tree,
        // Only a valid one is kept, in its canonical form (it is stored with
        // the event); anything else counts as none.
        traceparent: event
            .traceparent
            .as_deref()
            .and_then(conclave_federation::trace_context::canonical_traceparent),
    }
}
