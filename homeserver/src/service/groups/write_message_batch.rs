//! Writes one batch of application messages (`message_batch`), to one group
//! or several, in one transaction: the groups' rows locked, one statement per
//! kind of look-up for all the messages, each message judged in the order of
//! checks of a submission alone, multi-row inserts, one update of each group's
//! `last_seq`, one commit.
//!
//! The batch locks its groups' rows without waiting (`FOR UPDATE SKIP
//! LOCKED`): a group whose row another transaction holds (a commit being
//! applied, another replica's batch, or on PostgreSQL any transaction adding
//! rows that refer to the group, which holds `FOR KEY SHARE` on it) is left to
//! a transaction of its own, which waits for the lock as a single submission
//! would, after the rest are answered; so a slow commit in one group never
//! holds up another group's messages, and two batches cannot deadlock. A
//! group not hosted here is answered at once.

use super::message_batch::{BatchEnvironment, PendingMessage};
use super::{Accepted, GroupError};
use crate::notify::Topic;
use crate::rules::hub::check_application_message;
use crate::rules::ids::{Epoch, GroupId, GroupKey, Seq};
use crate::service::idempotency::IdempotencyError;
use crate::store::{self, EventKind, GroupHeader, Hosting, NewEvent, StoreError, SubmissionRecord};
use std::collections::{HashMap, HashSet};

/// One group's outcomes, one per message in order.
pub(super) type Outcomes = Vec<Result<Accepted, GroupError>>;

/// What the batch's shared transaction made of one group's messages.
pub(super) enum Together {
    /// Judged (and the accepted ones committed), or refused as a group not
    /// hosted here.
    Done(Outcomes),
    /// Left for a transaction of the group's own ([`write_group_alone`]): its
    /// row was held elsewhere, or the shared transaction failed (`Some` when
    /// it was this group's alone, so it is not tried whole again).
    Alone(Option<GroupError>),
}

/// Judges and writes what it can of one batch in one transaction: one
/// [`Together`] per group, in order. The caller answers the groups done at
/// once and then takes the others alone, so a group held by a long commit
/// holds up no other group's answers.
pub(super) async fn write_together(
    environment: &BatchEnvironment,
    groups: &[(&GroupId, &[PendingMessage])],
) -> Vec<Together> {
    // One group's row is waited for at once: alone it cannot deadlock, and a
    // transaction that skipped it would only be followed by one that waits.
    let locking = if groups.len() == 1 {
        Locking::Wait
    } else {
        Locking::SkipHeld
    };
    match apply_in_one_transaction(environment, groups, locking).await {
        Ok(judged) => judged
            .into_iter()
            .zip(groups)
            .map(|(judged, &(group_id, messages))| match judged {
                Judged::Outcomes(outcomes) => Together::Done(outcomes),
                Judged::NotHostedHere => Together::Done(unknown(group_id, messages.len())),
                Judged::Held => Together::Alone(None),
            })
            .collect(),
        // Tried whole again alone only if the batch held other groups too.
        Err(error) if groups.len() == 1 => vec![Together::Alone(Some(error))],
        Err(_) => groups.iter().map(|_| Together::Alone(None)).collect(),
    }
}

fn unknown(group_id: &GroupId, count: usize) -> Outcomes {
    (0..count)
        .map(|_| Err(GroupError::UnknownGroup(group_id.clone())))
        .collect()
}

/// A group's batch taken alone, and whether the database failed it.
pub(super) struct AloneOutcomes {
    pub(super) outcomes: Outcomes,
    /// A message alone failed inside the server (the database is down, not
    /// the message): the caller answers the groups after it UNAVAILABLE at
    /// once instead of each waiting out the database's timeouts in turn.
    pub(super) server_failing: bool,
}

/// One group's messages in a transaction of their own, waiting for the
/// group's lock (unless such a transaction just failed: `failed`). Should that
/// fail as a whole, each message is tried again alone, so no message's failure
/// is another's; but once a message alone fails inside the server, the rest
/// are answered UNAVAILABLE at once (retry with the same key).
pub(super) async fn write_group_alone(
    environment: &BatchEnvironment,
    group_id: &GroupId,
    messages: &[PendingMessage],
    failed: Option<GroupError>,
) -> AloneOutcomes {
    let failed = match failed {
        Some(error) => error,
        None => match apply_in_one_transaction(environment, &[(group_id, messages)], Locking::Wait)
            .await
        {
            Ok(judged) => {
                return AloneOutcomes {
                    outcomes: judged_alone(group_id, messages.len(), judged),
                    server_failing: false,
                };
            }
            Err(error) => error,
        },
    };
    if messages.len() == 1 {
        return AloneOutcomes {
            server_failing: is_server_failure(&failed),
            outcomes: vec![Err(failed)],
        };
    }
    let mut outcomes = Vec::with_capacity(messages.len());
    let mut server_failing = false;
    for message in messages {
        if server_failing {
            outcomes.push(Err(GroupError::SubmissionInterrupted));
            continue;
        }
        let alone = [(group_id, std::slice::from_ref(message))];
        let outcome = match apply_in_one_transaction(environment, &alone, Locking::Wait).await {
            Ok(judged) => judged_alone(group_id, 1, judged)
                .pop()
                .unwrap_or(Err(GroupError::SubmissionInterrupted)),
            Err(error) => Err(error),
        };
        server_failing = matches!(&outcome, Err(error) if is_server_failure(error));
        outcomes.push(outcome);
    }
    AloneOutcomes {
        outcomes,
        server_failing,
    }
}

/// The outcomes of a transaction of one group's `count` messages.
fn judged_alone(group_id: &GroupId, count: usize, mut judged: Vec<Judged>) -> Outcomes {
    match judged.pop() {
        Some(Judged::Outcomes(outcomes)) => outcomes,
        // A waiting lock finds every group hosted here.
        Some(Judged::NotHostedHere | Judged::Held) | None => unknown(group_id, count),
    }
}

fn is_server_failure(error: &GroupError) -> bool {
    matches!(error, GroupError::Store(_) | GroupError::Internal(_))
}

/// How a batch's transaction takes its groups' row locks.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Locking {
    /// Only rows no other transaction holds, without waiting (a batch of
    /// several groups).
    SkipHeld,
    /// Waiting for the row (one group taken alone).
    Wait,
}

/// A message of the batch, judged.
enum Verdict {
    /// Answered without a write (an earlier outcome, or a rejection).
    Answered(Result<Accepted, GroupError>),
    /// To be appended at this position; the message's own epoch.
    Append { seq: Seq, message_epoch: Epoch },
}

/// What the batch's look-ups found, for every group of it.
struct Found {
    /// Outcomes recorded per `(identity, idempotency key)`, with the request's
    /// hash; a message accepted in this batch is added as it is judged.
    recorded: HashMap<(String, Vec<u8>), (Vec<u8>, Accepted)>,
    /// The `(group, identity)` pairs that are current members.
    members: HashSet<(GroupKey, String)>,
    /// Where each `(group, digest)` is logged; a message accepted in this
    /// batch is added as it is judged.
    logged: HashMap<(GroupKey, Vec<u8>), Seq>,
}

/// What one transaction made of one group's messages.
enum Judged {
    Outcomes(Outcomes),
    /// No group of that id is hosted here (unknown, or a follower's copy).
    NotHostedHere,
    /// Hosted here, but its row was held by another transaction
    /// ([`Locking::SkipHeld`] only).
    Held,
}

/// One transaction for the batch: what it made of each group. `Err` only for
/// what fails the batch as a whole (the database).
async fn apply_in_one_transaction(
    environment: &BatchEnvironment,
    groups: &[(&GroupId, &[PendingMessage])],
    locking: Locking,
) -> Result<Vec<Judged>, GroupError> {
    let transaction = environment.store.begin().await?;
    let headers = match locking {
        Locking::Wait => {
            let mut headers = Vec::new();
            for &(group_id, _) in groups {
                headers.extend(
                    store::lock_group_header(&transaction, group_id, Hosting::HostedHere).await?,
                );
            }
            headers
        }
        Locking::SkipHeld => {
            let ids: Vec<GroupId> = groups
                .iter()
                .map(|&(group_id, _)| group_id.clone())
                .collect();
            store::lock_unheld_hosted_group_headers(&transaction, &ids).await?
        }
    };
    let mut locked: HashMap<GroupId, GroupHeader> = headers
        .into_iter()
        .map(|header| (header.group_id.clone(), header))
        .collect();
    let group_ids: Vec<&GroupId> = groups.iter().map(|&(group_id, _)| group_id).collect();
    let groups: Vec<(Option<GroupHeader>, &[PendingMessage])> = groups
        .iter()
        .map(|&(group_id, messages)| (locked.remove(group_id), messages))
        .collect();
    // Told apart only when some group was not locked (rare): held elsewhere,
    // or not hosted here at all (answered now, not taken alone).
    let unlocked: Vec<GroupId> = groups
        .iter()
        .zip(&group_ids)
        .filter(|((header, _), _)| header.is_none())
        .map(|(_, group_id)| (*group_id).clone())
        .collect();
    let hosted_but_held = if unlocked.is_empty() || locking == Locking::Wait {
        HashSet::new()
    } else {
        store::hosted_group_ids(&transaction, &unlocked).await?
    };
    let not_locked = |group_id: &GroupId| {
        if hosted_but_held.contains(group_id) {
            Judged::Held
        } else {
            Judged::NotHostedHere
        }
    };
    if groups.iter().all(|(header, _)| header.is_none()) {
        return Ok(group_ids.into_iter().map(not_locked).collect());
    }
    // Every look-up after the locks (see `submit_proposal`).
    let mut found = look_up(&transaction, &groups).await?;

    let now_ms = environment.clock.now_ms();
    let mut judged = Vec::with_capacity(groups.len());
    let mut events = Vec::new();
    let mut records = Vec::new();
    let mut moved = Vec::new();
    for ((header, messages), group_id) in groups.iter().zip(group_ids) {
        let Some(group) = header else {
            judged.push(not_locked(group_id));
            continue;
        };
        let mut last_seq = group.last_seq;
        let mut verdicts = Vec::with_capacity(messages.len());
        for message in *messages {
            let verdict = judge(environment, group, message, &mut found, last_seq);
            if let Verdict::Append { seq, message_epoch } = verdict {
                last_seq = seq;
                events.push(NewEvent {
                    group: group.key,
                    seq,
                    kind: EventKind::Application,
                    epoch: message_epoch,
                    sender_identity: &message.identity,
                    message: &message.message,
                    now_ms,
                    trace_parent: message.trace_parent.clone(),
                    message_digest: Some(message.digest.clone()),
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
            }
            verdicts.push(verdict);
        }
        if last_seq != group.last_seq {
            moved.push((group.key, group.epoch, last_seq));
        }
        judged.push(Judged::Outcomes(
            verdicts
                .into_iter()
                .map(|verdict| match verdict {
                    Verdict::Answered(answer) => answer,
                    Verdict::Append { seq, .. } => Ok(Accepted {
                        seq,
                        epoch: group.epoch,
                    }),
                })
                .collect(),
        ));
    }

    let appended = events.len();
    if appended > 0 {
        store::append_events(&transaction, events).await?;
        store::insert_submissions(&transaction, records).await?;
        for (key, epoch, last_seq) in &moved {
            store::update_group(
                &transaction,
                *key,
                *epoch,
                *last_seq,
                store::NewState::Unchanged,
            )
            .await?;
        }
        transaction.commit().await?;
        for _ in 0..appended {
            environment.metrics.count_accepted(EventKind::Application);
        }
        for (key, _, _) in &moved {
            environment.notifier.publish(&Topic::Group(*key));
            wake_outbox_if_followed(environment, *key).await;
        }
    }
    Ok(judged)
}

/// The batch's look-ups, each one statement for every locked group's messages.
async fn look_up(
    transaction: &store::Transaction,
    groups: &[(Option<GroupHeader>, &[PendingMessage])],
) -> Result<Found, GroupError> {
    let locked = || {
        groups
            .iter()
            .filter_map(|(header, messages)| header.as_ref().map(|header| (header.key, *messages)))
    };
    let keys: Vec<(&str, &[u8])> = locked()
        .flat_map(|(_, messages)| messages.iter())
        .map(|message| {
            (
                message.identity.as_str(),
                message.idempotency_key.as_slice(),
            )
        })
        .collect();
    let recorded = store::find_submissions(transaction, &keys)
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
    let identities: Vec<(GroupKey, &str)> = locked()
        .flat_map(|(key, messages)| {
            messages
                .iter()
                .map(move |message| (key, message.identity.as_str()))
        })
        .collect();
    let members = store::current_members_among(transaction, &identities).await?;
    let digests: Vec<(GroupKey, &[u8])> = locked()
        .flat_map(|(key, messages)| {
            messages
                .iter()
                .map(move |message| (key, message.digest.as_slice()))
        })
        .collect();
    let logged = store::find_events_by_digests(transaction, &digests).await?;
    Ok(Found {
        recorded,
        members,
        logged,
    })
}

/// Judges one message in the same order of checks as a submission alone:
/// idempotency first (a retry gets its first outcome, also one accepted
/// earlier in this batch), then membership, the message, and replays.
/// `last_seq` is the group's newest position so far in this batch.
fn judge(
    environment: &BatchEnvironment,
    group: &GroupHeader,
    message: &PendingMessage,
    found: &mut Found,
    last_seq: Seq,
) -> Verdict {
    let key = (message.identity.clone(), message.idempotency_key.clone());
    if let Some((request_hash, accepted)) = found.recorded.get(&key) {
        return Verdict::Answered(if *request_hash == message.request_hash {
            Ok(*accepted)
        } else {
            Err(IdempotencyError::ReusedWithDifferentBody.into())
        });
    }
    if !found
        .members
        .contains(&(group.key, message.identity.clone()))
    {
        return Verdict::Answered(Err(GroupError::NotAMember(group.group_id.clone())));
    }
    let message_epoch = match check_application_message(
        &message.message,
        group.group_id.as_bytes(),
        group.epoch.get(),
        environment.past_epoch_window,
    ) {
        Ok(epoch) => Epoch::new(epoch),
        Err(rejection) => return Verdict::Answered(Err(rejection.into())),
    };
    let logged_key = (group.key, message.digest.clone());
    if let Some(&seq) = found.logged.get(&logged_key) {
        return Verdict::Answered(Err(GroupError::Replayed { seq }));
    }
    let seq = last_seq.next();
    found.logged.insert(logged_key, seq);
    found.recorded.insert(
        key,
        (
            message.request_hash.clone(),
            Accepted {
                seq,
                epoch: group.epoch,
            },
        ),
    );
    Verdict::Append { seq, message_epoch }
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
