//! The follower side of a group hosted by another domain: batches of the group's
//! events arrive from its hub and go into this homeserver's copy of the log,
//! once each by `(group, seq)`, so the group's member devices here read them
//! through the same cursors and streams as a local group's.
//!
//! What a batch may do: only the group's hub may send it (the first batch fixes
//! the hub); a group unknown here, or one with no member devices here any more,
//! is accepted only from a commit that adds devices of this domain; membership
//! changes may name devices of this domain only. A gap before the batch (this
//! copy lost events, e.g. restored from a backup) is repaired from the hub with
//! FetchEvents first.
//!
//! Events arrive as `conclave.federation.v1.FederatedEvent`, the wire type of the
//! federation client.

use super::{Context, InternalError};
use crate::notify::Topic;
use crate::rules::ids::{Epoch, GroupId, Seq};
use crate::store::{
    self, EventKind, GroupHeader, Hosting, NewEvent, NewInboxEvent, NewMember, StoreError,
    Transaction,
};
use conclave_core::ids::{CredentialIdentity, Domain};
use conclave_federation::client::{CallError, RefusalKind};
use conclave_proto::federation::v1 as proto;

/// Why a batch was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FollowerError {
    /// The batch breaks the protocol.
    #[error("{0}")]
    InvalidBatch(String),
    /// The sending peer is not the group's hub.
    #[error("group {group} is hosted by {actual}, not by {sender}")]
    NotTheHub {
        group: GroupId,
        actual: String,
        sender: String,
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

/// An event that passed the batch checks.
#[derive(Debug, Clone)]
struct CheckedEvent {
    seq: Seq,
    kind: EventKind,
    epoch: Epoch,
    sender: String,
    message: Vec<u8>,
    added: Vec<CredentialIdentity>,
    removed: Vec<CredentialIdentity>,
    /// The Welcome and the new epoch's ratchet tree, for the added devices.
    welcome: Option<(Vec<u8>, Vec<u8>)>,
}

/// Checks a batch's shape: consecutive sequence numbers, known kinds, parsable
/// identities, membership changes only in commits and only for devices of
/// `own` domain, a Welcome only with added devices.
fn check_batch(
    own: &Domain,
    events: Vec<proto::FederatedEvent>,
) -> Result<Vec<CheckedEvent>, FollowerError> {
    let invalid = |reason: String| Err(FollowerError::InvalidBatch(reason));
    if events.is_empty() {
        return invalid("events is empty".to_owned());
    }
    let mut checked: Vec<CheckedEvent> = Vec::with_capacity(events.len());
    for event in events {
        // Both are stored as signed 64-bit integers.
        if event.seq < 1 || i64::try_from(event.seq).is_err() {
            return invalid(format!("seq {} is out of range", event.seq));
        }
        if i64::try_from(event.epoch).is_err() {
            return invalid(format!(
                "event {}: epoch {} is out of range",
                event.seq, event.epoch
            ));
        }
        let seq = Seq::new(event.seq);
        if let Some(previous) = checked.last()
            && seq != previous.seq.next()
        {
            return invalid(format!(
                "events must have consecutive seqs: {} follows {}",
                seq, previous.seq
            ));
        }
        let kind = match proto::EventKind::try_from(event.kind) {
            Ok(proto::EventKind::Commit) => EventKind::Commit,
            Ok(proto::EventKind::Proposal) => EventKind::Proposal,
            Ok(proto::EventKind::Application) => EventKind::Application,
            _ => return invalid(format!("event {seq}: unknown kind {}", event.kind)),
        };
        if event.message.is_empty() {
            return invalid(format!("event {seq}: message is empty"));
        }
        if let Err(error) = event.sender.parse::<CredentialIdentity>() {
            return invalid(format!("event {seq}: sender: {error}"));
        }
        let parse_own =
            |identities: Vec<String>| -> Result<Vec<CredentialIdentity>, FollowerError> {
                identities
                    .into_iter()
                    .map(|identity| {
                        let parsed: CredentialIdentity = identity.parse().map_err(|error| {
                            FollowerError::InvalidBatch(format!(
                                "event {seq}: {identity:?}: {error}"
                            ))
                        })?;
                        if parsed.user_id().domain() != own {
                            return Err(FollowerError::InvalidBatch(format!(
                                "event {seq}: {parsed} is not a device of {own}"
                            )));
                        }
                        Ok(parsed)
                    })
                    .collect()
            };
        let added = parse_own(event.added)?;
        let removed = parse_own(event.removed)?;
        if kind != EventKind::Commit && !(added.is_empty() && removed.is_empty()) {
            return invalid(format!("event {seq}: only a commit changes membership"));
        }
        let welcome = match (event.welcome.is_empty(), event.ratchet_tree.is_empty()) {
            (true, true) => None,
            (false, false) if !added.is_empty() => Some((event.welcome, event.ratchet_tree)),
            _ => {
                return invalid(format!(
                    "event {seq}: a Welcome comes with its ratchet tree and added devices"
                ));
            }
        };
        checked.push(CheckedEvent {
            seq,
            kind,
            epoch: Epoch::new(event.epoch),
            sender: event.sender,
            message: event.message,
            added,
            removed,
            welcome,
        });
    }
    Ok(checked)
}

/// How applying went.
enum Applied {
    /// The copy now ends at this sequence number.
    Through(Seq),
    /// Events after `have` are missing before the batch.
    Gap { have: Seq },
}

/// Applies a batch from the group's hub; returns the copy's newest sequence
/// number, which the hub continues after.
pub(crate) async fn apply_batch(
    context: &Context,
    batch: IncomingBatch,
) -> Result<Seq, FollowerError> {
    let events = check_batch(&context.domain, batch.events)?;
    let group = batch.mls_group_id.clone();
    let member_count = batch.member_count;
    let (hub, mls_group_id) = (&batch.hub, &batch.mls_group_id);
    match apply_events(context, hub, mls_group_id, &events, member_count, false).await? {
        Applied::Through(last_seq) => Ok(last_seq),
        Applied::Gap { have } => {
            let first_seq = events.first().map_or(Seq::ZERO, |event| event.seq);
            let allow_gap = repair(context, hub, mls_group_id, have, first_seq).await?;
            match apply_events(context, hub, mls_group_id, &events, member_count, allow_gap).await?
            {
                Applied::Through(last_seq) => Ok(last_seq),
                Applied::Gap { have } => Err(FollowerError::RepairFailed {
                    group,
                    have,
                    reason: "the hub's events did not close the gap".to_owned(),
                }),
            }
        }
    }
}

/// Brings this copy of a group up to `until_seq` with events fetched from the
/// hub, unless it has them already. For a device told that its commit lost
/// the epoch to the commit at `until_seq`: it fetches that commit next, here,
/// and the hub's outbox may not have delivered it yet (still in flight, or
/// waiting out a backoff or this homeserver's rate limit). Without it, the
/// device would rebuild its commit on the old epoch and lose again, until it
/// gives up.
pub(crate) async fn catch_up(
    context: &Context,
    hub: &Domain,
    mls_group_id: &GroupId,
    until_seq: Seq,
) -> Result<(), FollowerError> {
    let Some(group) = store::find_group_header(&context.store, mls_group_id).await? else {
        return Ok(());
    };
    if group.last_seq >= until_seq {
        return Ok(());
    }
    repair(context, hub, mls_group_id, group.last_seq, until_seq.next())
        .await
        .map(drop)
}

/// At start: asks the hub of every group followed here for what it has after
/// this copy's end, and applies it. The hubs' outboxes would deliver it too,
/// but possibly only after their backoff from when this homeserver was down;
/// the request also tells each hub that this homeserver is back.
pub(crate) async fn catch_up_on_start(context: &Context) {
    let Some(federation) = context.federation.as_ref() else {
        return;
    };
    let followed = match store::followed_groups(&context.store).await {
        Ok(followed) => followed,
        Err(error) => {
            tracing::warn!(%error, "could not list followed groups to catch up");
            return;
        }
    };
    let mut unreachable = std::collections::BTreeSet::new();
    for (mls_group_id, hub, mut have) in followed {
        if unreachable.contains(&hub) {
            continue;
        }
        let Ok(hub_domain) = hub.parse::<Domain>() else {
            continue;
        };
        let group = mls_group_id.clone();
        loop {
            let answer = federation
                .fetch_events(&hub_domain, mls_group_id.as_bytes().to_vec(), have.get(), 0)
                .await;
            let answer = match answer {
                Ok(answer) => answer,
                Err(error @ CallError::Unavailable { .. }) => {
                    tracing::info!(hub_domain = %hub, %error, "hub unreachable; its outbox will deliver");
                    unreachable.insert(hub.clone());
                    break;
                }
                Err(error) => {
                    tracing::info!(hub_domain = %hub, %group, %error, "could not catch up a group at start");
                    break;
                }
            };
            if answer.events.is_empty() {
                break;
            }
            let outcome = match check_batch(&context.domain, answer.events) {
                Ok(events) => {
                    apply_events(context, &hub_domain, &mls_group_id, &events, 0, false).await
                }
                Err(error) => Err(error),
            };
            match outcome {
                Ok(Applied::Through(last_seq)) if last_seq > have => {
                    have = last_seq;
                    if have.get() >= answer.last_seq {
                        break;
                    }
                }
                Ok(_) => break,
                Err(error) => {
                    tracing::warn!(hub_domain = %hub, %group, %error, "could not apply a group's events at start");
                    break;
                }
            }
        }
    }
}

/// Fetches and applies the events between `have` and `next_seq` from the hub.
/// Returns true if the hub no longer has them (pruned by its retention): the
/// gap is then accepted, and the devices here recover by rejoining.
async fn repair(
    context: &Context,
    hub: &Domain,
    mls_group_id: &GroupId,
    mut have: Seq,
    next_seq: Seq,
) -> Result<bool, FollowerError> {
    let group = mls_group_id.clone();
    let failed = |have, reason: String| FollowerError::RepairFailed {
        group: group.clone(),
        have,
        reason,
    };
    let Some(federation) = context.federation.as_ref() else {
        return Err(failed(have, "federation is off".to_owned()));
    };
    tracing::warn!(hub_domain = %hub, %group, %have, %next_seq, "repairing a gap in a group's copy");
    while have.next() < next_seq {
        let answer = federation
            .fetch_events(hub, mls_group_id.as_bytes().to_vec(), have.get(), 0)
            .await;
        let answer = match answer {
            Ok(answer) => answer,
            Err(CallError::Refused {
                kind: RefusalKind::OutOfRange,
                message,
                ..
            }) => {
                tracing::warn!(hub_domain = %hub, %group, %have, %message, "the hub pruned the missing events; accepting the gap");
                return Ok(true);
            }
            Err(error) => return Err(failed(have, error.to_string())),
        };
        let missing: Vec<_> = answer
            .events
            .into_iter()
            .take_while(|event| event.seq < next_seq.get())
            .collect();
        if missing.is_empty() {
            return Err(failed(have, "the hub sent no events".to_owned()));
        }
        let missing = check_batch(&context.domain, missing)?;
        match apply_events(context, hub, mls_group_id, &missing, 0, false).await? {
            Applied::Through(last_seq) if last_seq > have => have = last_seq,
            _ => {
                return Err(failed(
                    have,
                    "the hub's events did not continue the copy".to_owned(),
                ));
            }
        }
    }
    Ok(false)
}

/// Applies checked events in one transaction.
async fn apply_events(
    context: &Context,
    hub: &Domain,
    mls_group_id: &GroupId,
    events: &[CheckedEvent],
    member_count: u64,
    allow_gap: bool,
) -> Result<Applied, FollowerError> {
    let group_name = mls_group_id.clone();
    let transaction = context.store.begin().await?;
    let group = match store::lock_group_header(&transaction, mls_group_id, Hosting::Any).await? {
        Some(group) => {
            if group.hub_domain.as_deref() != Some(hub.as_str()) {
                return Err(FollowerError::NotTheHub {
                    group: group_name,
                    actual: group
                        .hub_domain
                        .unwrap_or_else(|| context.domain.to_string()),
                    sender: hub.to_string(),
                });
            }
            group
        }
        None => create_copy(context, &transaction, hub, mls_group_id, events).await?,
    };
    let new_events: Vec<&CheckedEvent> = events
        .iter()
        .filter(|event| event.seq > group.last_seq)
        .collect();
    let Some(first) = new_events.first() else {
        // All seen before: a repeated batch.
        return Ok(Applied::Through(group.last_seq));
    };
    let has_members = store::member_count(&transaction, group.key).await? > 0;
    let adds_members = adds_local_devices(&transaction, first).await?;
    if !has_members && !adds_members {
        return Err(FollowerError::NotFollowed {
            group: group_name,
            own: context.domain.to_string(),
        });
    }
    // A domain whose devices all left and that is added again continues at the
    // commit that adds it: the events between are none of its business.
    let rejoins = !has_members && adds_members;
    if first.seq != group.last_seq.next() && !rejoins && !allow_gap {
        return Ok(Applied::Gap {
            have: group.last_seq,
        });
    }

    let now_ms = context.now_ms();
    let mut epoch = group.epoch;
    let mut last_seq = group.last_seq;
    let mut woken_inboxes = Vec::new();
    let mut rows = Vec::with_capacity(new_events.len());
    for event in new_events {
        rows.push(NewEvent {
            group: group.key,
            seq: event.seq,
            kind: event.kind,
            epoch: event.epoch,
            sender_identity: &event.sender,
            message: &event.message,
            now_ms,
            trace_parent: None,
        });
        last_seq = event.seq;
        epoch = epoch.max(event.epoch);
        if event.kind != EventKind::Commit {
            continue;
        }
        epoch = epoch.max(event.epoch.next());
        for identity in &event.removed {
            store::mark_removed(&transaction, group.key, &identity.to_string(), event.seq).await?;
        }
        for identity in &event.added {
            if !is_local_device(&transaction, identity).await? {
                // Gone since it was added (logged out): nothing to deliver to.
                continue;
            }
            let device_id = identity.device_id().as_str();
            let member = NewMember {
                identity: &identity.to_string(),
                user_id: &identity.user_id().to_string(),
                device_id,
                joined_after_seq: event.seq,
                remote_domain: None,
            };
            store::upsert_member(&transaction, group.key, member).await?;
            if let Some((welcome, ratchet_tree)) = &event.welcome {
                let inbox_event = NewInboxEvent {
                    device_id,
                    group: group.key,
                    commit_seq: event.seq,
                    welcome,
                    ratchet_tree,
                    now_ms,
                };
                store::append_inbox_event(&transaction, inbox_event).await?;
                woken_inboxes.push(device_id.to_owned());
            }
        }
    }
    // One statement for the batch's log rows (member and inbox rows refer to
    // the group, not to these).
    store::append_events(&transaction, rows).await?;
    let member_count = if member_count > 0 {
        member_count
    } else {
        group.hub_member_count.unwrap_or_default()
    };
    store::update_follower_group(&transaction, group.key, epoch, last_seq, member_count).await?;
    transaction.commit().await?;
    context.notifier.publish(&Topic::Group(group.key));
    for device_id in woken_inboxes {
        context.notifier.publish(&Topic::Inbox(device_id));
    }
    tracing::debug!(hub_domain = %hub, group = %group_name, %last_seq, "applied events from the hub");
    Ok(Applied::Through(last_seq))
}

/// Makes the copy of a group first heard of: only if its first event is a
/// commit adding a device of this domain.
async fn create_copy(
    context: &Context,
    transaction: &Transaction,
    hub: &Domain,
    mls_group_id: &GroupId,
    events: &[CheckedEvent],
) -> Result<GroupHeader, FollowerError> {
    let group_name = mls_group_id.clone();
    let not_followed = || FollowerError::NotFollowed {
        group: group_name.clone(),
        own: context.domain.to_string(),
    };
    let first = events.first().ok_or_else(not_followed)?;
    if !adds_local_devices(transaction, first).await? {
        return Err(not_followed());
    }
    store::insert_follower_group(
        transaction,
        mls_group_id,
        hub.as_str(),
        &first.sender,
        context.now_ms(),
    )
    .await?
    .ok_or_else(|| FollowerError::Busy(group_name.clone()))?;
    store::lock_group_header(transaction, mls_group_id, Hosting::Any)
        .await?
        .ok_or_else(|| FollowerError::Busy(group_name))
}

/// True if the event is a commit adding at least one current device of this
/// homeserver.
async fn adds_local_devices(
    transaction: &Transaction,
    event: &CheckedEvent,
) -> Result<bool, FollowerError> {
    if event.kind != EventKind::Commit {
        return Ok(false);
    }
    for identity in &event.added {
        if is_local_device(transaction, identity).await? {
            return Ok(true);
        }
    }
    Ok(false)
}

async fn is_local_device(
    transaction: &Transaction,
    identity: &CredentialIdentity,
) -> Result<bool, StoreError> {
    store::device_of_user(
        transaction,
        identity.device_id().as_str(),
        identity.user_id().username().as_str(),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOB: &str = "bob@b.example/00000000000000b1";

    fn event(seq: u64) -> proto::FederatedEvent {
        proto::FederatedEvent {
            seq,
            kind: proto::EventKind::Application as i32,
            epoch: 1,
            sender: "alice@a.example/00000000000000a1".to_owned(),
            message: vec![1],
            created_at_ms: 0,
            ..Default::default()
        }
    }

    fn commit(seq: u64) -> proto::FederatedEvent {
        proto::FederatedEvent {
            kind: proto::EventKind::Commit as i32,
            ..event(seq)
        }
    }

    #[test]
    fn well_formed_batches_pass() {
        let own: Domain = "b.example".parse().unwrap();
        let adding = proto::FederatedEvent {
            added: vec![BOB.to_owned()],
            welcome: vec![2],
            ratchet_tree: vec![3],
            ..commit(4)
        };
        let checked = check_batch(&own, vec![adding, event(5), event(6)]).unwrap();
        assert_eq!(checked.len(), 3);
        assert_eq!(checked[0].added[0].to_string(), BOB);
        assert!(checked[0].welcome.is_some());
    }

    #[test]
    fn malformed_batches_are_refused_with_the_reason() {
        let own: Domain = "b.example".parse().unwrap();
        let cases: Vec<(&str, Vec<proto::FederatedEvent>, &str)> = vec![
            ("empty", vec![], "events is empty"),
            ("gap inside", vec![event(1), event(3)], "consecutive"),
            ("backwards", vec![event(2), event(1)], "consecutive"),
            ("seq 0", vec![event(0)], "out of range"),
            (
                "unknown kind",
                vec![proto::FederatedEvent {
                    kind: 9,
                    ..event(1)
                }],
                "unknown kind",
            ),
            (
                "empty message",
                vec![proto::FederatedEvent {
                    message: vec![],
                    ..event(1)
                }],
                "message is empty",
            ),
            (
                "bad sender",
                vec![proto::FederatedEvent {
                    sender: "alice".to_owned(),
                    ..event(1)
                }],
                "sender",
            ),
            (
                "device of another domain",
                vec![proto::FederatedEvent {
                    added: vec!["carol@c.example/00000000000000c1".to_owned()],
                    ..commit(1)
                }],
                "is not a device of b.example",
            ),
            (
                "membership change in a message",
                vec![proto::FederatedEvent {
                    removed: vec![BOB.to_owned()],
                    ..event(1)
                }],
                "only a commit",
            ),
            (
                "welcome without tree",
                vec![proto::FederatedEvent {
                    added: vec![BOB.to_owned()],
                    welcome: vec![1],
                    ..commit(1)
                }],
                "ratchet tree",
            ),
            (
                "welcome without added devices",
                vec![proto::FederatedEvent {
                    welcome: vec![1],
                    ratchet_tree: vec![1],
                    ..commit(1)
                }],
                "added devices",
            ),
        ];
        for (case, events, fragment) in cases {
            match check_batch(&own, events) {
                Err(FollowerError::InvalidBatch(reason)) => {
                    assert!(reason.contains(fragment), "{case}: {reason}")
                }
                other => panic!("{case}: {other:?}"),
            }
        }
    }
}
