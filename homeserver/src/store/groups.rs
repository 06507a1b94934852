//! Queries for hosted groups: the group row (locked while a submission is
//! applied), its log, its commits, its members and their cursors, device inboxes,
//! and idempotency records.

use super::entities::{
    group, group_commit, group_event, group_member, inbox, inbox_event, submission,
};
use super::{Connection, StoreError};
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    Set,
};

pub(crate) use group::Model as GroupRecord;
pub(crate) use group_event::Model as EventRecord;
pub(crate) use group_member::Model as MemberRecord;
pub(crate) use inbox_event::Model as InboxEventRecord;
pub(crate) use submission::Model as SubmissionRecord;

/// What a log entry carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventKind {
    Commit = 1,
    Proposal = 2,
    Application = 3,
}

pub(crate) async fn find_submission(
    db: &impl Connection,
    identity: &str,
    idempotency_key: &[u8],
) -> Result<Option<SubmissionRecord>, StoreError> {
    Ok(submission::Entity::find()
        .filter(submission::Column::Identity.eq(identity))
        .filter(submission::Column::IdempotencyKey.eq(idempotency_key.to_vec()))
        .one(db)
        .await?)
}

pub(crate) async fn insert_submission(
    db: &impl Connection,
    record: SubmissionRecord,
) -> Result<(), StoreError> {
    submission::Entity::insert(submission::ActiveModel::from(record))
        .exec_without_returning(db)
        .await?;
    Ok(())
}

/// Inserts a group; `Ok(None)` if its MLS group id is taken.
pub(crate) async fn insert_group(
    db: &impl Connection,
    mls_group_id: &[u8],
    epoch: i64,
    state: Vec<u8>,
    created_by: &str,
    now_ms: i64,
) -> Result<Option<GroupRecord>, StoreError> {
    let model = group::ActiveModel {
        mls_group_id: Set(mls_group_id.to_vec()),
        epoch: Set(epoch),
        last_seq: Set(0),
        state: Set(state),
        created_by: Set(created_by.to_owned()),
        created_at_ms: Set(now_ms),
        ..Default::default()
    };
    match model.insert(db).await.map_err(StoreError::from) {
        Ok(record) => Ok(Some(record)),
        Err(error) if error.is_unique_violation() => Ok(None),
        Err(error) => Err(error),
    }
}

/// Loads a group hosted here and locks its row until the transaction ends (`FOR
/// UPDATE` on PostgreSQL; on SQLite the IMMEDIATE transaction already holds the
/// write lock), so submissions to one group are applied one at a time, on every
/// replica.
pub(crate) async fn lock_group(
    db: &impl Connection,
    mls_group_id: &[u8],
) -> Result<Option<GroupRecord>, StoreError> {
    Ok(group::Entity::find()
        .filter(group::Column::MlsGroupId.eq(mls_group_id.to_vec()))
        .filter(group::Column::HubDomain.is_null())
        .lock_exclusive()
        .one(db)
        .await?)
}

/// A group's row without its (possibly large) state.
#[derive(Debug, Clone, sea_orm::FromQueryResult)]
pub(crate) struct GroupHeader {
    pub(crate) id: i64,
    pub(crate) mls_group_id: Vec<u8>,
    pub(crate) epoch: i64,
    pub(crate) last_seq: i64,
    /// The hub's domain for a follower's copy; `None` if hosted here.
    pub(crate) hub_domain: Option<String>,
    pub(crate) hub_member_count: Option<i64>,
}

/// Narrows a query on groups to their light part: everything but the state.
fn header_columns(select: sea_orm::Select<group::Entity>) -> sea_orm::Select<group::Entity> {
    select.select_only().columns([
        group::Column::Id,
        group::Column::MlsGroupId,
        group::Column::Epoch,
        group::Column::LastSeq,
        group::Column::HubDomain,
        group::Column::HubMemberCount,
    ])
}

/// Loads the light part of a group and locks its row (see [`lock_group`]):
/// hosted groups only, unless `any_hub`.
pub(crate) async fn lock_group_header(
    db: &impl Connection,
    mls_group_id: &[u8],
    any_hub: bool,
) -> Result<Option<GroupHeader>, StoreError> {
    let mut query = header_columns(group::Entity::find())
        .filter(group::Column::MlsGroupId.eq(mls_group_id.to_vec()));
    if !any_hub {
        query = query.filter(group::Column::HubDomain.is_null());
    }
    Ok(query
        .lock_exclusive()
        .into_model::<GroupHeader>()
        .one(db)
        .await?)
}

/// The light part of a group, without locking.
pub(crate) async fn find_group_header(
    db: &impl Connection,
    mls_group_id: &[u8],
) -> Result<Option<GroupHeader>, StoreError> {
    Ok(header_columns(group::Entity::find())
        .filter(group::Column::MlsGroupId.eq(mls_group_id.to_vec()))
        .into_model::<GroupHeader>()
        .one(db)
        .await?)
}

/// A group hosted here, with its state.
pub(crate) async fn find_hosted_group(
    db: &impl Connection,
    mls_group_id: &[u8],
) -> Result<Option<GroupRecord>, StoreError> {
    Ok(group::Entity::find()
        .filter(group::Column::MlsGroupId.eq(mls_group_id.to_vec()))
        .filter(group::Column::HubDomain.is_null())
        .one(db)
        .await?)
}

pub(crate) async fn find_group_headers(
    db: &impl Connection,
    row_ids: Vec<i64>,
) -> Result<Vec<GroupHeader>, StoreError> {
    Ok(header_columns(group::Entity::find())
        .filter(group::Column::Id.is_in(row_ids))
        .into_model::<GroupHeader>()
        .all(db)
        .await?)
}

/// Saves a group's new epoch, newest sequence number and (when given) state.
pub(crate) async fn update_group(
    db: &impl Connection,
    row_id: i64,
    epoch: i64,
    last_seq: i64,
    state: Option<Vec<u8>>,
) -> Result<(), StoreError> {
    let mut update = group::Entity::update_many()
        .col_expr(group::Column::Epoch, Expr::value(epoch))
        .col_expr(group::Column::LastSeq, Expr::value(last_seq));
    if let Some(state) = state {
        update = update.col_expr(group::Column::State, Expr::value(state));
    }
    update.filter(group::Column::Id.eq(row_id)).exec(db).await?;
    Ok(())
}

/// A new log entry.
pub(crate) struct NewEvent<'a> {
    pub(crate) group_row_id: i64,
    pub(crate) seq: i64,
    pub(crate) kind: EventKind,
    pub(crate) epoch: i64,
    pub(crate) sender_identity: &'a str,
    pub(crate) message: &'a [u8],
    pub(crate) now_ms: i64,
    /// W3C `traceparent` of the submitting request, kept for the outbox.
    pub(crate) trace_parent: Option<String>,
}

pub(crate) async fn append_event(
    db: &impl Connection,
    event: NewEvent<'_>,
) -> Result<(), StoreError> {
    append_events(db, vec![event]).await
}

/// Most rows, and message bytes, per multi-row INSERT of log entries.
const ROWS_PER_INSERT: usize = 100;
const BYTES_PER_INSERT: usize = 12 * 1024;

/// Appends several entries, in as few statements as the limits allow (a
/// follower applying a batch).
pub(crate) async fn append_events(
    db: &impl Connection,
    events: Vec<NewEvent<'_>>,
) -> Result<(), StoreError> {
    // Statements stay small: few rows each (far below the databases' limits on
    // bound parameters, 8 per row, whatever a batch's length), and at most about
    // 12 KB, below the sizes at which PostgreSQL statements stall
    // on Nagle's algorithm (BENCHMARKS.md, finding 2). A larger message goes alone.
    let mut chunk = Vec::new();
    let mut chunk_bytes = 0;
    for event in events {
        // The message, the sender, and the other columns and framing.
        let bytes = event.message.len() + event.sender_identity.len() + 64;
        if !chunk.is_empty()
            && (chunk.len() == ROWS_PER_INSERT || chunk_bytes + bytes > BYTES_PER_INSERT)
        {
            insert_event_rows(db, std::mem::take(&mut chunk)).await?;
            chunk_bytes = 0;
        }
        chunk_bytes += bytes;
        chunk.push(group_event::ActiveModel {
            group_id: Set(event.group_row_id),
            seq: Set(event.seq),
            kind: Set(event.kind as i16),
            epoch: Set(event.epoch),
            sender_identity: Set(event.sender_identity.to_owned()),
            message: Set(event.message.to_vec()),
            created_at_ms: Set(event.now_ms),
            trace_parent: Set(event.trace_parent),
        });
    }
    if !chunk.is_empty() {
        insert_event_rows(db, chunk).await?;
    }
    Ok(())
}

async fn insert_event_rows(
    db: &impl Connection,
    rows: Vec<group_event::ActiveModel>,
) -> Result<(), StoreError> {
    group_event::Entity::insert_many(rows)
        .exec_without_returning(db)
        .await?;
    Ok(())
}

/// How many log entries of `kind` the group has after `after_seq` (a range of
/// the primary key, so only those entries are read).
pub(crate) async fn count_events_after(
    db: &impl Connection,
    group_row_id: i64,
    kind: EventKind,
    after_seq: i64,
) -> Result<u64, StoreError> {
    use sea_orm::PaginatorTrait;
    Ok(group_event::Entity::find()
        .filter(group_event::Column::GroupId.eq(group_row_id))
        .filter(group_event::Column::Seq.gt(after_seq))
        .filter(group_event::Column::Kind.eq(kind as i16))
        .count(db)
        .await?)
}

/// Records the commit that ended `epoch`; `Ok(false)` if that epoch has one.
pub(crate) async fn insert_commit(
    db: &impl Connection,
    group_row_id: i64,
    epoch: i64,
    seq: i64,
) -> Result<bool, StoreError> {
    let model = group_commit::ActiveModel {
        group_id: Set(group_row_id),
        epoch: Set(epoch),
        seq: Set(seq),
    };
    match group_commit::Entity::insert(model)
        .exec_without_returning(db)
        .await
        .map_err(StoreError::from)
    {
        Ok(_) => Ok(true),
        Err(error) if error.is_unique_violation() => Ok(false),
        Err(error) => Err(error),
    }
}

/// Sequence number of the commit that ended `epoch`.
pub(crate) async fn commit_seq(
    db: &impl Connection,
    group_row_id: i64,
    epoch: i64,
) -> Result<Option<i64>, StoreError> {
    Ok(group_commit::Entity::find()
        .select_only()
        .column(group_commit::Column::Seq)
        .filter(group_commit::Column::GroupId.eq(group_row_id))
        .filter(group_commit::Column::Epoch.eq(epoch))
        .into_tuple::<i64>()
        .one(db)
        .await?)
}

/// Adds a device to a group (or re-adds a removed one), delivering events after
/// `joined_after_seq`. `remote_domain` is the device's domain if it is not this
/// homeserver's.
pub(crate) async fn upsert_member(
    db: &impl Connection,
    group_row_id: i64,
    identity: &str,
    user_id: &str,
    device_id: &str,
    joined_after_seq: i64,
    remote_domain: Option<&str>,
) -> Result<(), StoreError> {
    group_member::Entity::insert(group_member::ActiveModel {
        group_id: Set(group_row_id),
        identity: Set(identity.to_owned()),
        user_id: Set(user_id.to_owned()),
        device_id: Set(device_id.to_owned()),
        joined_after_seq: Set(joined_after_seq),
        removed_at_seq: Set(None),
        acked_seq: Set(joined_after_seq),
        remote_domain: Set(remote_domain.map(str::to_owned)),
    })
    .on_conflict(
        OnConflict::columns([
            group_member::Column::GroupId,
            group_member::Column::Identity,
        ])
        .update_columns([
            group_member::Column::JoinedAfterSeq,
            group_member::Column::RemovedAtSeq,
            group_member::Column::AckedSeq,
        ])
        .to_owned(),
    )
    .exec_without_returning(db)
    .await?;
    Ok(())
}

/// Marks a device removed by the commit at `seq`, its last event.
pub(crate) async fn mark_removed(
    db: &impl Connection,
    group_row_id: i64,
    identity: &str,
    seq: i64,
) -> Result<(), StoreError> {
    group_member::Entity::update_many()
        .col_expr(group_member::Column::RemovedAtSeq, Expr::value(seq))
        .filter(group_member::Column::GroupId.eq(group_row_id))
        .filter(group_member::Column::Identity.eq(identity))
        .filter(group_member::Column::RemovedAtSeq.is_null())
        .exec(db)
        .await?;
    Ok(())
}

/// The device's membership of a group, current or past.
pub(crate) async fn find_member(
    db: &impl Connection,
    group_row_id: i64,
    identity: &str,
) -> Result<Option<MemberRecord>, StoreError> {
    Ok(group_member::Entity::find()
        .filter(group_member::Column::GroupId.eq(group_row_id))
        .filter(group_member::Column::Identity.eq(identity))
        .one(db)
        .await?)
}

/// True if some current member device of the group belongs to `user_id`.
pub(crate) async fn user_is_member(
    db: &impl Connection,
    group_row_id: i64,
    user_id: &str,
) -> Result<bool, StoreError> {
    Ok(group_member::Entity::find()
        .filter(group_member::Column::GroupId.eq(group_row_id))
        .filter(group_member::Column::UserId.eq(user_id))
        .filter(group_member::Column::RemovedAtSeq.is_null())
        .one(db)
        .await?
        .is_some())
}

/// Every membership of a local device (current ones, and past ones whose last
/// events are not yet acknowledged). Devices of other domains are left out even
/// if their id is the same: a peer chooses its devices' ids.
pub(crate) async fn memberships_of_device(
    db: &impl Connection,
    device_id: &str,
) -> Result<Vec<MemberRecord>, StoreError> {
    Ok(group_member::Entity::find()
        .filter(group_member::Column::DeviceId.eq(device_id))
        .filter(group_member::Column::RemoteDomain.is_null())
        .filter(
            Condition::any()
                .add(group_member::Column::RemovedAtSeq.is_null())
                .add(
                    Expr::col(group_member::Column::AckedSeq)
                        .lt(Expr::col(group_member::Column::RemovedAtSeq)),
                ),
        )
        .order_by_asc(group_member::Column::GroupId)
        .all(db)
        .await?)
}

/// Number of current member devices of a group.
pub(crate) async fn member_count(
    db: &impl Connection,
    group_row_id: i64,
) -> Result<u64, StoreError> {
    use sea_orm::PaginatorTrait;
    Ok(group_member::Entity::find()
        .filter(group_member::Column::GroupId.eq(group_row_id))
        .filter(group_member::Column::RemovedAtSeq.is_null())
        .count(db)
        .await?)
}

/// Log entries after `after_seq` up to `up_to_seq` (inclusive, if given), oldest first.
pub(crate) async fn events_after(
    db: &impl Connection,
    group_row_id: i64,
    after_seq: i64,
    up_to_seq: Option<i64>,
    limit: u64,
) -> Result<Vec<EventRecord>, StoreError> {
    let mut query = group_event::Entity::find()
        .filter(group_event::Column::GroupId.eq(group_row_id))
        .filter(group_event::Column::Seq.gt(after_seq));
    if let Some(up_to_seq) = up_to_seq {
        query = query.filter(group_event::Column::Seq.lte(up_to_seq));
    }
    Ok(query
        .order_by_asc(group_event::Column::Seq)
        .limit(limit)
        .all(db)
        .await?)
}

/// Moves a member's cursor forward (never back).
pub(crate) async fn advance_member_cursor(
    db: &impl Connection,
    group_row_id: i64,
    identity: &str,
    seq: i64,
) -> Result<(), StoreError> {
    group_member::Entity::update_many()
        .col_expr(group_member::Column::AckedSeq, Expr::value(seq))
        .filter(group_member::Column::GroupId.eq(group_row_id))
        .filter(group_member::Column::Identity.eq(identity))
        .filter(group_member::Column::AckedSeq.lt(seq))
        .exec(db)
        .await?;
    Ok(())
}

/// Appends a Welcome to a device's inbox and returns its inbox sequence number.
pub(crate) async fn append_inbox_event(
    db: &impl Connection,
    device_id: &str,
    group_row_id: i64,
    commit_seq: i64,
    welcome: &[u8],
    ratchet_tree: &[u8],
    now_ms: i64,
) -> Result<i64, StoreError> {
    inbox::Entity::insert(inbox::ActiveModel {
        device_id: Set(device_id.to_owned()),
        last_seq: Set(0),
        acked_seq: Set(0),
    })
    .on_conflict(
        OnConflict::column(inbox::Column::DeviceId)
            .do_nothing()
            .to_owned(),
    )
    .exec_without_returning(db)
    .await?;
    inbox::Entity::update_many()
        .col_expr(
            inbox::Column::LastSeq,
            Expr::col(inbox::Column::LastSeq).add(1),
        )
        .filter(inbox::Column::DeviceId.eq(device_id))
        .exec(db)
        .await?;
    let seq = inbox::Entity::find_by_id(device_id.to_owned())
        .one(db)
        .await?
        .map(|row| row.last_seq)
        .unwrap_or(1);
    inbox_event::Entity::insert(inbox_event::ActiveModel {
        device_id: Set(device_id.to_owned()),
        seq: Set(seq),
        group_id: Set(group_row_id),
        commit_seq: Set(commit_seq),
        welcome: Set(welcome.to_vec()),
        ratchet_tree: Set(ratchet_tree.to_vec()),
        created_at_ms: Set(now_ms),
    })
    .exec_without_returning(db)
    .await?;
    Ok(seq)
}

/// A device's inbox cursor and newest entry: (acked, last).
pub(crate) async fn inbox_position(
    db: &impl Connection,
    device_id: &str,
) -> Result<(i64, i64), StoreError> {
    Ok(inbox::Entity::find_by_id(device_id.to_owned())
        .one(db)
        .await?
        .map(|row| (row.acked_seq, row.last_seq))
        .unwrap_or((0, 0)))
}

pub(crate) async fn inbox_events_after(
    db: &impl Connection,
    device_id: &str,
    after_seq: i64,
    limit: u64,
) -> Result<Vec<InboxEventRecord>, StoreError> {
    Ok(inbox_event::Entity::find()
        .filter(inbox_event::Column::DeviceId.eq(device_id))
        .filter(inbox_event::Column::Seq.gt(after_seq))
        .order_by_asc(inbox_event::Column::Seq)
        .limit(limit)
        .all(db)
        .await?)
}

/// Moves the inbox cursor forward and deletes what it passed: an inbox entry is
/// for one device, so once acknowledged it is never needed again.
pub(crate) async fn advance_inbox_cursor(
    db: &impl Connection,
    device_id: &str,
    seq: i64,
) -> Result<(), StoreError> {
    inbox::Entity::update_many()
        .col_expr(inbox::Column::AckedSeq, Expr::value(seq))
        .filter(inbox::Column::DeviceId.eq(device_id))
        .filter(inbox::Column::AckedSeq.lt(seq))
        .exec(db)
        .await?;
    inbox_event::Entity::delete_many()
        .filter(inbox_event::Column::DeviceId.eq(device_id))
        .filter(inbox_event::Column::Seq.lte(seq))
        .exec(db)
        .await?;
    Ok(())
}

/// Log entries no local device and no follower domain still needs: at or below
/// the cursor of every local member device that has yet to read them, and of
/// every follower domain that has yet to receive them (devices of other domains
/// are their homeservers' concern). With neither, the whole log may go. `{old}`
/// is the retention cutoff's placeholder.
macro_rules! prune_events_sql {
    ($old:literal) => {
        concat!(
            "DELETE FROM group_events WHERE created_at_ms < ",
            $old,
            " OR (seq <= ( \
               SELECT COALESCE(MIN(m.acked_seq), (SELECT g.last_seq FROM groups g WHERE g.id = group_events.group_id)) \
               FROM group_members m WHERE m.group_id = group_events.group_id \
                 AND m.remote_domain IS NULL \
                 AND (m.removed_at_seq IS NULL OR m.acked_seq < m.removed_at_seq)) \
             AND seq <= ( \
               SELECT COALESCE(MIN(p.delivered_seq), (SELECT g.last_seq FROM groups g WHERE g.id = group_events.group_id)) \
               FROM federation_peer_groups p WHERE p.group_id = group_events.group_id \
                 AND (p.until_seq IS NULL OR p.delivered_seq < p.until_seq)))"
        )
    };
}
const PRUNE_EVENTS_POSTGRES: &str = prune_events_sql!("$1");
const PRUNE_EVENTS_SQLITE: &str = prune_events_sql!("?1");

/// Deletes log entries no device still needs: those at or below the cursor of
/// every member device that has yet to read them, and those older than
/// `retention_cutoff_ms` whatever the cursors say (a device that was offline that
/// long rejoins by external commit). Also forgets idempotency records older than
/// `submission_cutoff_ms`. Returns the number of log entries deleted.
pub(crate) async fn prune_group_events(
    db: &impl Connection,
    kind: crate::config::DatabaseKind,
    retention_cutoff_ms: i64,
    submission_cutoff_ms: i64,
) -> Result<u64, StoreError> {
    use crate::config::DatabaseKind;
    use sea_orm::Statement;
    // A member still needs events if it is current, or removed but has not yet
    // read up to its removal. With no such member, the whole log may go.
    let (backend, prune_events, prune_submissions) = match kind {
        DatabaseKind::Postgres => (
            sea_orm::DbBackend::Postgres,
            PRUNE_EVENTS_POSTGRES,
            "DELETE FROM submissions WHERE created_at_ms < $1",
        ),
        DatabaseKind::Sqlite => (
            sea_orm::DbBackend::Sqlite,
            PRUNE_EVENTS_SQLITE,
            "DELETE FROM submissions WHERE created_at_ms < ?1",
        ),
    };
    let deleted = db
        .execute_raw(Statement::from_sql_and_values(
            backend,
            prune_events,
            [retention_cutoff_ms.into()],
        ))
        .await?
        .rows_affected();
    db.execute_raw(Statement::from_sql_and_values(
        backend,
        prune_submissions,
        [submission_cutoff_ms.into()],
    ))
    .await?;
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use conclave_test_support::{DatabaseChoice, TestDatabase};

    /// Log entries of test groups: `LOG_LENGTH` each.
    const LOG_LENGTH: i64 = 10;
    /// Creation times far above the retention cutoff, for groups whose log must
    /// be pruned by cursors alone.
    const RECENT_MS: i64 = 1_000_000;
    /// The retention cutoff of the test: only the log of the group whose events
    /// were made at 1000, 2000, ... ms has events older than this (seqs 1 to 5).
    const RETENTION_CUTOFF_MS: i64 = 5_500;

    /// A group whose log holds `LOG_LENGTH` events, event `seq` made at
    /// `created_at_ms(seq)`.
    async fn group_with_log(store: &Store, name: &str, created_at_ms: impl Fn(i64) -> i64) -> i64 {
        let db = store.connection();
        let group = insert_group(db, name.as_bytes(), 0, Vec::new(), "creator", 0)
            .await
            .unwrap()
            .unwrap();
        for seq in 1..=LOG_LENGTH {
            let event = NewEvent {
                group_row_id: group.id,
                seq,
                kind: EventKind::Application,
                epoch: 0,
                sender_identity: "sender",
                message: b"message",
                now_ms: created_at_ms(seq),
                trace_parent: None,
            };
            append_event(db, event).await.unwrap();
        }
        update_group(db, group.id, 0, LOG_LENGTH, None)
            .await
            .unwrap();
        group.id
    }

    /// A member device that joined after `joined_after_seq`, acknowledged up to
    /// `acked_seq`, and was removed by the commit at `removed_at_seq`, if given.
    async fn member(
        store: &Store,
        group_row_id: i64,
        name: &str,
        joined_after_seq: i64,
        acked_seq: i64,
        removed_at_seq: Option<i64>,
    ) {
        let db = store.connection();
        let identity = format!("{name}@localhost/00000000000000a1");
        let user_id = format!("{name}@localhost");
        upsert_member(
            db,
            group_row_id,
            &identity,
            &user_id,
            "00000000000000a1",
            joined_after_seq,
            None,
        )
        .await
        .unwrap();
        advance_member_cursor(db, group_row_id, &identity, acked_seq)
            .await
            .unwrap();
        if let Some(seq) = removed_at_seq {
            mark_removed(db, group_row_id, &identity, seq)
                .await
                .unwrap();
        }
    }

    async fn remaining(store: &Store, group_row_id: i64) -> Vec<i64> {
        events_after(store.connection(), group_row_id, 0, None, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|event| event.seq)
            .collect()
    }

    async fn submission(store: &Store, key: &[u8], created_at_ms: i64) {
        let record = SubmissionRecord {
            identity: "alice@localhost/00000000000000a1".to_owned(),
            idempotency_key: key.to_vec(),
            request_hash: vec![0; 32],
            group_id: 0,
            seq: 1,
            epoch: 0,
            created_at_ms,
        };
        insert_submission(store.connection(), record).await.unwrap();
    }

    #[tokio::test]
    async fn pruning_deletes_only_what_no_member_needs_or_what_is_too_old() {
        for choice in DatabaseChoice::ALL {
            check_pruning(choice).await;
        }
    }

    async fn check_pruning(choice: DatabaseChoice) {
        let database = TestDatabase::create(choice).await;
        let store = Store::connect(database.url(), 2).await.unwrap();
        store.migrate().await.unwrap();
        let recent = |seq| RECENT_MS + seq;

        // (case, group, events expected to remain)
        let mut cases = Vec::new();
        let group = group_with_log(&store, "cursors", recent).await;
        member(&store, group, "alice", 0, 7, None).await;
        member(&store, group, "bob", 0, 4, None).await;
        cases.push((
            "the lowest cursor of current members",
            group,
            (5..=10).collect(),
        ));

        let group = group_with_log(&store, "late joiner", recent).await;
        member(&store, group, "alice", 0, 6, None).await;
        member(&store, group, "dave", 8, 8, None).await;
        cases.push((
            "a member added later holds nothing back",
            group,
            (7..=10).collect(),
        ));

        let group = group_with_log(&store, "removed, unread", recent).await;
        member(&store, group, "alice", 0, 10, None).await;
        member(&store, group, "carol", 0, 3, Some(6)).await;
        cases.push((
            "a removed member that has not read its removal",
            group,
            (4..=10).collect(),
        ));

        let group = group_with_log(&store, "removed, read", recent).await;
        member(&store, group, "alice", 0, 9, None).await;
        member(&store, group, "carol", 0, 6, Some(6)).await;
        cases.push(("a removed member that read its removal", group, vec![10]));

        let group = group_with_log(&store, "nobody left", recent).await;
        member(&store, group, "carol", 0, 5, Some(5)).await;
        cases.push(("no member needs anything", group, Vec::new()));

        let group = group_with_log(&store, "old", |seq| seq * 1000).await;
        member(&store, group, "alice", 0, 2, None).await;
        cases.push((
            "events older than the retention go, read or not",
            group,
            (6..=10).collect(),
        ));

        submission(&store, b"old", RETENTION_CUTOFF_MS - 1).await;
        submission(&store, b"recent", RECENT_MS).await;

        let deleted = prune_group_events(
            store.connection(),
            store.kind(),
            RETENTION_CUTOFF_MS,
            RETENTION_CUTOFF_MS,
        )
        .await
        .unwrap();
        let mut expected_deleted = 0;
        for (case, group, expected) in cases {
            let expected: Vec<i64> = expected;
            assert_eq!(
                remaining(&store, group).await,
                expected,
                "{choice:?}: {case}"
            );
            expected_deleted += LOG_LENGTH as u64 - expected.len() as u64;
        }
        assert_eq!(deleted, expected_deleted, "{choice:?}: deleted count");
        let identity = "alice@localhost/00000000000000a1";
        assert!(
            find_submission(store.connection(), identity, b"old")
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            find_submission(store.connection(), identity, b"recent")
                .await
                .unwrap()
                .is_some()
        );

        // Pruning again deletes nothing more.
        let again = prune_group_events(store.connection(), store.kind(), RETENTION_CUTOFF_MS, 0)
            .await
            .unwrap();
        assert_eq!(again, 0, "{choice:?}");
        store.close().await.unwrap();
    }
}
