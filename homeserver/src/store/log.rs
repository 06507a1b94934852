//! Queries for groups' ordered logs: appending events (in few statements for a
//! follower's batch), reading them after a position, counting a kind.

use super::convert::{epoch_to_db, group_row, seq_to_db, to_epoch, to_seq};
use super::entities::group_event;
use super::{Connection, StoreError, Transaction};
use crate::rules::ids::{Epoch, GroupKey, Seq};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set};
use std::collections::{HashMap, HashSet};

/// What a log entry carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventKind {
    Commit = 1,
    Proposal = 2,
    Application = 3,
    /// A departure notice the hub wrote (`rules::departure`): no MLS message;
    /// `sender_identity` is the departed device and `message` the reason (UTF-8).
    Departure = 4,
}

impl EventKind {
    fn from_db(value: i16, row: &str) -> Result<EventKind, StoreError> {
        match value {
            1 => Ok(EventKind::Commit),
            2 => Ok(EventKind::Proposal),
            3 => Ok(EventKind::Application),
            4 => Ok(EventKind::Departure),
            other => Err(StoreError::Corrupt(format!(
                "{row}: kind is {other}, which is no event kind"
            ))),
        }
    }
}

/// One entry of a group's log, as stored.
#[derive(Debug, Clone)]
pub(crate) struct LogEvent {
    pub(crate) seq: Seq,
    pub(crate) kind: EventKind,
    /// The epoch the message was sent in.
    pub(crate) epoch: Epoch,
    /// Credential identity of the submitting device, as authenticated (of a
    /// departure notice: the device that departed).
    pub(crate) sender_identity: String,
    /// The MLSMessage as submitted (of a departure notice: the reason, UTF-8).
    pub(crate) message: Vec<u8>,
    pub(crate) created_at_ms: i64,
    /// W3C `traceparent` of the submitting request, kept for the outbox.
    pub(crate) trace_parent: Option<String>,
}

impl TryFrom<group_event::Model> for LogEvent {
    type Error = StoreError;
    fn try_from(model: group_event::Model) -> Result<LogEvent, StoreError> {
        let group = GroupKey::from_row(model.group_id);
        let row = format!("{} event {}", group_row(group), model.seq);
        Ok(LogEvent {
            seq: to_seq(model.seq, &row, "seq")?,
            kind: EventKind::from_db(model.kind, &row)?,
            epoch: to_epoch(model.epoch, &row, "epoch")?,
            sender_identity: model.sender_identity,
            message: model.message,
            created_at_ms: model.created_at_ms,
            trace_parent: model.trace_parent,
        })
    }
}

/// A new log entry.
pub(crate) struct NewEvent<'a> {
    pub(crate) group: GroupKey,
    pub(crate) seq: Seq,
    pub(crate) kind: EventKind,
    pub(crate) epoch: Epoch,
    pub(crate) sender_identity: &'a str,
    pub(crate) message: &'a [u8],
    pub(crate) now_ms: i64,
    /// W3C `traceparent` of the submitting request, kept for the outbox.
    pub(crate) trace_parent: Option<String>,
    /// SHA-256 of `message` at the hub, unique per group (see
    /// [`find_event_by_digest`]); `None` for a follower's copies of the hub's
    /// events, which the hub has already judged.
    pub(crate) message_digest: Option<Vec<u8>>,
}

pub(crate) async fn append_event(db: &Transaction, event: NewEvent<'_>) -> Result<(), StoreError> {
    append_events(db, vec![event]).await
}

/// Most rows, and message bytes, per multi-row INSERT of log entries.
const ROWS_PER_INSERT: usize = 100;
const BYTES_PER_INSERT: usize = 12 * 1024;

/// Appends several entries, in as few statements as the limits allow (a
/// follower applying a batch).
pub(crate) async fn append_events(
    db: &Transaction,
    events: Vec<NewEvent<'_>>,
) -> Result<(), StoreError> {
    // Statements stay small: few rows each (far below the databases' limits on
    // bound parameters, 9 per row, whatever a batch's length), and at most about
    // 12 KB, a limit set when sqlx 0.9.0's connections lacked TCP_NODELAY and
    // larger PostgreSQL statements stalled 40 ms (BENCHMARKS.md, finding 2;
    // fixed in sqlx 0.9.1, the limit not re-measured since). A larger message
    // goes alone.
    let mut chunk = Vec::new();
    let mut chunk_bytes = 0;
    for event in events {
        // The message, the sender, and the other columns and framing.
        let bytes = event.message.len() + event.sender_identity.len() + 96;
        if !chunk.is_empty()
            && (chunk.len() == ROWS_PER_INSERT || chunk_bytes + bytes > BYTES_PER_INSERT)
        {
            insert_event_rows(db, std::mem::take(&mut chunk)).await?;
            chunk_bytes = 0;
        }
        chunk_bytes += bytes;
        chunk.push(group_event::ActiveModel {
            group_id: Set(event.group.row_id()),
            seq: Set(seq_to_db(event.seq)?),
            kind: Set(event.kind as i16),
            epoch: Set(epoch_to_db(event.epoch)?),
            sender_identity: Set(event.sender_identity.to_owned()),
            message: Set(event.message.to_vec()),
            created_at_ms: Set(event.now_ms),
            trace_parent: Set(event.trace_parent),
            message_digest: Set(event.message_digest),
        });
    }
    if !chunk.is_empty() {
        insert_event_rows(db, chunk).await?;
    }
    Ok(())
}

async fn insert_event_rows(
    db: &Transaction,
    rows: Vec<group_event::ActiveModel>,
) -> Result<(), StoreError> {
    group_event::Entity::insert_many(rows)
        .exec_without_returning(db.database())
        .await?;
    Ok(())
}

/// The sequence number of the group's log entry whose message has this SHA-256,
/// if the hub accepted one (a lookup in the unique index on
/// `(group_id, message_digest)`, which is also what keeps a second such entry
/// out should two replicas race).
pub(crate) async fn find_event_by_digest(
    db: &impl Connection,
    group: GroupKey,
    message_digest: &[u8],
) -> Result<Option<Seq>, StoreError> {
    let found = group_event::Entity::find()
        .select_only()
        .column(group_event::Column::Seq)
        .filter(group_event::Column::GroupId.eq(group.row_id()))
        .filter(group_event::Column::MessageDigest.eq(message_digest.to_vec()))
        .into_tuple::<i64>()
        .one(db.database())
        .await?;
    let row = format!("{} event with a message digest", group_row(group));
    found.map(|seq| to_seq(seq, &row, "seq")).transpose()
}

/// The log entries whose messages have these SHA-256 digests in these groups,
/// as `(group, digest) -> seq` (one statement for a batch of application
/// messages to several groups, through the same unique index as
/// [`find_event_by_digest`]; the statement narrows by each column's set, the
/// pairs are matched here).
pub(crate) async fn find_events_by_digests(
    db: &impl Connection,
    pairs: &[(GroupKey, &[u8])],
) -> Result<HashMap<(GroupKey, Vec<u8>), Seq>, StoreError> {
    if pairs.is_empty() {
        return Ok(HashMap::new());
    }
    let found: Vec<(i64, Option<Vec<u8>>, i64)> = group_event::Entity::find()
        .select_only()
        .columns([
            group_event::Column::GroupId,
            group_event::Column::MessageDigest,
            group_event::Column::Seq,
        ])
        .filter(group_event::Column::GroupId.is_in(pairs.iter().map(|(group, _)| group.row_id())))
        .filter(
            group_event::Column::MessageDigest
                .is_in(pairs.iter().map(|(_, digest)| digest.to_vec())),
        )
        .into_tuple()
        .all(db.database())
        .await?;
    let wanted: HashSet<(GroupKey, &[u8])> = pairs.iter().copied().collect();
    let mut logged = HashMap::new();
    for (group, digest, seq) in found {
        let group = GroupKey::from_row(group);
        let Some(digest) = digest else { continue };
        if !wanted.contains(&(group, digest.as_slice())) {
            continue;
        }
        let row = format!("{} event with a message digest", group_row(group));
        logged.insert((group, digest), to_seq(seq, &row, "seq")?);
    }
    Ok(logged)
}

/// How many log entries of `kind` the group has after `after_seq` (a range of
/// the primary key, so only those entries are read).
pub(crate) async fn count_events_after(
    db: &impl Connection,
    group: GroupKey,
    kind: EventKind,
    after_seq: Seq,
) -> Result<u64, StoreError> {
    use sea_orm::PaginatorTrait;
    Ok(group_event::Entity::find()
        .filter(group_event::Column::GroupId.eq(group.row_id()))
        .filter(group_event::Column::Seq.gt(seq_to_db(after_seq)?))
        .filter(group_event::Column::Kind.eq(kind as i16))
        .count(db.database())
        .await?)
}

/// Log entries after `after_seq` up to `up_to_seq` (inclusive, if given), oldest first.
pub(crate) async fn events_after(
    db: &impl Connection,
    group: GroupKey,
    after_seq: Seq,
    up_to_seq: Option<Seq>,
    limit: u64,
) -> Result<Vec<LogEvent>, StoreError> {
    let mut query = group_event::Entity::find()
        .filter(group_event::Column::GroupId.eq(group.row_id()))
        .filter(group_event::Column::Seq.gt(seq_to_db(after_seq)?));
    if let Some(up_to_seq) = up_to_seq {
        query = query.filter(group_event::Column::Seq.lte(seq_to_db(up_to_seq)?));
    }
    query
        .order_by_asc(group_event::Column::Seq)
        .limit(limit)
        .all(db.database())
        .await?
        .into_iter()
        .map(LogEvent::try_from)
        .collect()
}
