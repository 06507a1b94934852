//! SubmitCommit: the one commit that ends the group's current epoch. New leaves
//! of other domains are vouched for by their homeservers first, asked without
//! holding the group's lock; then the commit is judged, and what its plan
//! decided is written in one transaction.

use super::super::Context;
use super::super::idempotency::{Outcome, Submission};
use super::super::remote_leaves::{self, VouchedLeaves};
use super::commit_effects::{PlannedWelcomes, apply_plan, check_local_leaves};
use super::log::{lost_epoch, message_digest, wake_outbox_if_followed};
use super::state_cache::{
    TakenState, keep_committed, keep_unchanged, lock_hosted_header, take_state,
};
use super::{Accepted, GroupError};
use crate::notify::Topic;
use crate::rules::hub::{
    CommitDecision, CommitSubmission, HubGroup, HubRejection, NewLeaf, StatePosition,
    check_group_size, plan_commit,
};
use crate::rules::ids::{Epoch, GroupId, Seq};
use crate::store::{self, EventKind, GroupHeader, NewEvent, NewState, Transaction};
use conclave_core::ids::CredentialIdentity;

pub(crate) struct NewCommit {
    pub(crate) idempotency_key: Vec<u8>,
    pub(crate) group_id: GroupId,
    pub(crate) commit: Vec<u8>,
    pub(crate) welcome: Option<Vec<u8>>,
    pub(crate) group_info: Vec<u8>,
}

/// Rounds of "ask the remote domains, judge again" before giving up.
const MAX_COMMIT_ATTEMPTS: usize = 3;

/// Accepts a commit for the group's current epoch, or explains why not. `sender`
/// is the authenticated submitting device: one of this homeserver's, or one a
/// follower domain's homeserver authenticated and relayed.
///
/// # Metrics
/// A commit refused because another commit ended its epoch counts once in
/// `conclave_commit_conflicts_total`, here on the hub, whether its device is
/// local or relayed by a follower domain (which does not count it again). A
/// proposal for an ended epoch is refused the same way but is not a commit
/// and is not counted.
pub(crate) async fn submit_commit(
    context: &Context,
    sender: &CredentialIdentity,
    request: NewCommit,
) -> Result<Accepted, GroupError> {
    let result = judge_and_accept(context, sender, request).await;
    if let Err(GroupError::CommitConflict { .. }) = result {
        context.metrics.commit_conflicts.inc();
    }
    result
}

/// [`submit_commit`], before its outcome is counted.
async fn judge_and_accept(
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
    // A group that keeps changing while the remote domains are asked gets a
    // few tries.
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

enum CommitAttempt {
    Accepted(Accepted),
    /// The commit has leaves of other domains not vouched for yet.
    AskRemoteDomains {
        added: Vec<NewLeaf>,
        changed: Vec<NewLeaf>,
    },
}

/// One attempt: judge the commit under the group's lock and, if nothing needs
/// asking elsewhere first, accept it.
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
            request.group_id.as_bytes(),
            &request.commit,
            &[u8::from(request.welcome.is_some())],
            welcome,
            &request.group_info,
        ],
    )?;
    let transaction = context.store.begin().await?;
    // The idempotency check comes after the lock: a retry racing its original
    // then waits for it and finds its outcome, instead of being judged on its own.
    let group = lock_hosted_header(&transaction, &request.group_id).await?;
    if let Some(previous) = submission.previous_outcome(&transaction).await? {
        return Ok(CommitAttempt::Accepted(previous?.into()));
    }
    let state = take_state(context, &transaction, &group).await?;
    let judgement = judge(
        context,
        &transaction,
        sender,
        request,
        vouched,
        &group,
        &state,
    )
    .await;
    let decision = match judgement {
        Ok(Judgement::Accept(decision)) => decision,
        Ok(Judgement::AskRemoteDomains { added, changed }) => {
            keep_unchanged(context, &group, state);
            return Ok(CommitAttempt::AskRemoteDomains { added, changed });
        }
        Err(error) => {
            keep_unchanged(context, &group, state);
            return Err(error);
        }
    };
    let judged = Judged {
        group,
        hub_group: state.group,
        decision,
    };
    let accepted = accept(context, transaction, &submission, request, sender, judged).await?;
    Ok(CommitAttempt::Accepted(accepted))
}

/// What the checks of one attempt concluded.
enum Judgement {
    Accept(CommitDecision),
    AskRemoteDomains {
        added: Vec<NewLeaf>,
        changed: Vec<NewLeaf>,
    },
}

/// Every check of a commit against the group's state and the database, changing
/// neither.
async fn judge(
    context: &Context,
    transaction: &Transaction,
    sender: &CredentialIdentity,
    request: &NewCommit,
    vouched: &VouchedLeaves,
    group: &GroupHeader,
    state: &TakenState,
) -> Result<Judgement, GroupError> {
    let decision = match state.group.check_commit(&CommitSubmission {
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
            let lost = "commit";
            return Err(
                lost_epoch(transaction, group.key, lost, message_epoch, current_epoch).await?,
            );
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
        return Ok(Judgement::AskRemoteDomains { added, changed });
    }
    check_local_leaves(context, transaction, &decision).await?;
    // Counted in the tree, the group's size as MLS knows it: no statement.
    check_group_size(
        state.group.member_count(),
        &decision,
        context.config.groups.max_members,
    )?;
    Ok(Judgement::Accept(decision))
}

/// A commit that passed every check, with the group it was judged against.
struct Judged {
    group: GroupHeader,
    hub_group: HubGroup,
    decision: CommitDecision,
}

/// Writes an accepted commit: the epoch's one commit, the log entry, the new
/// state, what the commit's plan decided and the idempotency record, in the
/// transaction; then wakes the subscribers and, if concerned, the outbox.
async fn accept(
    context: &Context,
    transaction: Transaction,
    submission: &Submission<'_>,
    request: &NewCommit,
    sender: &CredentialIdentity,
    judged: Judged,
) -> Result<Accepted, GroupError> {
    let Judged {
        group,
        mut hub_group,
        decision,
    } = judged;
    let seq = group.last_seq.next();
    let now_ms = context.now_ms();
    let plan = plan_commit(
        &decision,
        sender,
        &context.domain,
        request.welcome.is_some(),
    );
    let new_epoch = Epoch::new(decision.new_epoch);
    // Twice below, CPU work on the group runs while the database answers a
    // statement that does not need it: `biased` sends the statement first,
    // and the work runs in the wait. The merge and serialisation overlap the
    // epoch's commit row (the log entry is sent after), the tree's export the
    // state's UPDATE. At 1,000 members this and the size counted in the tree
    // took about 0.3 ms off a commit's 11.8 (BENCHMARKS.md, "CPU work in the
    // database's wait"); the tree is exported now only for follower domains.
    let (logged, merged) = tokio::join!(
        biased;
        log_commit(context, &transaction, submission, request, &group, seq, now_ms),
        async {
            hub_group.apply_commit(decision)?;
            Ok::<_, GroupError>(hub_group.to_state())
        },
    );
    logged?;
    let state = merged?;
    let state_len = state.len();
    // A commit adding devices here stores the new state once, in its
    // Welcome's row, which their ratchet tree is exported from when they read
    // it: at 1,000 members that is one 210 KB write instead of two (and no
    // tree to export here).
    let welcome = request.welcome.as_deref();
    let shared_welcome = welcome.filter(|_| !plan.welcome_recipients.is_empty());
    let (new_state, welcome_state) = match shared_welcome {
        Some(_) => (NewState::BesideWelcome(seq), Some(state)),
        None => (NewState::InRow(state), None),
    };
    // Follower domains get the tree itself.
    let needs_tree = welcome.is_some() && !plan.joined_domains.is_empty();
    let (updated, ratchet_tree) = tokio::join!(
        biased;
        store::update_group(&transaction, group.key, new_epoch, seq, new_state),
        async { needs_tree.then(|| hub_group.ratchet_tree()) },
    );
    updated?;
    if let Some(previous) = group.state_welcome_seq {
        store::release_state_holder(&transaction, group.key, previous).await?;
    }
    let welcomes = PlannedWelcomes {
        shared: shared_welcome.zip(welcome_state.as_deref()),
        remote: welcome.zip(ratchet_tree.as_deref()),
    };
    apply_plan(context, &transaction, group.key, seq, &plan, welcomes).await?;
    let outcome = Outcome {
        group: group.key,
        seq,
        epoch: new_epoch,
    };
    submission.record(&transaction, outcome, now_ms).await?;
    transaction.commit().await?;
    let position = StatePosition {
        epoch: new_epoch,
        seq,
    };
    keep_committed(context, &group, position, hub_group, state_len);
    context.metrics.count_accepted(EventKind::Commit);

    context.notifier.publish(&Topic::Group(group.key));
    for recipient in &plan.welcome_recipients {
        let device_id = recipient.device_id().as_str().to_owned();
        context.notifier.publish(&Topic::Inbox(device_id));
    }
    if plan.concerns_followers() {
        context.notifier.publish(&Topic::Outbox);
    } else {
        wake_outbox_if_followed(context, group.key).await?;
    }
    tracing::debug!(group = %group.group_id, %seq, epoch = %new_epoch, committer = %submission.identity, "commit accepted");
    Ok(outcome.into())
}

/// The commit's entries: the one commit that ends the epoch, and its log entry
/// at `seq`.
async fn log_commit(
    context: &Context,
    transaction: &Transaction,
    submission: &Submission<'_>,
    request: &NewCommit,
    group: &GroupHeader,
    seq: Seq,
    now_ms: i64,
) -> Result<(), GroupError> {
    let ended_epoch = group.epoch;
    if !store::insert_commit(transaction, group.key, ended_epoch, seq).await? {
        // The row lock makes this unreachable in practice; the primary key is the
        // guarantee if the lock is ever bypassed.
        let (lost, epoch) = ("commit", ended_epoch.get());
        return Err(lost_epoch(transaction, group.key, lost, epoch, epoch).await?);
    }
    store::append_event(
        transaction,
        NewEvent {
            group: group.key,
            seq,
            kind: EventKind::Commit,
            epoch: ended_epoch,
            sender_identity: submission.identity,
            message: &request.commit,
            now_ms,
            trace_parent: context.trace_parent_for_outbox(),
            // No lookup first: a commit's bytes end their epoch, so the same
            // bytes again are refused as stale (ABORTED) before this point.
            message_digest: Some(message_digest(&request.commit)),
        },
    )
    .await?;
    Ok(())
}
