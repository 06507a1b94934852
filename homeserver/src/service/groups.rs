//! The hub: creating groups and accepting commits, proposals and application
//! messages for groups hosted here. Each submission is one transaction: lock the
//! group's row, apply `rules::hub`, check new leaves against the directory, append
//! to the log, save, record the idempotency key, commit; then wake subscribers.

use super::accounts::AuthenticatedDevice;
use super::idempotency::{IdempotencyError, Outcome, Submission};
use super::remote_leaves::{self, VouchedLeaves};
use super::{Context, InternalError};
use crate::notify::Topic;
use crate::rules::hub::{
    CommitDecision, CommitSubmission, HubGroup, HubRejection, NewLeaf, PastEpochWindow,
    check_application_message,
};
use crate::store::{self, EventKind, GroupRecord, NewEvent, StoreError};
use conclave_core::ids::{CredentialIdentity, UserId};

/// Why a group submission failed.
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
    /// No group with this id is hosted here, or the caller may not see it.
    #[error("group {0} does not exist")]
    UnknownGroup(String),
    /// The group id is taken.
    #[error("group {0} already exists")]
    GroupExists(String),
    /// Another commit won the epoch this commit was for.
    #[error(
        "commit is for epoch {message_epoch} but the group is at epoch {current_epoch}: the commit at sequence number {winning_commit_seq} won; fetch it, merge it and retry"
    )]
    CommitConflict {
        message_epoch: u64,
        current_epoch: u64,
        winning_commit_seq: u64,
    },
    /// The caller is not (or no longer) a member.
    #[error("you are not a member of group {0}")]
    NotAMember(String),
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
    /// The group's hub refused the submission (relayed as the hub said it).
    #[error("{message}")]
    RejectedByHub {
        code: i32,
        message: String,
        commit_conflict: Option<(u64, u64)>,
    },
    /// An Add uses a key package that was not handed out by the directory.
    #[error("the key package added for {identity} was not claimed through the directory")]
    UnclaimedKeyPackage { identity: String },
    /// Too many proposals wait for a commit in this epoch.
    #[error("the group already has {limit} proposals waiting for a commit in this epoch")]
    TooManyProposals { limit: u64 },
    /// The group would exceed the configured size.
    #[error("the group would have {would_have} members, more than the limit of {limit}")]
    TooManyMembers { would_have: u64, limit: u64 },
    #[error(transparent)]
    Internal(#[from] InternalError),
}

impl From<StoreError> for GroupError {
    fn from(error: StoreError) -> Self {
        GroupError::Internal(error.into())
    }
}

/// Where an accepted submission landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Accepted {
    pub(crate) seq: u64,
    pub(crate) epoch: u64,
}

impl From<Outcome> for Accepted {
    fn from(outcome: Outcome) -> Self {
        Accepted {
            seq: u64::try_from(outcome.seq).unwrap_or(0),
            epoch: u64::try_from(outcome.epoch).unwrap_or(0),
        }
    }
}

/// Proposals a group may collect in one epoch: each is kept in the group's state
/// until a commit covers it, so an unbounded number would grow every load and save.
const MAX_PROPOSALS_PER_EPOCH: u64 = 100;

fn group_name(mls_group_id: &[u8]) -> String {
    hex::encode(mls_group_id)
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

pub(crate) struct NewGroup {
    pub(crate) idempotency_key: Vec<u8>,
    pub(crate) group_info: Vec<u8>,
    pub(crate) ratchet_tree: Vec<u8>,
}

/// Registers a group whose only member is the calling device.
pub(crate) async fn create(
    context: &Context,
    device: &AuthenticatedDevice,
    request: NewGroup,
) -> Result<(Vec<u8>, u64), GroupError> {
    let identity = device.identity.to_string();
    let submission = Submission::new(
        &identity,
        &request.idempotency_key,
        "create",
        &[&request.group_info, &request.ratchet_tree],
    )?;
    if let Some(created) = previous_creation(context, &submission).await? {
        return Ok(created);
    }
    let hub_group = HubGroup::create(&request.group_info, &request.ratchet_tree, &device.identity)?;
    let mls_group_id = hub_group.group_id();
    let epoch = hub_group.epoch();
    let now_ms = context.now_ms();
    let transaction = context.store.begin().await?;
    let group = store::insert_group(
        &transaction,
        &mls_group_id,
        to_i64(epoch),
        hub_group.to_state(),
        &identity,
        now_ms,
    )
    .await?;
    let Some(group) = group else {
        drop(transaction);
        // A retry that raced its original finds the original's result here.
        return match previous_creation(context, &submission).await? {
            Some(created) => Ok(created),
            None => Err(GroupError::GroupExists(group_name(&mls_group_id))),
        };
    };
    add_member(context, &transaction, group.id, &device.identity, 0).await?;
    submission
        .record(
            &transaction,
            Outcome {
                group_row_id: group.id,
                seq: 0,
                epoch: to_i64(epoch),
            },
            now_ms,
        )
        .await?;
    transaction.commit().await.map_err(StoreError::from)?;
    tracing::info!(group = %group_name(&mls_group_id), creator = %identity, "group created");
    Ok((mls_group_id, epoch))
}

/// The group and epoch an earlier identical CreateGroup produced.
async fn previous_creation(
    context: &Context,
    submission: &Submission<'_>,
) -> Result<Option<(Vec<u8>, u64)>, GroupError> {
    let connection = &context.store;
    let Some(previous) = submission.previous_outcome(connection).await? else {
        return Ok(None);
    };
    let outcome = previous?;
    let group = store::find_group_headers(connection, vec![outcome.group_row_id])
        .await?
        .pop()
        .ok_or_else(|| {
            GroupError::Internal(InternalError::Corrupt(
                "an idempotency record names a group that does not exist".to_owned(),
            ))
        })?;
    Ok(Some((group.mls_group_id, Accepted::from(outcome).epoch)))
}

async fn add_member(
    context: &Context,
    transaction: &store::Transaction,
    group_row_id: i64,
    identity: &CredentialIdentity,
    joined_after_seq: i64,
) -> Result<(), StoreError> {
    let domain = identity.user_id().domain();
    let remote_domain = (domain != &context.domain).then(|| domain.to_string());
    store::upsert_member(
        transaction,
        group_row_id,
        &identity.to_string(),
        &identity.user_id().to_string(),
        identity.device_id().as_str(),
        joined_after_seq,
        remote_domain.as_deref(),
    )
    .await
}

pub(crate) struct NewCommit {
    pub(crate) idempotency_key: Vec<u8>,
    pub(crate) group_id: Vec<u8>,
    pub(crate) commit: Vec<u8>,
    pub(crate) welcome: Option<Vec<u8>>,
    pub(crate) group_info: Vec<u8>,
}

/// Accepts a commit for the group's current epoch, or explains why not. `sender`
/// is the authenticated submitting device: one of this homeserver's, or one a
/// follower domain's homeserver authenticated and relayed.
pub(crate) async fn submit_commit(
    context: &Context,
    sender: &CredentialIdentity,
    request: NewCommit,
) -> Result<Accepted, GroupError> {
    if request.commit.is_empty() {
        return Err(GroupError::MissingField("commit"));
    }
    if request.group_info.is_empty() {
        return Err(GroupError::MissingField("group_info"));
    }
    // New leaves of other domains need their homeservers' word, asked without
    // holding the group's lock: the first attempt finds which, they are asked,
    // and the commit is judged again. A group that keeps changing meanwhile
    // gets a few tries.
    let mut vouched = VouchedLeaves::default();
    for _ in 0..MAX_COMMIT_ATTEMPTS {
        match try_commit(context, sender, &request, &vouched).await? {
            CommitAttempt::Accepted(accepted) => return Ok(accepted),
            CommitAttempt::AskRemoteDomains { added, changed } => {
                vouched = remote_leaves::vouch_for(context, &added, &changed).await?;
            }
        }
    }
    Err(GroupError::RemoteCheckFailed {
        identity: sender.to_string(),
        reason: "the group changed while the homeservers of its new members were asked".to_owned(),
    })
}

/// Rounds of "ask the remote domains, judge again" before giving up.
const MAX_COMMIT_ATTEMPTS: usize = 3;

enum CommitAttempt {
    Accepted(Accepted),
    /// The commit has leaves of other domains not vouched for yet.
    AskRemoteDomains {
        added: Vec<NewLeaf>,
        changed: Vec<NewLeaf>,
    },
}

async fn try_commit(
    context: &Context,
    sender: &CredentialIdentity,
    request: &NewCommit,
    vouched: &VouchedLeaves,
) -> Result<CommitAttempt, GroupError> {
    let identity = sender.to_string();
    let welcome = request.welcome.as_deref().unwrap_or_default();
    let submission = Submission::new(
        &identity,
        &request.idempotency_key,
        "commit",
        &[
            &request.group_id,
            &request.commit,
            &[u8::from(request.welcome.is_some())],
            welcome,
            &request.group_info,
        ],
    )?;
    let transaction = context.store.begin().await?;
    // The idempotency check comes after the lock: a retry racing its original
    // then waits for it and finds its outcome, instead of being judged on its own.
    let group = lock_group(&transaction, &request.group_id).await?;
    if let Some(previous) = submission.previous_outcome(&transaction).await? {
        return Ok(CommitAttempt::Accepted(previous?.into()));
    }
    let mut hub_group = load_state(&group)?;
    let decision = match hub_group.check_commit(&CommitSubmission {
        sender,
        commit: &request.commit,
        welcome: request.welcome.as_deref(),
        group_info: &request.group_info,
    }) {
        Ok(decision) => decision,
        Err(HubRejection::StaleEpoch {
            message_epoch,
            current_epoch,
        }) => {
            let winning_commit_seq =
                store::commit_seq(&transaction, group.id, to_i64(message_epoch))
                    .await?
                    .unwrap_or_default();
            return Err(GroupError::CommitConflict {
                message_epoch,
                current_epoch,
                winning_commit_seq: u64::try_from(winning_commit_seq).unwrap_or(0),
            });
        }
        Err(rejection) => return Err(rejection.into()),
    };
    let unvouched = |leaves: &[NewLeaf], is_add: bool| -> Vec<NewLeaf> {
        leaves
            .iter()
            .filter(|leaf| leaf.identity.user_id().domain() != &context.domain)
            .filter(|leaf| !vouched.contains(leaf))
            .filter(|leaf| is_add || !remote_leaves::is_cached(context, leaf))
            .cloned()
            .collect()
    };
    let (added, changed) = (
        unvouched(&decision.added, true),
        unvouched(&decision.changed_leaves, false),
    );
    if !added.is_empty() || !changed.is_empty() {
        return Ok(CommitAttempt::AskRemoteDomains { added, changed });
    }
    check_local_leaves(context, &transaction, &decision).await?;
    check_group_size(context, &transaction, group.id, &decision).await?;

    let seq = group.last_seq + 1;
    let ended_epoch = group.epoch;
    if !store::insert_commit(&transaction, group.id, ended_epoch, seq).await? {
        // The row lock makes this unreachable in practice; the primary key is the
        // guarantee if the lock is ever bypassed.
        let winning_commit_seq = store::commit_seq(&transaction, group.id, ended_epoch)
            .await?
            .unwrap_or_default();
        return Err(GroupError::CommitConflict {
            message_epoch: u64::try_from(ended_epoch).unwrap_or(0),
            current_epoch: u64::try_from(ended_epoch).unwrap_or(0),
            winning_commit_seq: u64::try_from(winning_commit_seq).unwrap_or(0),
        });
    }
    let now_ms = context.now_ms();
    store::append_event(
        &transaction,
        NewEvent {
            group_row_id: group.id,
            seq,
            kind: EventKind::Commit,
            epoch: ended_epoch,
            sender_identity: &identity,
            message: &request.commit,
            now_ms,
            trace_parent: context.trace_parent_for_outbox(),
        },
    )
    .await?;
    let removed = decision.removed.clone();
    let mut added = decision.added.clone();
    if decision.external {
        // The joiner is a new member like an added one, without a Welcome.
        added.extend(
            decision
                .changed_leaves
                .iter()
                .filter(|leaf| &leaf.identity == sender)
                .cloned(),
        );
    }
    let new_epoch = decision.new_epoch;
    hub_group.apply_commit(decision)?;
    store::update_group(
        &transaction,
        group.id,
        to_i64(new_epoch),
        seq,
        Some(hub_group.to_state()),
    )
    .await?;
    for identity in &removed {
        store::mark_removed(&transaction, group.id, &identity.to_string(), seq).await?;
    }
    for leaf in &added {
        add_member(context, &transaction, group.id, &leaf.identity, seq).await?;
    }
    let is_local = |identity: &CredentialIdentity| identity.user_id().domain() == &context.domain;
    let mut woken_inboxes = Vec::new();
    let mut ratchet_tree = None;
    if let Some(welcome) = &request.welcome {
        let tree = ratchet_tree.get_or_insert_with(|| hub_group.ratchet_tree());
        let welcomed = added
            .iter()
            .filter(|leaf| leaf.key_package_ref.is_some() && is_local(&leaf.identity));
        for leaf in welcomed {
            let device_id = leaf.identity.device_id().as_str();
            store::append_inbox_event(
                &transaction,
                device_id,
                group.id,
                seq,
                welcome,
                tree,
                now_ms,
            )
            .await?;
            woken_inboxes.push(device_id.to_owned());
        }
    }
    let followers_changed = record_for_followers(
        context,
        &transaction,
        FollowerChanges {
            group_row_id: group.id,
            seq,
            added: added.iter().map(|leaf| &leaf.identity).collect(),
            removed: &removed,
            welcome: request.welcome.as_deref(),
            ratchet_tree: &mut ratchet_tree,
            hub_group: &hub_group,
        },
    )
    .await?;
    let outcome = Outcome {
        group_row_id: group.id,
        seq,
        epoch: to_i64(new_epoch),
    };
    submission.record(&transaction, outcome, now_ms).await?;
    transaction.commit().await.map_err(StoreError::from)?;

    context.notifier.publish(&Topic::Group(group.id));
    for device_id in woken_inboxes {
        context.notifier.publish(&Topic::Inbox(device_id));
    }
    if followers_changed {
        context.notifier.publish(&Topic::Outbox);
    } else {
        wake_outbox_if_followed(context, group.id).await?;
    }
    tracing::debug!(group = %group_name(&group.mls_group_id), seq, epoch = new_epoch, committer = %identity, "commit accepted");
    Ok(CommitAttempt::Accepted(outcome.into()))
}

/// What an accepted commit changed for devices of other domains.
struct FollowerChanges<'a> {
    group_row_id: i64,
    seq: i64,
    /// Every device the commit added or that joined by it.
    added: Vec<&'a CredentialIdentity>,
    removed: &'a [CredentialIdentity],
    welcome: Option<&'a [u8]>,
    /// The new epoch's tree, if already serialised.
    ratchet_tree: &'a mut Option<Vec<u8>>,
    hub_group: &'a HubGroup,
}

/// Records, for the follower domains concerned, which of their devices the
/// commit added and removed, the Welcome they need (once for all of them), and
/// their outbox cursors: a domain whose first device joins starts receiving at
/// this commit; a domain whose last device leaves stops after it. Returns true if
/// some domain was concerned.
async fn record_for_followers(
    context: &Context,
    transaction: &store::Transaction,
    changes: FollowerChanges<'_>,
) -> Result<bool, GroupError> {
    let remote_domain = |identity: &CredentialIdentity| {
        let domain = identity.user_id().domain();
        (domain != &context.domain).then(|| domain.to_string())
    };
    let mut joined_domains = std::collections::BTreeSet::new();
    let mut left_domains = std::collections::BTreeSet::new();
    for (identity, added) in changes
        .added
        .iter()
        .map(|identity| (*identity, true))
        .chain(changes.removed.iter().map(|identity| (identity, false)))
    {
        let Some(domain) = remote_domain(identity) else {
            continue;
        };
        store::insert_membership_change(
            transaction,
            store::MembershipChangeRecord {
                group_id: changes.group_row_id,
                seq: changes.seq,
                identity: identity.to_string(),
                domain: domain.clone(),
                added,
            },
        )
        .await?;
        if added {
            joined_domains.insert(domain);
        } else {
            left_domains.insert(domain);
        }
    }
    if joined_domains.is_empty() && left_domains.is_empty() {
        return Ok(false);
    }
    if let Some(welcome) = changes.welcome
        && !joined_domains.is_empty()
    {
        let tree = changes
            .ratchet_tree
            .get_or_insert_with(|| changes.hub_group.ratchet_tree());
        store::insert_remote_welcome(
            transaction,
            store::RemoteWelcomeRecord {
                group_id: changes.group_row_id,
                seq: changes.seq,
                welcome: welcome.to_vec(),
                ratchet_tree: tree.clone(),
            },
        )
        .await?;
    }
    for domain in &joined_domains {
        let cursor = store::find_peer_cursor(transaction, changes.group_row_id, domain).await?;
        let rejoined = |delivered_seq| store::PeerCursorRecord {
            group_id: changes.group_row_id,
            peer_domain: domain.clone(),
            joined_after_seq: changes.seq - 1,
            delivered_seq,
            until_seq: None,
        };
        let cursor = match cursor {
            // Still a follower: nothing changes.
            Some(cursor) if cursor.until_seq.is_none() => continue,
            // Left, and everything up to its leaving was delivered: it starts
            // again at this commit.
            Some(cursor)
                if cursor
                    .until_seq
                    .is_some_and(|until| cursor.delivered_seq >= until) =>
            {
                rejoined(changes.seq - 1)
            }
            // Left, and still receiving what came before: it continues from there.
            Some(cursor) => store::PeerCursorRecord {
                until_seq: None,
                ..cursor
            },
            None => rejoined(changes.seq - 1),
        };
        store::save_peer_cursor(transaction, cursor).await?;
    }
    let still_members =
        store::remote_domains_with_members(transaction, changes.group_row_id).await?;
    for domain in left_domains.difference(&joined_domains) {
        if still_members.contains(domain) {
            continue;
        }
        if let Some(cursor) =
            store::find_peer_cursor(transaction, changes.group_row_id, domain).await?
        {
            store::save_peer_cursor(
                transaction,
                store::PeerCursorRecord {
                    until_seq: Some(changes.seq),
                    ..cursor
                },
            )
            .await?;
        }
    }
    Ok(true)
}

/// Wakes the federation outbox if the group has follower domains.
async fn wake_outbox_if_followed(context: &Context, group_row_id: i64) -> Result<(), GroupError> {
    if context.federation.is_none() {
        return Ok(());
    }
    if store::has_followers(&context.store, group_row_id).await? {
        context.notifier.publish(&Topic::Outbox);
    }
    Ok(())
}

async fn lock_group(
    transaction: &store::Transaction,
    mls_group_id: &[u8],
) -> Result<GroupRecord, GroupError> {
    if mls_group_id.is_empty() {
        return Err(GroupError::MissingField("group_id"));
    }
    store::lock_group(transaction, mls_group_id)
        .await?
        .ok_or_else(|| GroupError::UnknownGroup(group_name(mls_group_id)))
}

fn load_state(group: &GroupRecord) -> Result<HubGroup, GroupError> {
    HubGroup::from_state(&group.state).map_err(|error| {
        GroupError::Internal(InternalError::Corrupt(format!(
            "state of group {}: {error}",
            group_name(&group.mls_group_id)
        )))
    })
}

/// Every new or changed leaf of this domain must be a device registered here with
/// exactly that signature key, and every Add of one must use a key package the
/// directory handed out. (Leaves of other domains were vouched for by theirs.)
async fn check_local_leaves(
    context: &Context,
    transaction: &store::Transaction,
    decision: &CommitDecision,
) -> Result<(), GroupError> {
    let is_local = |leaf: &&NewLeaf| leaf.identity.user_id().domain() == &context.domain;
    for leaf in decision
        .added
        .iter()
        .chain(&decision.changed_leaves)
        .filter(is_local)
    {
        let registered = store::device_has_key(
            transaction,
            leaf.identity.device_id().as_str(),
            leaf.identity.user_id().username().as_str(),
            &leaf.signature_key,
        )
        .await?;
        if !registered {
            return Err(GroupError::UnregisteredDevice {
                identity: leaf.identity.to_string(),
            });
        }
    }
    for leaf in decision.added.iter().filter(is_local) {
        let claimed = match &leaf.key_package_ref {
            Some(hash_ref) => {
                store::key_package_was_claimed(
                    transaction,
                    hash_ref,
                    leaf.identity.device_id().as_str(),
                )
                .await?
            }
            None => false,
        };
        if !claimed {
            return Err(GroupError::UnclaimedKeyPackage {
                identity: leaf.identity.to_string(),
            });
        }
    }
    Ok(())
}

async fn check_group_size(
    context: &Context,
    transaction: &store::Transaction,
    group_row_id: i64,
    decision: &CommitDecision,
) -> Result<(), GroupError> {
    let limit = context.config.groups.max_members;
    let current = store::member_count(transaction, group_row_id).await?;
    let would_have = (current + decision.added.len() as u64 + u64::from(decision.external))
        .saturating_sub(decision.removed.len() as u64);
    if would_have > limit {
        return Err(GroupError::TooManyMembers { would_have, limit });
    }
    Ok(())
}

pub(crate) struct NewProposal {
    pub(crate) idempotency_key: Vec<u8>,
    pub(crate) group_id: Vec<u8>,
    pub(crate) proposal: Vec<u8>,
}

/// Accepts a proposal by reference for the current epoch, from `sender` (see
/// [`submit_commit`]).
pub(crate) async fn submit_proposal(
    context: &Context,
    sender: &CredentialIdentity,
    request: NewProposal,
) -> Result<Accepted, GroupError> {
    if request.proposal.is_empty() {
        return Err(GroupError::MissingField("proposal"));
    }
    let identity = sender.to_string();
    let submission = Submission::new(
        &identity,
        &request.idempotency_key,
        "proposal",
        &[&request.group_id, &request.proposal],
    )?;
    let transaction = context.store.begin().await?;
    // The idempotency check comes after the lock: a retry racing its original
    // then waits for it and finds its outcome, instead of being judged on its own.
    let group = lock_group(&transaction, &request.group_id).await?;
    if let Some(previous) = submission.previous_outcome(&transaction).await? {
        return Ok(previous?.into());
    }
    // The epoch began with the commit that ended the previous one (or with the
    // group, at sequence number 0).
    let epoch_start_seq = store::commit_seq(&transaction, group.id, group.epoch - 1)
        .await?
        .unwrap_or(0);
    let pending =
        store::count_events_after(&transaction, group.id, EventKind::Proposal, epoch_start_seq)
            .await?;
    if pending >= MAX_PROPOSALS_PER_EPOCH {
        return Err(GroupError::TooManyProposals {
            limit: MAX_PROPOSALS_PER_EPOCH,
        });
    }
    let mut hub_group = load_state(&group)?;
    hub_group.add_proposal(sender, &request.proposal)?;
    let accepted = append_and_commit(
        context,
        transaction,
        &submission,
        LogAppend {
            group_row_id: group.id,
            last_seq: group.last_seq,
            group_epoch: group.epoch,
            message_epoch: group.epoch,
            kind: EventKind::Proposal,
            message: &request.proposal,
            new_state: Some(hub_group.to_state()),
        },
    )
    .await?;
    Ok(accepted)
}

/// A log entry that changes nothing but the log (and, for a proposal, the stored
/// proposals): everything about a proposal or an application message after its
/// checks passed.
struct LogAppend<'a> {
    group_row_id: i64,
    last_seq: i64,
    group_epoch: i64,
    /// The epoch the message was sent in (application messages may be a little
    /// behind the group).
    message_epoch: i64,
    kind: EventKind,
    message: &'a [u8],
    /// The group's public state, when the submission changed it.
    new_state: Option<Vec<u8>>,
}

/// Appends the entry at the next sequence number, records the idempotency key,
/// commits, and wakes the group's subscribers.
async fn append_and_commit(
    context: &Context,
    transaction: store::Transaction,
    submission: &Submission<'_>,
    append: LogAppend<'_>,
) -> Result<Accepted, GroupError> {
    let seq = append.last_seq + 1;
    let now_ms = context.now_ms();
    store::append_event(
        &transaction,
        NewEvent {
            group_row_id: append.group_row_id,
            seq,
            kind: append.kind,
            epoch: append.message_epoch,
            sender_identity: submission.identity,
            message: append.message,
            now_ms,
            trace_parent: context.trace_parent_for_outbox(),
        },
    )
    .await?;
    store::update_group(
        &transaction,
        append.group_row_id,
        append.group_epoch,
        seq,
        append.new_state,
    )
    .await?;
    let outcome = Outcome {
        group_row_id: append.group_row_id,
        seq,
        epoch: append.group_epoch,
    };
    submission.record(&transaction, outcome, now_ms).await?;
    transaction.commit().await.map_err(StoreError::from)?;
    context.notifier.publish(&Topic::Group(append.group_row_id));
    wake_outbox_if_followed(context, append.group_row_id).await?;
    Ok(outcome.into())
}

pub(crate) struct NewMessage {
    pub(crate) idempotency_key: Vec<u8>,
    pub(crate) group_id: Vec<u8>,
    pub(crate) message: Vec<u8>,
}

/// Accepts an application message from a current member. Costs a constant number
/// of writes whatever the group's size: the log entry, the group's counter and the
/// idempotency record; the group's (large) state is neither read nor written.
pub(crate) async fn send_message(
    context: &Context,
    sender: &CredentialIdentity,
    request: NewMessage,
) -> Result<Accepted, GroupError> {
    if request.message.is_empty() {
        return Err(GroupError::MissingField("message"));
    }
    if request.group_id.is_empty() {
        return Err(GroupError::MissingField("group_id"));
    }
    let identity = sender.to_string();
    let submission = Submission::new(
        &identity,
        &request.idempotency_key,
        "message",
        &[&request.group_id, &request.message],
    )?;
    let transaction = context.store.begin().await?;
    let group = store::lock_group_header(&transaction, &request.group_id, false)
        .await?
        .ok_or_else(|| GroupError::UnknownGroup(group_name(&request.group_id)))?;
    // After the lock, for the reason given in `submit_commit`.
    if let Some(previous) = submission.previous_outcome(&transaction).await? {
        return Ok(previous?.into());
    }
    let is_member = store::find_member(&transaction, group.id, &identity)
        .await?
        .is_some_and(|member| member.removed_at_seq.is_none());
    if !is_member {
        return Err(GroupError::NotAMember(group_name(&request.group_id)));
    }
    let message_epoch = check_application_message(
        &request.message,
        &group.mls_group_id,
        u64::try_from(group.epoch).unwrap_or(0),
        PastEpochWindow(context.config.groups.past_epoch_window),
    )?;
    append_and_commit(
        context,
        transaction,
        &submission,
        LogAppend {
            group_row_id: group.id,
            last_seq: group.last_seq,
            group_epoch: group.epoch,
            message_epoch: to_i64(message_epoch),
            kind: EventKind::Application,
            message: &request.message,
            new_state: None,
        },
    )
    .await
}

/// The newest GroupInfo and tree of a hosted group, for devices of member users
/// only (of any domain).
pub(crate) async fn group_info(
    context: &Context,
    requester: &UserId,
    mls_group_id: &[u8],
) -> Result<(Vec<u8>, Vec<u8>, u64), GroupError> {
    let connection = &context.store;
    let unknown = || GroupError::UnknownGroup(group_name(mls_group_id));
    let group = store::find_hosted_group(connection, mls_group_id)
        .await?
        .ok_or_else(unknown)?;
    // Not a member user: answer as if the group did not exist, so group ids cannot
    // be probed.
    if !store::user_is_member(connection, group.id, &requester.to_string()).await? {
        return Err(unknown());
    }
    let hub_group = load_state(&group)?;
    Ok((
        hub_group.group_info(),
        hub_group.ratchet_tree(),
        hub_group.epoch(),
    ))
}

/// One of the caller's groups.
#[derive(Debug)]
pub(crate) struct GroupSummary {
    pub(crate) mls_group_id: Vec<u8>,
    pub(crate) epoch: u64,
    pub(crate) member_count: u64,
    pub(crate) last_seq: u64,
    pub(crate) acked_seq: u64,
}

pub(crate) async fn list(
    context: &Context,
    device: &AuthenticatedDevice,
) -> Result<Vec<GroupSummary>, GroupError> {
    let connection = &context.store;
    let memberships: Vec<_> = store::memberships_of_device(connection, device.device_id().as_str())
        .await?
        .into_iter()
        .filter(|member| member.removed_at_seq.is_none())
        .collect();
    let headers = store::find_group_headers(
        connection,
        memberships.iter().map(|member| member.group_id).collect(),
    )
    .await?;
    let mut summaries = Vec::with_capacity(headers.len());
    for header in headers {
        let acked_seq = memberships
            .iter()
            .find(|member| member.group_id == header.id)
            .map_or(0, |member| member.acked_seq);
        let member_count = match header.hub_member_count {
            // A follower's copy: the hub knows the whole membership.
            Some(count) => u64::try_from(count).unwrap_or(0),
            None => store::member_count(connection, header.id).await?,
        };
        summaries.push(GroupSummary {
            member_count,
            mls_group_id: header.mls_group_id,
            epoch: u64::try_from(header.epoch).unwrap_or(0),
            last_seq: u64::try_from(header.last_seq).unwrap_or(0),
            acked_seq: u64::try_from(acked_seq).unwrap_or(0),
        });
    }
    Ok(summaries)
}
