//! Group commit for application messages: the SendMessage submissions to one
//! hosted group that wait at the same time are judged and written in one
//! transaction (one lock of the group's row, one statement per check for all
//! of them, multi-row inserts, one update of the group's `last_seq`, one
//! commit and fsync), and each caller is answered after that commit.
//!
//! One worker task per group with submissions waiting, in this process: the
//! first submission to an idle group starts it; it takes everything waiting
//! (up to [`MAX_BATCH`]) as one batch, and the next batch is whatever arrived
//! meanwhile, so a lone sender waits for nothing and concurrent senders share
//! fsyncs. Replicas of a cluster each batch their own submissions; the group's
//! row lock orders their transactions as it orders single ones.

use super::log::message_digest;
use super::{Accepted, GroupError};
use crate::metrics::Metrics;
use crate::notify::{Notifier, Topic};
use crate::rules::hub::{PastEpochWindow, check_application_message};
use crate::rules::ids::{Epoch, GroupId, GroupKey, Seq};
use crate::service::Clock;
use crate::service::idempotency::IdempotencyError;
use crate::store::{self, EventKind, Hosting, NewEvent, Store, StoreError, SubmissionRecord};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// Most submissions per batch: bounds a transaction's length (and so the wait
/// of the submissions that arrive during it).
const MAX_BATCH: usize = 256;

/// An application message that passed the checks needing no database, waiting
/// for its group's batch.
pub(super) struct PendingMessage {
    /// The sender's credential identity.
    pub(super) identity: String,
    pub(super) idempotency_key: Vec<u8>,
    /// SHA-256 of the request (`idempotency::Submission::request_hash`).
    pub(super) request_hash: Vec<u8>,
    pub(super) message: Vec<u8>,
    /// W3C `traceparent` of the submitting request, kept for the outbox.
    pub(super) trace_parent: Option<String>,
}

/// What a batch's worker needs from the context: owned, since the worker
/// outlives the request that started it.
#[derive(Clone)]
pub(super) struct BatchEnvironment {
    pub(super) store: Store,
    pub(super) notifier: Arc<dyn Notifier>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) past_epoch_window: PastEpochWindow,
    /// Whether federation is on (only then can a group have followers).
    pub(super) federation: bool,
}

type Reply = oneshot::Sender<Result<Accepted, GroupError>>;

/// Each group's waiting messages, with where to send their outcomes.
type Queues = Arc<Mutex<HashMap<GroupId, Vec<(PendingMessage, Reply)>>>>;

/// The submissions waiting per group; a group has an entry exactly while its
/// worker runs.
#[derive(Default)]
pub(crate) struct MessageBatcher {
    queues: Queues,
}

impl MessageBatcher {
    /// Queues `message` for `group_id`'s next batch and waits for its outcome.
    pub(super) async fn submit(
        &self,
        environment: impl FnOnce() -> BatchEnvironment,
        group_id: GroupId,
        message: PendingMessage,
    ) -> Result<Accepted, GroupError> {
        let (reply, outcome) = oneshot::channel();
        let start_worker = {
            let mut queues = lock(&self.queues);
            match queues.get_mut(&group_id) {
                Some(waiting) => {
                    waiting.push((message, reply));
                    false
                }
                None => {
                    queues.insert(group_id.clone(), vec![(message, reply)]);
                    true
                }
            }
        };
        if start_worker {
            let worker = Worker {
                queues: self.queues.clone(),
                group_id: group_id.clone(),
            };
            tokio::spawn(worker.run(environment()));
        }
        // The sender side is dropped unanswered only if the worker died (a
        // panic): whether the batch committed is unknown, and a retry with the
        // same idempotency key finds out.
        outcome
            .await
            .unwrap_or(Err(GroupError::SubmissionInterrupted))
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The map is consistent at every await-free step; a panic elsewhere while
    // holding it cannot leave it half-changed.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The one worker of a group's queue.
struct Worker {
    queues: Queues,
    group_id: GroupId,
}

impl Worker {
    async fn run(self, environment: BatchEnvironment) {
        loop {
            let batch = {
                let mut queues = lock(&self.queues);
                let Some(waiting) = queues.get_mut(&self.group_id) else {
                    return;
                };
                if waiting.is_empty() {
                    queues.remove(&self.group_id);
                    return;
                }
                let take = waiting.len().min(MAX_BATCH);
                waiting.drain(..take).collect::<Vec<_>>()
            };
            let (messages, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
            let outcomes = apply(&environment, &self.group_id, &messages).await;
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                // A caller that went away no longer waits; its message stands.
                let _ = reply.send(outcome);
            }
        }
    }
}

impl Drop for Worker {
    /// A worker that ends by a panic gives its queue up (its waiting callers
    /// get UNAVAILABLE), so the group's next submission starts a new worker.
    fn drop(&mut self) {
        if std::thread::panicking() {
            lock(&self.queues).remove(&self.group_id);
        }
    }
}

/// Judges and writes one batch, one outcome per message in order. Should the
/// batch's transaction fail as a whole, each message is tried again alone, so
/// no message's failure is another's; but once a message alone fails inside
/// the server (the database is down, not the message), the rest are answered
/// UNAVAILABLE at once (retry with the same key) instead of each waiting out
/// the database's timeouts in turn.
async fn apply(
    environment: &BatchEnvironment,
    group_id: &GroupId,
    messages: &[PendingMessage],
) -> Vec<Result<Accepted, GroupError>> {
    match apply_in_one_transaction(environment, group_id, messages).await {
        Ok(outcomes) => outcomes,
        Err(error) if messages.len() == 1 => vec![Err(error)],
        Err(_) => {
            let mut outcomes = Vec::with_capacity(messages.len());
            let mut server_failing = false;
            for message in messages {
                if server_failing {
                    outcomes.push(Err(GroupError::SubmissionInterrupted));
                    continue;
                }
                let alone =
                    apply_in_one_transaction(environment, group_id, std::slice::from_ref(message))
                        .await
                        .and_then(|mut outcomes| {
                            outcomes.pop().ok_or(GroupError::SubmissionInterrupted)
                        })
                        .and_then(|outcome| outcome);
                server_failing =
                    matches!(alone, Err(GroupError::Store(_) | GroupError::Internal(_)));
                outcomes.push(alone);
            }
            outcomes
        }
    }
}

/// A message of the batch, judged.
enum Verdict {
    /// Answered without a write (an earlier outcome, or a rejection).
    Answered(Result<Accepted, GroupError>),
    /// To be appended at this position.
    Append(Seq),
}

/// One transaction for the whole batch; `Err` only for what fails the batch
/// as a whole (the group is unknown to every message alike, or the database).
async fn apply_in_one_transaction(
    environment: &BatchEnvironment,
    group_id: &GroupId,
    messages: &[PendingMessage],
) -> Result<Vec<Result<Accepted, GroupError>>, GroupError> {
    let transaction = environment.store.begin().await?;
    let Some(group) = store::lock_group_header(&transaction, group_id, Hosting::HostedHere).await?
    else {
        return Ok(messages
            .iter()
            .map(|_| Err(GroupError::UnknownGroup(group_id.clone())))
            .collect());
    };
    // Every look-up after the lock (see `submit_proposal`), each one statement
    // for the whole batch.
    let keys: Vec<(&str, &[u8])> = messages
        .iter()
        .map(|message| {
            (
                message.identity.as_str(),
                message.idempotency_key.as_slice(),
            )
        })
        .collect();
    let mut recorded: HashMap<(String, Vec<u8>), (Vec<u8>, Accepted)> =
        store::find_submissions(&transaction, &keys)
            .await?
            .into_iter()
            .map(|record| {
                let accepted = Accepted {
                    seq: record.seq,
                    epoch: record.epoch,
                };
                (
                    (record.identity, record.idempotency_key),
                    (record.request_hash, accepted),
                )
            })
            .collect();
    let identities: Vec<&str> = messages
        .iter()
        .map(|message| message.identity.as_str())
        .collect();
    let members: HashSet<String> =
        store::current_members_among(&transaction, group.key, &identities)
            .await?
            .into_iter()
            .collect();
    let digests: Vec<Vec<u8>> = messages
        .iter()
        .map(|message| message_digest(&message.message))
        .collect();
    let mut logged: HashMap<Vec<u8>, Seq> =
        store::find_events_by_digests(&transaction, group.key, &digests)
            .await?
            .into_iter()
            .collect();

    let now_ms = environment.clock.now_ms();
    let mut last_seq = group.last_seq;
    let mut verdicts = Vec::with_capacity(messages.len());
    let mut events = Vec::new();
    let mut records = Vec::new();
    for (message, digest) in messages.iter().zip(&digests) {
        // The same order of checks as a submission alone: idempotency first (a
        // retry gets its first outcome, also one accepted earlier in this
        // batch), then membership, the message, and replays.
        let key = (message.identity.clone(), message.idempotency_key.clone());
        if let Some((request_hash, accepted)) = recorded.get(&key) {
            let answer = if *request_hash == message.request_hash {
                Ok(*accepted)
            } else {
                Err(IdempotencyError::ReusedWithDifferentBody.into())
            };
            verdicts.push(Verdict::Answered(answer));
            continue;
        }
        if !members.contains(&message.identity) {
            verdicts.push(Verdict::Answered(Err(GroupError::NotAMember(
                group.group_id.clone(),
            ))));
            continue;
        }
        let message_epoch = match check_application_message(
            &message.message,
            group.group_id.as_bytes(),
            group.epoch.get(),
            environment.past_epoch_window,
        ) {
            Ok(epoch) => Epoch::new(epoch),
            Err(rejection) => {
                verdicts.push(Verdict::Answered(Err(rejection.into())));
                continue;
            }
        };
        if let Some(&seq) = logged.get(digest) {
            verdicts.push(Verdict::Answered(Err(GroupError::Replayed { seq })));
            continue;
        }
        let seq = last_seq.next();
        last_seq = seq;
        logged.insert(digest.clone(), seq);
        let accepted = Accepted {
            seq,
            epoch: group.epoch,
        };
        recorded.insert(key, (message.request_hash.clone(), accepted));
        events.push(NewEvent {
            group: group.key,
            seq,
            kind: EventKind::Application,
            epoch: message_epoch,
            sender_identity: &message.identity,
            message: &message.message,
            now_ms,
            trace_parent: message.trace_parent.clone(),
            message_digest: Some(digest.clone()),
        });
        records.push(SubmissionRecord {
            identity: message.identity.clone(),
            idempotency_key: message.idempotency_key.clone(),
            request_hash: message.request_hash.clone(),
            group: group.key,
            seq,
            epoch: group.epoch,
            created_at_ms: now_ms,
        });
        verdicts.push(Verdict::Append(seq));
    }

    let appended = events.len();
    if appended > 0 {
        store::append_events(&transaction, events).await?;
        store::insert_submissions(&transaction, records).await?;
        store::update_group(&transaction, group.key, group.epoch, last_seq, None).await?;
        transaction.commit().await?;
        for _ in 0..appended {
            environment.metrics.count_accepted(EventKind::Application);
        }
        environment.notifier.publish(&Topic::Group(group.key));
        wake_outbox_if_followed(environment, group.key).await;
    }
    Ok(verdicts
        .into_iter()
        .map(|verdict| match verdict {
            Verdict::Answered(answer) => answer,
            Verdict::Append(seq) => Ok(Accepted {
                seq,
                epoch: group.epoch,
            }),
        })
        .collect())
}

/// Wakes the federation outbox if the group has follower domains. After the
/// commit, so a failure here must not turn accepted messages into errors: the
/// outbox's own poll delivers them a little later.
async fn wake_outbox_if_followed(environment: &BatchEnvironment, group: GroupKey) {
    if !environment.federation {
        return;
    }
    match store::has_followers(&environment.store, group).await {
        Ok(true) => environment.notifier.publish(&Topic::Outbox),
        Ok(false) => {}
        Err(error) => log_lost_wake_up(&error),
    }
}

fn log_lost_wake_up(error: &StoreError) {
    tracing::warn!(%error, "could not look up a group's followers to wake the outbox; its poll will send the new messages");
}
