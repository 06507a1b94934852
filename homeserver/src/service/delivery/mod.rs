//! Delivery to a device, one use case per file: what lies after its cursors (its
//! groups' logs and its inbox), polled with `fetch` or streamed with
//! `subscribe`, and `ack` to move the cursors. A device receives a group's
//! events after the commit that added it, up to and including the commit that
//! removed it (`rules::delivery`).
//!
//! # Layout
//! - `pages`: reading one page of events after a device's positions, shared
//!   fairly among its groups.
//! - `tails`: the shared cache of the newest events of the groups that streams
//!   read, so a wake-up costs one read of a group's log, not one per stream.
//! - `fetch`, `ack`, `subscribe`: the three RPCs.
//! - `streams`: the Subscribe streams open now, within their limits per device
//!   and per connection.
//! - `stream_reads`: the streams' database reads, a few at a time.
//! - `welcome_trees`: the ratchet trees of recent Welcomes, exported from the
//!   group's state stored with them, once per commit.

mod ack;
mod fetch;
mod pages;
mod stream_reads;
mod streams;
mod subscribe;
mod tails;
mod welcome_trees;

pub(crate) use ack::{Acks, ack};
pub(crate) use fetch::fetch;
pub(crate) use stream_reads::StreamReads;
pub(crate) use streams::{ConnectionKey, SubscribeStreams};
pub(crate) use subscribe::{close_device_streams, open_stream, subscribe};
pub(crate) use tails::GroupTails;
pub(crate) use welcome_trees::WelcomeTrees;

use super::InternalError;
use super::accounts::AccountError;
use crate::rules::delivery::AckCheck;
use crate::rules::ids::GroupId;
use crate::rules::ids::{GroupKey, Seq};
use crate::rules::streams::StreamRefusal;
use crate::store::{InboxEvent, LogEvent, StoreError};
use std::collections::HashMap;
use std::sync::Arc;

/// Most events in one page.
pub(crate) const MAX_PAGE: u64 = 1000;
/// Page size when the client does not say.
pub(crate) const DEFAULT_PAGE: u64 = 100;
/// Events buffered per subscriber: a slow consumer fills its own buffer and waits,
/// and nobody else does.
pub(crate) const SUBSCRIBER_BUFFER: usize = 64;

/// What a Subscribe stream's task hands to the gRPC response: boxed, because
/// tokio's channel allocates its first block of 32 slots when it is made, so
/// every open stream, idle or not, pays 32 slots (32 x 112 bytes unboxed, 32
/// x 8 boxed: 3.3 KB less per stream).
pub(crate) type StreamItem = Box<Result<Delivery, DeliveryError>>;

/// Why a delivery request failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DeliveryError {
    /// No group with this id is known here.
    #[error("group {0} does not exist")]
    UnknownGroup(GroupId),
    /// The group exists but the device never was a member.
    #[error("you are not a member of group {0}")]
    NotAMember(GroupId),
    #[error(transparent)]
    AckBeyondEnd(#[from] AckCheck),
    /// A new Subscribe stream would exceed a limit.
    #[error(transparent)]
    TooManyStreams(#[from] StreamRefusal),
    /// The stream was closed because its device opened more streams than it may
    /// hold; the newer one took its place.
    #[error(
        "this stream was closed: the device opened more than {limit} Subscribe streams \
         (limits.subscribe_streams_per_device), and a newer one took its place"
    )]
    StreamReplaced { limit: usize },
    /// This server process is shutting down: open streams end and new ones
    /// are refused, so the device reconnects, to another replica if any.
    #[error(
        "this server is shutting down; subscribe again (to another server of the homeserver, if there is one)"
    )]
    ServerStopping,
    /// An administrator acted on the stream's device, which may call again
    /// by the time the stream ends (a suspension lifted at once): subscribe
    /// again.
    #[error("this stream was closed by an administrator's action on its device; subscribe again")]
    StreamClosed,
    /// The device may no longer call: the stream ends with the reason its
    /// next call would be refused with.
    #[error(transparent)]
    AccessEnded(#[from] AccountError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Internal(#[from] InternalError),
}

/// One event for a device, with the group's MLS id for group events.
#[derive(Debug, Clone)]
pub(crate) enum Delivery {
    Group {
        group_id: Arc<GroupId>,
        event: LogEvent,
    },
    Inbox {
        group_id: GroupId,
        event: InboxEvent,
    },
}

impl Delivery {
    /// When the hub stored the event (Unix time, ms).
    pub(crate) fn accepted_at_ms(&self) -> i64 {
        match self {
            Delivery::Group { event, .. } => event.created_at_ms,
            Delivery::Inbox { event, .. } => event.created_at_ms,
        }
    }
}

/// How far a device has been served, per group and in its inbox.
#[derive(Debug)]
pub(super) struct Positions {
    pub(super) inbox: Seq,
    /// The inbox may hold events after `inbox`: it was not read to its end
    /// since it was last woken.
    pub(super) inbox_pending: bool,
    pub(super) groups: HashMap<GroupKey, Seq>,
    /// Where the next page starts among the device's groups (it turns).
    pub(super) next_first_group: usize,
}

impl Positions {
    /// At the acknowledged inbox cursor; each group's position is its
    /// acknowledged cursor until it is first read.
    pub(super) fn new(inbox: Seq) -> Positions {
        Positions {
            inbox,
            inbox_pending: true,
            groups: HashMap::new(),
            next_first_group: 0,
        }
    }
}
