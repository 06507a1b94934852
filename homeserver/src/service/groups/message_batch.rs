//! Group commit for application messages: the SendMessage submissions that
//! wait at the same time, to any of the groups hosted here, are judged and
//! written in one transaction (one statement per kind of check for all of
//! them, multi-row inserts, one update of each group's `last_seq`, one commit
//! and fsync), and each caller is answered after that commit.
//!
//! Batches are taken by at most [`LANES`] tasks ("lanes") at once, in this
//! process (one on SQLite). The first submission when a lane is free starts one; a lane takes
//! what is waiting (up to [`MAX_BATCH`] messages, groups oldest first) as one
//! batch, and its next batch is whatever arrived meanwhile, so a lone sender
//! waits for nothing and concurrent senders share fsyncs, in one group or in
//! many. A group is in one batch at a time, so its messages are judged in
//! the order of its batches.
//!
//! How a batch is judged and written: `write_message_batch`.

use super::write_message_batch::{Outcomes, Together, write_group_alone, write_together};
use super::{Accepted, GroupError};
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::rules::hub::PastEpochWindow;
use crate::rules::ids::GroupId;
use crate::service::Clock;
use crate::store::Store;
use std::collections::{HashMap, HashSet, VecDeque};
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
    /// SHA-256 of the message (`log::message_digest`), what replays are
    /// found by.
    pub(super) digest: Vec<u8>,
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

/// Most batches being written at once: two, so one batch's messages gather
/// while the other's transaction commits, and a lane waiting for a group held
/// by a long commit leaves the other lane to everyone else. One on a database
/// that writes one transaction at a time (SQLite): a second lane would only
/// wait for the first in the database's busy handler, which sleeps in steps
/// of up to 100 ms.
const LANES: usize = 2;

/// What waits to be written, and who writes it.
#[derive(Default)]
struct Queues {
    /// Each group's waiting messages, with where to send their outcomes.
    waiting: HashMap<GroupId, Vec<(PendingMessage, Reply)>>,
    /// The groups with waiting messages that no batch holds, in the order
    /// batches take them (oldest first).
    ready: VecDeque<GroupId>,
    /// The groups of the batches being written; their messages that arrive
    /// meanwhile wait for the next batch.
    in_batch: HashSet<GroupId>,
    /// Lanes running.
    lanes: usize,
    /// Most lanes running at once.
    max_lanes: usize,
}

/// The submissions waiting, for every hosted group of this process.
pub(crate) struct MessageBatcher {
    queues: Arc<Mutex<Queues>>,
}

impl MessageBatcher {
    pub(crate) fn new(store: &Store) -> MessageBatcher {
        let max_lanes = if store.writes_one_at_a_time() {
            1
        } else {
            LANES
        };
        MessageBatcher {
            queues: Arc::new(Mutex::new(Queues {
                max_lanes,
                ..Queues::default()
            })),
        }
    }

    /// Queues `message` for `group_id`'s next batch and waits for its outcome.
    pub(super) async fn submit(
        &self,
        environment: impl FnOnce() -> BatchEnvironment,
        group_id: GroupId,
        message: PendingMessage,
    ) -> Result<Accepted, GroupError> {
        let (reply, outcome) = oneshot::channel();
        let start_lane = {
            let mut queues = lock(&self.queues);
            let waiting = queues.waiting.entry(group_id.clone()).or_default();
            let was_empty = waiting.is_empty();
            waiting.push((message, reply));
            if was_empty && !queues.in_batch.contains(&group_id) {
                queues.ready.push_back(group_id);
            }
            let start = queues.lanes < queues.max_lanes && !queues.ready.is_empty();
            if start {
                queues.lanes += 1;
            }
            start
        };
        if start_lane {
            Lane::start(self.queues.clone(), environment());
        }
        // The sender side is dropped unanswered only if the lane died (a
        // panic, see `Drop for Lane`): whether the batch committed is unknown,
        // and a retry with the same idempotency key finds out.
        outcome
            .await
            .unwrap_or(Err(GroupError::SubmissionInterrupted))
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The queues are consistent at every await-free step; a panic elsewhere
    // while holding them cannot leave them half-changed.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One group's part of a batch.
struct GroupBatch {
    group_id: GroupId,
    messages: Vec<PendingMessage>,
    replies: Vec<Reply>,
}

/// One of the tasks that take batches and write them.
struct Lane {
    queues: Arc<Mutex<Queues>>,
    /// The groups of the batch being written.
    holding: Vec<GroupId>,
    /// Ended by finding nothing to do: nothing for `Drop` to undo.
    finished: bool,
}

impl Lane {
    /// Runs a lane already counted in `lanes`.
    fn start(queues: Arc<Mutex<Queues>>, environment: BatchEnvironment) {
        let lane = Lane {
            queues,
            holding: Vec::new(),
            finished: false,
        };
        tokio::spawn(lane.run(environment));
    }

    async fn run(mut self, environment: BatchEnvironment) {
        loop {
            let batch = {
                let mut queues = lock(&self.queues);
                let batch = take_batch(&mut queues);
                if batch.is_empty() {
                    queues.lanes -= 1;
                    self.finished = true;
                    return;
                }
                self.holding = batch.iter().map(|part| part.group_id.clone()).collect();
                batch
            };
            self.write(&environment, batch).await;
        }
    }

    /// Writes one batch: what the shared transaction judged is answered and
    /// given back at once, then each group it left (held elsewhere) is taken
    /// alone, in turn.
    async fn write(&mut self, environment: &BatchEnvironment, batch: Vec<GroupBatch>) {
        let groups: Vec<(&GroupId, &[PendingMessage])> = batch
            .iter()
            .map(|part| (&part.group_id, part.messages.as_slice()))
            .collect();
        let together = write_together(environment, &groups).await;
        let mut left = Vec::new();
        for (part, together) in batch.into_iter().zip(together) {
            match together {
                Together::Done(outcomes) => {
                    self.answer(environment, part.group_id, part.replies, outcomes);
                }
                Together::Alone(failed) => left.push((part, failed)),
            }
        }
        let mut server_failing = false;
        for (part, failed) in left {
            let outcomes = if server_failing {
                part.messages
                    .iter()
                    .map(|_| Err(GroupError::SubmissionInterrupted))
                    .collect()
            } else {
                let alone =
                    write_group_alone(environment, &part.group_id, &part.messages, failed).await;
                server_failing = alone.server_failing;
                alone.outcomes
            };
            self.answer(environment, part.group_id, part.replies, outcomes);
        }
    }

    /// Answers a group's callers and gives the group back for its next
    /// batch. Messages that came for it meanwhile are ready now, and no
    /// submission may come to start a lane for them while this one waits for
    /// a held group: a free lane starts here.
    fn answer(
        &mut self,
        environment: &BatchEnvironment,
        group_id: GroupId,
        replies: Vec<Reply>,
        outcomes: Outcomes,
    ) {
        for (reply, outcome) in replies.into_iter().zip(outcomes) {
            // A caller that went away no longer waits; its message stands.
            let _ = reply.send(outcome);
        }
        self.holding.retain(|held| *held != group_id);
        let start_lane = {
            let mut queues = lock(&self.queues);
            release(&mut queues, [group_id]);
            let start = queues.lanes < queues.max_lanes && !queues.ready.is_empty();
            if start {
                queues.lanes += 1;
            }
            start
        };
        if start_lane {
            Lane::start(self.queues.clone(), environment.clone());
        }
    }
}

impl Drop for Lane {
    /// A lane that ends otherwise than by finding nothing to do (a panic, or
    /// the runtime shutting down) answers UNAVAILABLE (retry with the same
    /// key: whether the batch committed is unknown) to the callers of the
    /// groups it held, those waiting included, and, when no lane is left, to
    /// every caller waiting: none would take them. The next submission starts
    /// a lane again.
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let mut queues = lock(&self.queues);
        queues.lanes -= 1;
        for group_id in self.holding.drain(..) {
            queues.in_batch.remove(&group_id);
            // Dropping the replies answers their callers.
            queues.waiting.remove(&group_id);
        }
        if queues.lanes == 0 {
            queues.waiting.clear();
            queues.ready.clear();
        }
    }
}

/// Takes what is waiting, groups oldest first, up to [`MAX_BATCH`] messages
/// (a group's remainder waits for its next batch).
fn take_batch(queues: &mut Queues) -> Vec<GroupBatch> {
    let mut batch = Vec::new();
    let mut room = MAX_BATCH;
    while room > 0 {
        let Some(group_id) = queues.ready.pop_front() else {
            break;
        };
        let Some(waiting) = queues.waiting.get_mut(&group_id) else {
            continue;
        };
        let take = waiting.len().min(room);
        room -= take;
        let (messages, replies) = waiting.drain(..take).unzip();
        queues.in_batch.insert(group_id.clone());
        batch.push(GroupBatch {
            group_id,
            messages,
            replies,
        });
    }
    batch
}

/// Ends these groups' batch: those with messages waiting are ready for the
/// next one.
fn release(queues: &mut Queues, group_ids: impl IntoIterator<Item = GroupId>) {
    for group_id in group_ids {
        queues.in_batch.remove(&group_id);
        match queues.waiting.get(&group_id) {
            Some(waiting) if !waiting.is_empty() => queues.ready.push_back(group_id),
            _ => {
                queues.waiting.remove(&group_id);
            }
        }
    }
}
