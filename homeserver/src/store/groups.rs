//! Queries for group rows: hosted groups (locked while a submission is applied)
//! and their public state, followers' copies, and each epoch's one commit.

use super::convert::{epoch_to_db, group_row, seq_to_db, to_epoch, to_seq, to_u64};
use super::entities::{group, group_commit};
use super::{Connection, StoreError, Transaction};
use crate::rules::ids::{Epoch, GroupId, GroupKey, Seq};
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QuerySelect, Set};

/// A group hosted here, with its public state.
#[derive(Debug, Clone)]
pub(crate) struct HostedGroup {
    pub(crate) key: GroupKey,
    pub(crate) group_id: GroupId,
    pub(crate) epoch: Epoch,
    /// The newest event of the log (0: none yet).
    pub(crate) last_seq: Seq,
    /// The serialised public group state (`rules::hub::HubGroup::to_state`).
    pub(crate) state: Vec<u8>,
    /// The commit whose Welcome row holds the state (see [`NewState`]).
    pub(crate) state_welcome_seq: Option<Seq>,
}

/// A hosted group's row, its state read wherever it is ([`current_state`]).
#[derive(Debug, Clone, sea_orm::FromQueryResult)]
struct HostedRow {
    id: i64,
    mls_group_id: Vec<u8>,
    epoch: i64,
    last_seq: i64,
    state: Vec<u8>,
    state_welcome_seq: Option<i64>,
}

impl TryFrom<HostedRow> for HostedGroup {
    type Error = StoreError;
    fn try_from(row: HostedRow) -> Result<HostedGroup, StoreError> {
        let name = group_row(GroupKey::from_row(row.id));
        Ok(HostedGroup {
            key: GroupKey::from_row(row.id),
            epoch: to_epoch(row.epoch, &name, "epoch")?,
            last_seq: to_seq(row.last_seq, &name, "last_seq")?,
            group_id: GroupId::new(row.mls_group_id),
            state: row.state,
            state_welcome_seq: row
                .state_welcome_seq
                .map(|seq| to_seq(seq, &name, "state_welcome_seq"))
                .transpose()?,
        })
    }
}

impl TryFrom<group::Model> for HostedGroup {
    type Error = StoreError;
    fn try_from(model: group::Model) -> Result<HostedGroup, StoreError> {
        HostedGroup::try_from(HostedRow {
            id: model.id,
            mls_group_id: model.mls_group_id,
            epoch: model.epoch,
            last_seq: model.last_seq,
            state: model.state,
            state_welcome_seq: model.state_welcome_seq,
        })
    }
}

/// A hosted group's current state, wherever it is stored: the Welcome row of
/// the commit `state_welcome_seq` names (`welcome_states`), or else the
/// group's own row.
pub(super) fn current_state() -> sea_orm::sea_query::SimpleExpr {
    Expr::cust(
        "COALESCE((SELECT w.state FROM welcome_states w \
           WHERE w.group_id = groups.id AND w.commit_seq = groups.state_welcome_seq), \
         groups.state)",
    )
}

/// Narrows a query on groups to a hosted group's columns, its state read
/// wherever it is (in one statement: not for a row to lock, see
/// [`lock_group`]).
fn hosted_columns(select: sea_orm::Select<group::Entity>) -> sea_orm::Select<group::Entity> {
    select
        .select_only()
        .columns([
            group::Column::Id,
            group::Column::MlsGroupId,
            group::Column::Epoch,
            group::Column::LastSeq,
            group::Column::StateWelcomeSeq,
        ])
        .expr_as(current_state(), "state")
        .filter(group::Column::HubDomain.is_null())
}

/// Inserts a group hosted here; `Ok(None)` if its MLS group id is taken.
pub(crate) async fn insert_group(
    db: &impl Connection,
    group_id: &GroupId,
    epoch: Epoch,
    state: Vec<u8>,
    created_by: &str,
    now_ms: i64,
) -> Result<Option<HostedGroup>, StoreError> {
    let model = group::ActiveModel {
        mls_group_id: Set(group_id.as_bytes().to_vec()),
        epoch: Set(epoch_to_db(epoch)?),
        last_seq: Set(0),
        state: Set(state),
        created_by: Set(created_by.to_owned()),
        created_at_ms: Set(now_ms),
        last_activity_at_ms: Set(now_ms),
        last_commit_at_ms: Set(None),
        ..Default::default()
    };
    match model.insert(db.database()).await.map_err(StoreError::from) {
        Ok(record) => Ok(Some(record.try_into()?)),
        Err(error) if error.is_unique_violation() => Ok(None),
        Err(error) => Err(error),
    }
}

/// Loads a group hosted here and locks its row until the transaction ends (`FOR
/// UPDATE` on PostgreSQL; on SQLite the IMMEDIATE transaction already holds the
/// write lock), so submissions to one group are applied one at a time, on every
/// replica.
///
/// The state is read by a second statement, once the lock is held: on
/// PostgreSQL a statement that waited for the lock sees the row's newest
/// version, but its subqueries still read from before the wait, and would
/// miss the Welcome row holding the state that the commit it waited for wrote
/// ([`current_state`]).
pub(crate) async fn lock_group(
    db: &Transaction,
    group_id: &GroupId,
) -> Result<Option<HostedGroup>, StoreError> {
    let Some(header) = lock_group_header(db, group_id, Hosting::HostedHere).await? else {
        return Ok(None);
    };
    let state = hosted_group_state(db, header.key).await?.ok_or_else(|| {
        StoreError::Corrupt(format!("{}: locked, then not found", group_row(header.key)))
    })?;
    Ok(Some(HostedGroup {
        key: header.key,
        group_id: header.group_id,
        epoch: header.epoch,
        last_seq: header.last_seq,
        state,
        state_welcome_seq: header.state_welcome_seq,
    }))
}

/// A group's row without its (possibly large) state: a group hosted here, or a
/// follower's copy of one hosted elsewhere.
#[derive(Debug, Clone)]
pub(crate) struct GroupHeader {
    pub(crate) key: GroupKey,
    pub(crate) group_id: GroupId,
    pub(crate) epoch: Epoch,
    pub(crate) last_seq: Seq,
    /// The hub's domain for a follower's copy; `None` if hosted here.
    pub(crate) hub_domain: Option<String>,
    /// At a follower: the group's member count as the hub last reported it.
    pub(crate) hub_member_count: Option<u64>,
    /// At the hub: the commit whose Welcome row holds the state (see
    /// [`NewState`]).
    pub(crate) state_welcome_seq: Option<Seq>,
}

#[derive(Debug, Clone, sea_orm::FromQueryResult)]
struct HeaderRow {
    id: i64,
    mls_group_id: Vec<u8>,
    epoch: i64,
    last_seq: i64,
    hub_domain: Option<String>,
    hub_member_count: Option<i64>,
    state_welcome_seq: Option<i64>,
}

impl TryFrom<HeaderRow> for GroupHeader {
    type Error = StoreError;
    fn try_from(row: HeaderRow) -> Result<GroupHeader, StoreError> {
        let key = GroupKey::from_row(row.id);
        let name = group_row(key);
        Ok(GroupHeader {
            key,
            group_id: GroupId::new(row.mls_group_id),
            epoch: to_epoch(row.epoch, &name, "epoch")?,
            last_seq: to_seq(row.last_seq, &name, "last_seq")?,
            hub_domain: row.hub_domain,
            hub_member_count: row
                .hub_member_count
                .map(|count| to_u64(count, &name, "hub_member_count"))
                .transpose()?,
            state_welcome_seq: row
                .state_welcome_seq
                .map(|seq| to_seq(seq, &name, "state_welcome_seq"))
                .transpose()?,
        })
    }
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
        group::Column::StateWelcomeSeq,
    ])
}

/// The one group header `query` (narrowed by [`header_columns`]) finds.
async fn one_header(
    db: &impl Connection,
    query: sea_orm::Select<group::Entity>,
) -> Result<Option<GroupHeader>, StoreError> {
    query
        .into_model::<HeaderRow>()
        .one(db.database())
        .await?
        .map(GroupHeader::try_from)
        .transpose()
}

/// Every group header `query` (narrowed by [`header_columns`]) finds.
async fn all_headers(
    db: &impl Connection,
    query: sea_orm::Select<group::Entity>,
) -> Result<Vec<GroupHeader>, StoreError> {
    query
        .into_model::<HeaderRow>()
        .all(db.database())
        .await?
        .into_iter()
        .map(GroupHeader::try_from)
        .collect()
}

/// Which groups a header lookup may find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hosting {
    /// Groups hosted here only.
    HostedHere,
    /// Hosted here, or a follower's copy.
    Any,
}

/// Loads the light part of a group and locks its row (see [`lock_group`]).
pub(crate) async fn lock_group_header(
    db: &Transaction,
    group_id: &GroupId,
    hosting: Hosting,
) -> Result<Option<GroupHeader>, StoreError> {
    let mut query = header_columns(group::Entity::find())
        .filter(group::Column::MlsGroupId.eq(group_id.as_bytes().to_vec()));
    if hosting == Hosting::HostedHere {
        query = query.filter(group::Column::HubDomain.is_null());
    }
    one_header(db, query.lock_exclusive()).await
}

/// Loads the light parts of those of these groups hosted here whose rows no
/// other transaction holds, and locks them until this transaction ends (`FOR
/// UPDATE SKIP LOCKED`, in the rows' order). A group whose row is held
/// elsewhere (a commit being applied, another replica's batch) is left out as
/// if unknown, and the caller takes it alone with [`lock_group_header`], which
/// waits. Never waiting is what lets one transaction hold several groups' rows
/// without deadlocking with another that holds some of them. On SQLite the
/// IMMEDIATE transaction already holds the whole database, so every group
/// hosted here is found.
pub(crate) async fn lock_unheld_hosted_group_headers(
    db: &Transaction,
    group_ids: &[GroupId],
) -> Result<Vec<GroupHeader>, StoreError> {
    use sea_orm::QueryOrder;
    use sea_orm::sea_query::{LockBehavior, LockType};
    if group_ids.is_empty() {
        return Ok(Vec::new());
    }
    let query = header_columns(group::Entity::find())
        .filter(group::Column::MlsGroupId.is_in(group_ids.iter().map(|id| id.as_bytes().to_vec())))
        .filter(group::Column::HubDomain.is_null())
        .order_by_asc(group::Column::Id)
        .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
    all_headers(db, query).await
}

/// Which of these groups are hosted here (no lock: what a batch that could
/// not lock some of them asks, to tell a row held elsewhere from no row).
pub(crate) async fn hosted_group_ids(
    db: &impl Connection,
    group_ids: &[GroupId],
) -> Result<std::collections::HashSet<GroupId>, StoreError> {
    use sea_orm::QuerySelect;
    if group_ids.is_empty() {
        return Ok(std::collections::HashSet::new());
    }
    let found: Vec<Vec<u8>> = group::Entity::find()
        .select_only()
        .column(group::Column::MlsGroupId)
        .filter(group::Column::MlsGroupId.is_in(group_ids.iter().map(|id| id.as_bytes().to_vec())))
        .filter(group::Column::HubDomain.is_null())
        .into_tuple()
        .all(db.database())
        .await?;
    Ok(found.into_iter().map(GroupId::new).collect())
}

/// The light part of a group, without locking.
pub(crate) async fn find_group_header(
    db: &impl Connection,
    group_id: &GroupId,
) -> Result<Option<GroupHeader>, StoreError> {
    let query = header_columns(group::Entity::find())
        .filter(group::Column::MlsGroupId.eq(group_id.as_bytes().to_vec()));
    one_header(db, query).await
}

/// A group hosted here, with its state.
pub(crate) async fn find_hosted_group(
    db: &impl Connection,
    group_id: &GroupId,
) -> Result<Option<HostedGroup>, StoreError> {
    hosted_columns(group::Entity::find())
        .filter(group::Column::MlsGroupId.eq(group_id.as_bytes().to_vec()))
        .into_model::<HostedRow>()
        .one(db.database())
        .await?
        .map(HostedGroup::try_from)
        .transpose()
}

pub(crate) async fn find_group_headers(
    db: &impl Connection,
    keys: &[GroupKey],
) -> Result<Vec<GroupHeader>, StoreError> {
    let query = header_columns(group::Entity::find())
        .filter(group::Column::Id.is_in(keys.iter().map(|key| key.row_id())));
    all_headers(db, query).await
}

/// Where a submission leaves a hosted group's state.
#[derive(Debug)]
pub(crate) enum NewState {
    /// Where it was: the submission did not change it.
    Unchanged,
    /// In the group's row.
    InRow(Vec<u8>),
    /// In the Welcome row of the commit at this sequence number
    /// (`welcome_states.state`, written by the same transaction): a commit
    /// that adds devices of this domain stores the state once, for the group
    /// and for its Welcome's ratchet tree, instead of twice. The group's row
    /// then holds no copy.
    BesideWelcome(Seq),
}

/// Saves a group's new epoch, newest sequence number and state (see
/// [`NewState`]). The event at `last_seq`, appended before in the same
/// transaction, gives the group's last activity, and its last commit when the
/// epoch moves (see [`with_activity`]). When the state moves off a Welcome
/// row, the caller releases that row ([`super::release_state_holder`]).
pub(crate) async fn update_group(
    db: &Transaction,
    key: GroupKey,
    epoch: Epoch,
    last_seq: Seq,
    state: NewState,
) -> Result<(), StoreError> {
    let update = with_activity(group::Entity::update_many(), key, epoch, last_seq)?;
    let mut update = update
        .col_expr(group::Column::Epoch, Expr::value(epoch_to_db(epoch)?))
        .col_expr(group::Column::LastSeq, Expr::value(seq_to_db(last_seq)?));
    match state {
        NewState::Unchanged => {}
        NewState::InRow(state) => {
            update = update
                .col_expr(group::Column::State, Expr::value(state))
                .col_expr(group::Column::StateWelcomeSeq, Expr::value(None::<i64>));
        }
        NewState::BesideWelcome(commit_seq) => {
            update = update
                .col_expr(group::Column::State, Expr::value(Vec::<u8>::new()))
                .col_expr(
                    group::Column::StateWelcomeSeq,
                    Expr::value(seq_to_db(commit_seq)?),
                );
        }
    }
    update
        .filter(group::Column::Id.eq(key.row_id()))
        .exec(db.database())
        .await?;
    Ok(())
}

/// Sets a group's `last_activity_at_ms` (and, when `epoch` is not the stored
/// one, `last_commit_at_ms`) to the time of its log entry at `last_seq`, read
/// in the UPDATE itself: no caller passes a time, and the column stays what it
/// was if there is no such entry. A primary-key lookup of the row just
/// inserted, so an append costs no extra statement.
pub(super) fn with_activity(
    update: sea_orm::UpdateMany<group::Entity>,
    key: GroupKey,
    epoch: Epoch,
    last_seq: Seq,
) -> Result<sea_orm::UpdateMany<group::Entity>, StoreError> {
    use super::entities::group_event;
    use sea_orm::sea_query::{ExprTrait as _, Func, Query};
    // Qualified: `groups` has a `created_at_ms` of its own.
    let event_time = Query::select()
        .column((group_event::Entity, group_event::Column::CreatedAtMs))
        .from(group_event::Entity)
        .and_where(Expr::col((group_event::Entity, group_event::Column::GroupId)).eq(key.row_id()))
        .and_where(
            Expr::col((group_event::Entity, group_event::Column::Seq)).eq(seq_to_db(last_seq)?),
        )
        .to_owned();
    let activity = Func::coalesce([
        Expr::from(event_time.clone()),
        Expr::col(group::Column::LastActivityAtMs),
    ]);
    let commit_time = Expr::case(
        Expr::col(group::Column::Epoch).ne(epoch_to_db(epoch)?),
        Func::coalesce([
            Expr::from(event_time),
            Expr::col(group::Column::LastCommitAtMs),
        ]),
    )
    .finally(Expr::col(group::Column::LastCommitAtMs));
    Ok(update
        .col_expr(group::Column::LastActivityAtMs, activity.into())
        .col_expr(group::Column::LastCommitAtMs, commit_time.into()))
}

/// Records the commit that ended `epoch`; `Ok(false)` if that epoch has one.
pub(crate) async fn insert_commit(
    db: &Transaction,
    key: GroupKey,
    epoch: Epoch,
    seq: Seq,
) -> Result<bool, StoreError> {
    let model = group_commit::ActiveModel {
        group_id: Set(key.row_id()),
        epoch: Set(epoch_to_db(epoch)?),
        seq: Set(seq_to_db(seq)?),
    };
    super::insert_unless_taken(db, model).await
}

/// Sequence number of the commit that ended `epoch`.
pub(crate) async fn commit_seq(
    db: &impl Connection,
    key: GroupKey,
    epoch: Epoch,
) -> Result<Option<Seq>, StoreError> {
    group_commit::Entity::find()
        .select_only()
        .column(group_commit::Column::Seq)
        .filter(group_commit::Column::GroupId.eq(key.row_id()))
        .filter(group_commit::Column::Epoch.eq(epoch_to_db(epoch)?))
        .into_tuple::<i64>()
        .one(db.database())
        .await?
        .map(|seq| to_seq(seq, group_row(key), "group_commits.seq"))
        .transpose()
}

/// The serialised public state of a group hosted here (read once its row is
/// locked, and only when the hub has no exact copy of it in memory).
pub(crate) async fn hosted_group_state(
    db: &impl Connection,
    key: GroupKey,
) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(group::Entity::find()
        .select_only()
        .expr(current_state())
        .filter(group::Column::Id.eq(key.row_id()))
        .filter(group::Column::HubDomain.is_null())
        .into_tuple::<Vec<u8>>()
        .one(db.database())
        .await?)
}

/// True if a log entry in `(after, up_to]` changed the group's public state: a
/// commit or a proposal (a range of the primary key, so only those entries
/// are read). Also true when an entry of the range is gone: pruning deletes
/// entries every device acknowledged, and a pruned one may have been a
/// proposal (sequence numbers have no gaps, so a missing one was pruned).
pub(crate) async fn state_changed_between(
    db: &impl Connection,
    key: GroupKey,
    after: Seq,
    up_to: Seq,
) -> Result<bool, StoreError> {
    use super::EventKind;
    use super::entities::group_event;
    use sea_orm::PaginatorTrait;
    let present = group_event::Entity::find()
        .filter(group_event::Column::GroupId.eq(key.row_id()))
        .filter(group_event::Column::Seq.gt(seq_to_db(after)?))
        .filter(group_event::Column::Seq.lte(seq_to_db(up_to)?))
        .count(db.database())
        .await?;
    if present < up_to.get().saturating_sub(after.get()) {
        return Ok(true);
    }
    let changes = group_event::Entity::find()
        .select_only()
        .column(group_event::Column::Seq)
        .filter(group_event::Column::GroupId.eq(key.row_id()))
        .filter(group_event::Column::Seq.gt(seq_to_db(after)?))
        .filter(group_event::Column::Seq.lte(seq_to_db(up_to)?))
        .filter(
            group_event::Column::Kind.is_in([EventKind::Commit as i16, EventKind::Proposal as i16]),
        )
        .limit(1)
        .into_tuple::<i64>()
        .one(db.database())
        .await?;
    Ok(changes.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::heads::tests::insert_test_device;
    use crate::store::{SharedWelcome, Store, append_shared_welcome};
    use conclave_test_support::{DatabaseChoice, TestDatabase};
    use sea_orm::{ConnectionTrait as _, Statement};
    use std::time::Duration;

    /// How many sessions on the store's database wait for a lock now.
    async fn lock_waiters(store: &Store) -> i64 {
        store
            .database()
            .query_one_raw(Statement::from_string(
                sea_orm::DatabaseBackend::Postgres,
                "SELECT count(*) AS waiting FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
            ))
            .await
            .unwrap()
            .unwrap()
            .try_get::<i64>("", "waiting")
            .unwrap()
    }

    /// A submission that waited for the group's row while a commit adding a
    /// device stored the state with its Welcome reads that state, not the
    /// empty row it left behind (PostgreSQL, where a statement that waited for
    /// a lock reads other tables as they were before the wait).
    #[tokio::test]
    async fn a_lock_that_waited_for_an_add_commit_reads_the_state_it_stored() {
        let database = TestDatabase::create(DatabaseChoice::Postgres).await;
        let store = Store::connect(database.url(), 3).await.unwrap();
        store.migrate().await.unwrap();
        let group_id = GroupId::new(vec![7]);
        let group = insert_group(&store, &group_id, Epoch::new(0), b"first".to_vec(), "d1", 0)
            .await
            .unwrap()
            .unwrap();
        let device = "00000000000000f1";
        insert_test_device(&store, device).await;

        let commit = store.begin().await.unwrap();
        lock_group(&commit, &group_id).await.unwrap().unwrap();
        let new_state = NewState::BesideWelcome(Seq::new(1));
        update_group(&commit, group.key, Epoch::new(1), Seq::new(1), new_state)
            .await
            .unwrap();
        let welcome = SharedWelcome {
            group: group.key,
            commit_seq: Seq::new(1),
            welcome: b"welcome",
            state: b"second",
            now_ms: 0,
        };
        append_shared_welcome(&commit, welcome, &[device])
            .await
            .unwrap();

        let waiting = tokio::spawn({
            let store = store.clone();
            let group_id = group_id.clone();
            async move {
                let transaction = store.begin().await.unwrap();
                lock_group(&transaction, &group_id).await.unwrap().unwrap()
            }
        });
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while lock_waiters(&store).await == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the second lock never waited"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        commit.commit().await.unwrap();
        let locked = waiting.await.unwrap();
        assert_eq!(
            (locked.state.as_slice(), locked.state_welcome_seq),
            (&b"second"[..], Some(Seq::new(1)))
        );
    }
}
