//! The hub: the use cases of groups hosted here, one file each. Each submission
//! is one transaction: lock the group's row, check idempotency, apply
//! `rules::hub`, write what the rules decided, record the idempotency key,
//! commit; then wake subscribers.
//!
//! # Layout
//! - `create_group`: a group whose only member is its creator.
//! - `submit_commit`: the one commit that ends an epoch; `commit_effects` writes
//!   what the commit's plan decided (members, Welcomes, follower domains).
//! - `submit_proposal`, `send_message`: entries that only grow the log;
//!   `message_batch`: concurrent messages share one transaction
//!   (`write_message_batch`).
//! - `get_group_info`, `list_groups`: reads.
//! - `log`: locking a hosted group, loading its state, appending to its log.
//! - `state_cache`: each hosted group's parsed public state kept in memory
//!   between commits, used only while it is exactly the stored one.

mod commit_effects;
mod create_group;
mod get_group_info;
mod list_groups;
mod log;
mod message_batch;
mod send_message;
mod state_cache;
mod submit_commit;
mod submit_proposal;
mod write_message_batch;

pub(crate) use create_group::{NewGroup, create};
pub(crate) use get_group_info::group_info;
pub(crate) use list_groups::list;
pub(crate) use message_batch::MessageBatcher;
pub(crate) use send_message::{NewMessage, send_message};
pub(crate) use state_cache::HubStates;
pub(crate) use submit_commit::{NewCommit, submit_commit};
pub(crate) use submit_proposal::{NewProposal, submit_proposal};

use super::InternalError;
use super::idempotency::{IdempotencyError, Outcome};
use crate::rules::cipher_suites::SuiteRefusal;
use crate::rules::hub::HubRejection;
use crate::rules::ids::{Epoch, GroupId, Seq};
use crate::store::StoreError;

/// Why a group submission or read failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum GroupError {
    /// The MLS content was refused by the hub's rules.
    #[error(transparent)]
    Rejected(#[from] HubRejection),
    #[error(transparent)]
    Idempotency(#[from] IdempotencyError),
    /// A required field is empty.
    #[error("{0} is required")]
    MissingField(&'static str),
    /// No group with this id is known here.
    #[error("group {0} does not exist")]
    UnknownGroup(GroupId),
    /// The group id is taken.
    #[error("group {0} already exists")]
    GroupExists(GroupId),
    /// Another commit won the epoch this commit or proposal was for.
    #[error(
        "{what} is for epoch {message_epoch} but the group is at epoch {current_epoch}: the commit at sequence number {winning_commit_seq} won; fetch it, merge it and retry"
    )]
    CommitConflict {
        /// "commit" or "proposal".
        what: &'static str,
        message_epoch: Epoch,
        current_epoch: Epoch,
        winning_commit_seq: Seq,
    },
    /// The exact bytes of this message are already in the group's log (a replay,
    /// or a resubmission under a new idempotency key).
    #[error(
        "this message is already in the group's log at sequence number {seq}; the same bytes are accepted once (retry with the original idempotency key to get its result)"
    )]
    Replayed { seq: Seq },
    /// The caller is not (or no longer) a member.
    #[error("you are not a member of group {0}")]
    NotAMember(GroupId),
    /// A new leaf names a device that is not registered with that key.
    #[error("{identity} is not a registered device with this signature key")]
    UnregisteredDevice { identity: String },
    /// A new leaf belongs to a domain this homeserver does not federate with.
    #[error(
        "{identity} belongs to domain {domain}, which is not a federation peer of this homeserver"
    )]
    ForeignDevice { identity: String, domain: String },
    /// The homeserver of a new leaf's domain could not be asked about it.
    #[error("could not check {identity} with its homeserver: {reason}; retry later")]
    RemoteCheckFailed { identity: String, reason: String },
    /// The group is hosted by another domain and its hub could not be reached or
    /// refused this homeserver.
    #[error("the group's hub {hub} is unavailable: {reason}; retry with the same idempotency key")]
    HubUnavailable { hub: String, reason: String },
    /// The group's hub refused this homeserver for now (its rate limit).
    #[error("the group's hub {hub} is busy: {reason}; retry later")]
    HubRateLimited { hub: String, reason: String },
    /// The group is hosted by a domain that is not (any more) a federation peer.
    #[error("the group's hub {hub} is not a federation peer of this homeserver")]
    HubNotAPeer { hub: String },
    /// The group's hub refused the submission: its answer on the federation
    /// wire (`SubmitToHubResponse.rejected`), handed on to the device as it is,
    /// uninterpreted here (`grpc/status.rs` turns it into the device's status).
    #[error("{}", .0.message)]
    RejectedByHub(conclave_proto::federation::v1::Rejected),
    /// An Add uses a key package that was not handed out by the directory.
    #[error("the key package added for {identity} was not claimed through the directory")]
    UnclaimedKeyPackage { identity: String },
    /// The worker applying the submission's batch ended before answering;
    /// whether it was stored is unknown until a retry with the same key.
    #[error(
        "the submission was interrupted before its outcome was known; retry with the same idempotency key"
    )]
    SubmissionInterrupted,
    /// The new group's cipher suite is not offered here, or not post-quantum
    /// where new groups must be.
    #[error(transparent)]
    SuiteRefused(#[from] SuiteRefusal),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Internal(#[from] InternalError),
}

/// Where an accepted submission landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Accepted {
    pub(crate) seq: Seq,
    pub(crate) epoch: Epoch,
}

impl From<Outcome> for Accepted {
    fn from(outcome: Outcome) -> Self {
        Accepted {
            seq: outcome.seq,
            epoch: outcome.epoch,
        }
    }
}
