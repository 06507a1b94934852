//! Queries for groups that span domains. At the hub: follower domains' outbox
//! cursors, the membership changes and Welcomes kept for them, and each peer's
//! delivery status. At a follower: its copies of groups hosted elsewhere.

use super::convert::{group_row, seq_to_db, to_i64, to_seq, to_u64};
use super::entities::{
    federation_peer, federation_peer_group, group, group_member, remote_membership_change,
    remote_welcome,
};
use super::{Connection, StoreError, Transaction};
use crate::rules::federation::FollowerCursor;
use crate::rules::ids::{GroupId, GroupKey, Seq};
use sea_orm::ConnectionTrait;
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, FromQueryResult, QueryFilter, QueryOrder,
    QuerySelect, Set, Statement,
};

/// A peer's delivery status, for operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PeerStatusRecord {
    pub(crate) domain: String,
    pub(crate) last_success_at_ms: Option<i64>,
    pub(crate) last_error: Option<String>,
    pub(crate) last_error_at_ms: Option<i64>,
    pub(crate) consecutive_failures: u64,
}

/// A follower domain's cursor in a group's log.
pub(crate) async fn find_peer_cursor(
    db: &impl Connection,
    group: GroupKey,
    peer_domain: &str,
) -> Result<Option<FollowerCursor>, StoreError> {
    let Some(model) =
        federation_peer_group::Entity::find_by_id((group.row_id(), peer_domain.to_owned()))
            .one(db.database())
            .await?
    else {
        return Ok(None);
    };
    let row = format!("{} cursor of {peer_domain}", group_row(group));
    Ok(Some(FollowerCursor {
        joined_after_seq: to_seq(model.joined_after_seq, &row, "joined_after_seq")?,
        delivered_seq: to_seq(model.delivered_seq, &row, "delivered_seq")?,
        until_seq: model
            .until_seq
            .map(|seq| to_seq(seq, &row, "until_seq"))
            .transpose()?,
    }))
}

/// Inserts or replaces a follower domain's cursor.
pub(crate) async fn save_peer_cursor(
    db: &Transaction,
    group: GroupKey,
    peer_domain: &str,
    cursor: FollowerCursor,
) -> Result<(), StoreError> {
    let model = federation_peer_group::ActiveModel {
        group_id: Set(group.row_id()),
        peer_domain: Set(peer_domain.to_owned()),
        joined_after_seq: Set(seq_to_db(cursor.joined_after_seq)?),
        delivered_seq: Set(seq_to_db(cursor.delivered_seq)?),
        until_seq: Set(cursor.until_seq.map(seq_to_db).transpose()?),
    };
    federation_peer_group::Entity::insert(model)
        .on_conflict(
            OnConflict::columns([
                federation_peer_group::Column::GroupId,
                federation_peer_group::Column::PeerDomain,
            ])
            .update_columns([
                federation_peer_group::Column::JoinedAfterSeq,
                federation_peer_group::Column::DeliveredSeq,
                federation_peer_group::Column::UntilSeq,
            ])
            .to_owned(),
        )
        .exec_without_returning(db.database())
        .await?;
    Ok(())
}

/// Moves a follower domain's cursor to `seq`: what the follower reported having.
pub(crate) async fn set_peer_delivered(
    db: &impl Connection,
    group: GroupKey,
    peer_domain: &str,
    seq: Seq,
) -> Result<(), StoreError> {
    federation_peer_group::Entity::update_many()
        .col_expr(
            federation_peer_group::Column::DeliveredSeq,
            Expr::value(seq_to_db(seq)?),
        )
        .filter(federation_peer_group::Column::GroupId.eq(group.row_id()))
        .filter(federation_peer_group::Column::PeerDomain.eq(peer_domain))
        .exec(db.database())
        .await?;
    Ok(())
}

/// True if some follower domain still receives the group's events.
pub(crate) async fn has_followers(
    db: &impl Connection,
    group: GroupKey,
) -> Result<bool, StoreError> {
    Ok(federation_peer_group::Entity::find()
        .filter(federation_peer_group::Column::GroupId.eq(group.row_id()))
        .filter(federation_peer_group::Column::UntilSeq.is_null())
        .one(db.database())
        .await?
        .is_some())
}

/// Ends a follower domain's delivery of a group at `seq`, as if its last device
/// had left there.
pub(crate) async fn end_peer_delivery(
    db: &impl Connection,
    group: GroupKey,
    peer_domain: &str,
    seq: Seq,
) -> Result<(), StoreError> {
    let seq = seq_to_db(seq)?;
    federation_peer_group::Entity::update_many()
        .col_expr(
            federation_peer_group::Column::DeliveredSeq,
            Expr::value(seq),
        )
        .col_expr(federation_peer_group::Column::UntilSeq, Expr::value(seq))
        .filter(federation_peer_group::Column::GroupId.eq(group.row_id()))
        .filter(federation_peer_group::Column::PeerDomain.eq(peer_domain))
        .exec(db.database())
        .await?;
    Ok(())
}

/// The domains other than this one with a current member device in the group.
pub(crate) async fn remote_domains_with_members(
    db: &impl Connection,
    group: GroupKey,
) -> Result<Vec<String>, StoreError> {
    Ok(group_member::Entity::find()
        .select_only()
        .column(group_member::Column::RemoteDomain)
        .distinct()
        .filter(group_member::Column::GroupId.eq(group.row_id()))
        .filter(group_member::Column::RemovedAtSeq.is_null())
        .filter(group_member::Column::RemoteDomain.is_not_null())
        .into_tuple::<String>()
        .all(db.database())
        .await?)
}

/// A device of a follower domain that a commit added or removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MembershipChangeRecord {
    pub(crate) group: GroupKey,
    /// The commit.
    pub(crate) seq: Seq,
    pub(crate) identity: String,
    pub(crate) domain: String,
    /// Added (true) or removed (false).
    pub(crate) added: bool,
}

pub(crate) async fn insert_membership_change(
    db: &Transaction,
    change: MembershipChangeRecord,
) -> Result<(), StoreError> {
    let model = remote_membership_change::ActiveModel {
        group_id: Set(change.group.row_id()),
        seq: Set(seq_to_db(change.seq)?),
        identity: Set(change.identity),
        domain: Set(change.domain),
        added: Set(change.added),
    };
    remote_membership_change::Entity::insert(model)
        .on_conflict(
            OnConflict::columns([
                remote_membership_change::Column::GroupId,
                remote_membership_change::Column::Seq,
                remote_membership_change::Column::Identity,
            ])
            .do_nothing()
            .to_owned(),
        )
        .exec_without_returning(db.database())
        .await?;
    Ok(())
}

/// The changes for devices of `domain` made by commits in `(after_seq, up_to_seq]`.
pub(crate) async fn membership_changes(
    db: &impl Connection,
    group: GroupKey,
    domain: &str,
    after_seq: Seq,
    up_to_seq: Seq,
) -> Result<Vec<MembershipChangeRecord>, StoreError> {
    remote_membership_change::Entity::find()
        .filter(remote_membership_change::Column::GroupId.eq(group.row_id()))
        .filter(remote_membership_change::Column::Domain.eq(domain))
        .filter(remote_membership_change::Column::Seq.gt(seq_to_db(after_seq)?))
        .filter(remote_membership_change::Column::Seq.lte(seq_to_db(up_to_seq)?))
        .order_by_asc(remote_membership_change::Column::Seq)
        .order_by_asc(remote_membership_change::Column::Identity)
        .all(db.database())
        .await?
        .into_iter()
        .map(|model| {
            let row = format!("{} membership change", group_row(group));
            Ok(MembershipChangeRecord {
                group,
                seq: to_seq(model.seq, &row, "seq")?,
                identity: model.identity,
                domain: model.domain,
                added: model.added,
            })
        })
        .collect()
}

/// The Welcome of the commit at `seq` and the ratchet tree of the epoch it
/// starts, kept once for all follower domains it adds devices of.
pub(crate) async fn insert_remote_welcome(
    db: &Transaction,
    group: GroupKey,
    seq: Seq,
    welcome: &[u8],
    ratchet_tree: &[u8],
) -> Result<(), StoreError> {
    let model = remote_welcome::ActiveModel {
        group_id: Set(group.row_id()),
        seq: Set(seq_to_db(seq)?),
        welcome: Set(welcome.to_vec()),
        ratchet_tree: Set(ratchet_tree.to_vec()),
    };
    remote_welcome::Entity::insert(model)
        .exec_without_returning(db.database())
        .await?;
    Ok(())
}

/// The Welcome and ratchet tree kept for followers by [`insert_remote_welcome`].
pub(crate) async fn find_remote_welcome(
    db: &impl Connection,
    group: GroupKey,
    seq: Seq,
) -> Result<Option<(Vec<u8>, Vec<u8>)>, StoreError> {
    Ok(
        remote_welcome::Entity::find_by_id((group.row_id(), seq_to_db(seq)?))
            .one(db.database())
            .await?
            .map(|model| (model.welcome, model.ratchet_tree)),
    )
}

/// A group with events a follower domain has not received yet.
#[derive(Debug, Clone)]
pub(crate) struct PendingDelivery {
    pub(crate) group: GroupKey,
    pub(crate) group_id: GroupId,
    pub(crate) delivered_seq: Seq,
    /// The last event the domain gets: the log's end, or the commit that removed
    /// the domain's last device.
    pub(crate) end_seq: Seq,
}

#[derive(Debug, Clone, FromQueryResult)]
struct PendingRow {
    group_row_id: i64,
    mls_group_id: Vec<u8>,
    delivered_seq: i64,
    end_seq: i64,
}

/// Groups with events for `peer_domain` not yet delivered, at most `limit`, in
/// group order.
pub(crate) async fn pending_deliveries(
    db: &impl Connection,
    peer_domain: &str,
    limit: u64,
) -> Result<Vec<PendingDelivery>, StoreError> {
    let backend = db.database().get_database_backend();
    let placeholder = |n: usize| match backend {
        sea_orm::DbBackend::Postgres => format!("${n}"),
        _ => format!("?{n}"),
    };
    let sql = format!(
        "SELECT p.group_id AS group_row_id, g.mls_group_id, p.delivered_seq, \
           COALESCE(p.until_seq, g.last_seq) AS end_seq \
         FROM federation_peer_groups p JOIN groups g ON g.id = p.group_id \
         WHERE p.peer_domain = {} AND p.delivered_seq < COALESCE(p.until_seq, g.last_seq) \
         ORDER BY p.group_id LIMIT {}",
        placeholder(1),
        placeholder(2),
    );
    let limit = to_i64(limit, "limit")?;
    PendingRow::find_by_statement(Statement::from_sql_and_values(
        backend,
        sql,
        [peer_domain.into(), limit.into()],
    ))
    .all(db.database())
    .await?
    .into_iter()
    .map(|row| {
        let group = GroupKey::from_row(row.group_row_id);
        let name = format!("{} cursor of {peer_domain}", group_row(group));
        Ok(PendingDelivery {
            group,
            group_id: GroupId::new(row.mls_group_id),
            delivered_seq: to_seq(row.delivered_seq, &name, "delivered_seq")?,
            end_seq: to_seq(row.end_seq, &name, "end_seq")?,
        })
    })
    .collect()
}

/// Events each peer domain has yet to receive, summed over its groups.
pub(crate) async fn outbox_depths(db: &impl Connection) -> Result<Vec<(String, u64)>, StoreError> {
    let backend = db.database().get_database_backend();
    #[derive(FromQueryResult)]
    struct Depth {
        peer_domain: String,
        depth: i64,
    }
    let sql = "SELECT p.peer_domain, \
           CAST(SUM(CASE WHEN COALESCE(p.until_seq, g.last_seq) > p.delivered_seq \
             THEN COALESCE(p.until_seq, g.last_seq) - p.delivered_seq ELSE 0 END) AS BIGINT) AS depth \
         FROM federation_peer_groups p JOIN groups g ON g.id = p.group_id \
         GROUP BY p.peer_domain ORDER BY p.peer_domain";
    Depth::find_by_statement(Statement::from_string(backend, sql))
        .all(db.database())
        .await?
        .into_iter()
        .map(|row| {
            let depth = to_u64(row.depth, format!("outbox of {}", row.peer_domain), "depth")?;
            Ok((row.peer_domain, depth))
        })
        .collect()
}

/// A peer domain's outbox: what it has not confirmed, and since when.
#[derive(Debug, Clone, PartialEq, Eq, FromQueryResult)]
pub(crate) struct OutboxBacklog {
    pub(crate) peer_domain: String,
    /// Events of hosted groups the domain has not confirmed.
    pub(crate) pending: i64,
    /// When the oldest of them was stored (ms since the Unix epoch); `None`
    /// when nothing is pending (or the pending events were pruned).
    pub(crate) oldest_created_at_ms: Option<i64>,
}

/// Each peer domain's outbox backlog, one row per domain with a cursor. Each
/// group's oldest undelivered event is the one right after the domain's
/// cursor, so the oldest of the domain's is the earliest of those.
pub(crate) async fn outbox_backlogs(
    db: &impl Connection,
) -> Result<Vec<OutboxBacklog>, StoreError> {
    let backend = db.database().get_database_backend();
    let sql = "SELECT p.peer_domain, \
           CAST(SUM(CASE WHEN COALESCE(p.until_seq, g.last_seq) > p.delivered_seq \
             THEN COALESCE(p.until_seq, g.last_seq) - p.delivered_seq ELSE 0 END) AS BIGINT) AS pending, \
           MIN(e.created_at_ms) AS oldest_created_at_ms \
         FROM federation_peer_groups p JOIN groups g ON g.id = p.group_id \
         LEFT JOIN group_events e ON e.group_id = p.group_id AND e.seq = p.delivered_seq + 1 \
           AND p.delivered_seq < COALESCE(p.until_seq, g.last_seq) \
         GROUP BY p.peer_domain ORDER BY p.peer_domain";
    Ok(
        OutboxBacklog::find_by_statement(Statement::from_string(backend, sql))
            .all(db.database())
            .await?,
    )
}

/// Records a successful delivery to `domain`.
pub(crate) async fn record_peer_success(
    db: &impl Connection,
    domain: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    federation_peer::Entity::insert(federation_peer::ActiveModel {
        domain: Set(domain.to_owned()),
        last_success_at_ms: Set(Some(now_ms)),
        last_error: Set(None),
        last_error_at_ms: Set(None),
        consecutive_failures: Set(0),
    })
    .on_conflict(
        OnConflict::column(federation_peer::Column::Domain)
            .update_columns([
                federation_peer::Column::LastSuccessAtMs,
                federation_peer::Column::ConsecutiveFailures,
            ])
            .to_owned(),
    )
    .exec_without_returning(db.database())
    .await?;
    Ok(())
}

/// Records a failed delivery to `domain`; returns the failures since the last
/// success.
pub(crate) async fn record_peer_failure(
    db: &impl Connection,
    domain: &str,
    error: &str,
    now_ms: i64,
) -> Result<i64, StoreError> {
    let existing = federation_peer::Entity::find_by_id(domain.to_owned())
        .one(db.database())
        .await?;
    let failures = existing
        .as_ref()
        .map_or(0, |row| row.consecutive_failures)
        .saturating_add(1);
    let record = federation_peer::ActiveModel {
        domain: Set(domain.to_owned()),
        last_success_at_ms: Set(existing.and_then(|row| row.last_success_at_ms)),
        last_error: Set(Some(error.to_owned())),
        last_error_at_ms: Set(Some(now_ms)),
        consecutive_failures: Set(failures),
    };
    federation_peer::Entity::insert(record)
        .on_conflict(
            OnConflict::column(federation_peer::Column::Domain)
                .update_columns([
                    federation_peer::Column::LastError,
                    federation_peer::Column::LastErrorAtMs,
                    federation_peer::Column::ConsecutiveFailures,
                ])
                .to_owned(),
        )
        .exec_without_returning(db.database())
        .await?;
    Ok(failures)
}

pub(crate) async fn peer_statuses(
    db: &impl Connection,
) -> Result<Vec<PeerStatusRecord>, StoreError> {
    federation_peer::Entity::find()
        .order_by_asc(federation_peer::Column::Domain)
        .all(db.database())
        .await?
        .into_iter()
        .map(|model| {
            let row = format!("status of peer {}", model.domain);
            let consecutive_failures =
                to_u64(model.consecutive_failures, &row, "consecutive_failures")?;
            Ok(PeerStatusRecord {
                domain: model.domain,
                last_success_at_ms: model.last_success_at_ms,
                last_error: model.last_error,
                last_error_at_ms: model.last_error_at_ms,
                consecutive_failures,
            })
        })
        .collect()
}

/// Creates a follower's copy of a group hosted by `hub_domain`, empty (its
/// first event comes next); `Ok(None)` if the MLS group id is taken.
pub(crate) async fn insert_follower_group(
    db: &Transaction,
    group_id: &GroupId,
    hub_domain: &str,
    created_by: &str,
    now_ms: i64,
) -> Result<Option<GroupKey>, StoreError> {
    let model = group::ActiveModel {
        mls_group_id: Set(group_id.as_bytes().to_vec()),
        epoch: Set(0),
        last_seq: Set(0),
        state: Set(Vec::new()),
        created_by: Set(created_by.to_owned()),
        created_at_ms: Set(now_ms),
        hub_domain: Set(Some(hub_domain.to_owned())),
        hub_member_count: Set(None),
        last_activity_at_ms: Set(now_ms),
        last_commit_at_ms: Set(None),
        ..Default::default()
    };
    match model.insert(db.database()).await.map_err(StoreError::from) {
        Ok(record) => Ok(Some(GroupKey::from_row(record.id))),
        Err(error) if error.is_unique_violation() => Ok(None),
        Err(error) => Err(error),
    }
}

/// This homeserver's copies of groups hosted elsewhere that still have member
/// devices here: (MLS group id, hub domain, newest sequence number).
pub(crate) async fn followed_groups(
    db: &impl Connection,
) -> Result<Vec<(GroupId, String, Seq)>, StoreError> {
    let followed = group::Entity::find()
        .select_only()
        .columns([
            group::Column::MlsGroupId,
            group::Column::HubDomain,
            group::Column::LastSeq,
        ])
        .filter(group::Column::HubDomain.is_not_null())
        .filter(
            group::Column::Id.in_subquery(
                sea_orm::sea_query::Query::select()
                    .column(group_member::Column::GroupId)
                    .from(group_member::Entity)
                    .and_where(group_member::Column::RemovedAtSeq.is_null())
                    .to_owned(),
            ),
        )
        .order_by_asc(group::Column::Id)
        .into_tuple::<(Vec<u8>, String, i64)>()
        .all(db.database())
        .await?;
    followed
        .into_iter()
        .map(|(group_id, hub, last_seq)| {
            let group_id = GroupId::new(group_id);
            let last_seq = to_seq(last_seq, format!("group {group_id}"), "last_seq")?;
            Ok((group_id, hub, last_seq))
        })
        .collect()
}

/// Saves a follower copy's position after applying events (appended before,
/// in the same transaction: the newest gives the copy's last activity, and its
/// last commit when the epoch moves).
pub(crate) async fn update_follower_group(
    db: &Transaction,
    group: GroupKey,
    epoch: crate::rules::ids::Epoch,
    last_seq: Seq,
    hub_member_count: u64,
) -> Result<(), StoreError> {
    super::groups::with_activity(group::Entity::update_many(), group, epoch, last_seq)?
        .col_expr(
            group::Column::Epoch,
            Expr::value(super::convert::epoch_to_db(epoch)?),
        )
        .col_expr(group::Column::LastSeq, Expr::value(seq_to_db(last_seq)?))
        .col_expr(
            group::Column::HubMemberCount,
            Expr::value(to_i64(hub_member_count, "member count")?),
        )
        .filter(group::Column::Id.eq(group.row_id()))
        .exec(db.database())
        .await?;
    Ok(())
}

/// Forgets, at the hub, the membership changes and Welcomes every follower
/// domain concerned has received.
pub(crate) async fn prune_delivered_federation_records(
    db: &impl Connection,
) -> Result<(), StoreError> {
    let backend = db.database().get_database_backend();
    for sql in [
        "DELETE FROM remote_membership_changes WHERE seq <= ( \
           SELECT p.delivered_seq FROM federation_peer_groups p \
           WHERE p.group_id = remote_membership_changes.group_id \
             AND p.peer_domain = remote_membership_changes.domain)",
        "DELETE FROM remote_welcomes WHERE seq <= ( \
           SELECT MIN(p.delivered_seq) FROM federation_peer_groups p \
           WHERE p.group_id = remote_welcomes.group_id)",
    ] {
        db.database()
            .execute_raw(Statement::from_string(backend, sql))
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::ids::Epoch;
    use crate::store::{EventKind, NewEvent, Store, append_event, insert_group, update_group};
    use conclave_test_support::{DatabaseChoice, TestDatabase};

    /// A hosted group whose log holds `length` events, event `seq` stored at
    /// `created_at_ms(seq)`.
    async fn group_with_log(
        store: &Store,
        name: &str,
        length: u64,
        created_at_ms: impl Fn(u64) -> i64,
    ) -> GroupKey {
        let db = store.begin().await.unwrap();
        let group = insert_group(
            &db,
            &GroupId::from(name.as_bytes()),
            Epoch::new(0),
            Vec::new(),
            "creator",
            0,
        )
        .await
        .unwrap()
        .unwrap();
        for seq in 1..=length {
            let event = NewEvent {
                group: group.key,
                seq: Seq::new(seq),
                kind: EventKind::Application,
                epoch: Epoch::new(0),
                sender_identity: "sender",
                message: b"message",
                now_ms: created_at_ms(seq),
                trace_parent: None,
                message_digest: None,
            };
            append_event(&db, event).await.unwrap();
        }
        update_group(
            &db,
            group.key,
            Epoch::new(0),
            Seq::new(length),
            crate::store::NewState::Unchanged,
        )
        .await
        .unwrap();
        db.commit().await.unwrap();
        group.key
    }

    async fn cursor(
        store: &Store,
        group: GroupKey,
        peer: &str,
        delivered: u64,
        until: Option<u64>,
    ) {
        let db = store.begin().await.unwrap();
        let cursor = FollowerCursor {
            joined_after_seq: Seq::new(0),
            delivered_seq: Seq::new(delivered),
            until_seq: until.map(Seq::new),
        };
        save_peer_cursor(&db, group, peer, cursor).await.unwrap();
        db.commit().await.unwrap();
    }

    #[tokio::test]
    async fn backlogs_count_the_undelivered_events_and_date_the_oldest() {
        for choice in DatabaseChoice::ALL {
            let database = TestDatabase::create(choice).await;
            let store = Store::connect(database.url(), 2).await.unwrap();
            store.migrate().await.unwrap();
            assert_eq!(outbox_backlogs(&store).await.unwrap(), vec![], "{choice:?}");

            // Events stored at 1000, 2000, ... ms, and at 1500, 2500, ... ms.
            let early = group_with_log(&store, "early", 10, |seq| seq as i64 * 1000).await;
            let late = group_with_log(&store, "late", 10, |seq| seq as i64 * 1000 + 500).await;
            // b.example: 7 of the early group (oldest: seq 4), and of the late
            // group up to the commit that removed its last device, 5 (seq 3 on).
            cursor(&store, early, "b.example", 3, None).await;
            cursor(&store, late, "b.example", 2, Some(5)).await;
            // c.example has everything, of both.
            cursor(&store, early, "c.example", 10, None).await;
            cursor(&store, late, "c.example", 5, Some(5)).await;

            let backlog = |peer: &str, pending, oldest| OutboxBacklog {
                peer_domain: peer.to_owned(),
                pending,
                oldest_created_at_ms: oldest,
            };
            assert_eq!(
                outbox_backlogs(&store).await.unwrap(),
                vec![
                    backlog("b.example", 7 + 3, Some(3500)),
                    backlog("c.example", 0, None),
                ],
                "{choice:?}"
            );
            // The late group delivered to its end: the early one's oldest remains.
            cursor(&store, late, "b.example", 5, Some(5)).await;
            assert_eq!(
                outbox_backlogs(&store).await.unwrap()[0],
                backlog("b.example", 7, Some(4000)),
                "{choice:?}"
            );
        }
    }
}
