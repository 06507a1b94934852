//! Queries for groups that span domains. At the hub: follower domains' outbox
//! cursors, the membership changes and Welcomes kept for them, and each peer's
//! delivery status. At a follower: its copies of groups hosted elsewhere.

use super::entities::{
    federation_peer, federation_peer_group, group, group_member, remote_membership_change,
    remote_welcome,
};
use super::{Connection, StoreError};
use sea_orm::ConnectionTrait;
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, FromQueryResult, QueryFilter, QueryOrder,
    QuerySelect, Set, Statement,
};

pub(crate) use federation_peer::Model as PeerStatusRecord;
pub(crate) use federation_peer_group::Model as PeerCursorRecord;
pub(crate) use remote_membership_change::Model as MembershipChangeRecord;
pub(crate) use remote_welcome::Model as RemoteWelcomeRecord;

/// A follower domain's cursor in a group's log.
pub(crate) async fn find_peer_cursor(
    db: &impl Connection,
    group_row_id: i64,
    peer_domain: &str,
) -> Result<Option<PeerCursorRecord>, StoreError> {
    Ok(
        federation_peer_group::Entity::find_by_id((group_row_id, peer_domain.to_owned()))
            .one(db.database())
            .await?,
    )
}

/// Inserts or replaces a follower domain's cursor.
pub(crate) async fn save_peer_cursor(
    db: &impl Connection,
    cursor: PeerCursorRecord,
) -> Result<(), StoreError> {
    federation_peer_group::Entity::insert(federation_peer_group::ActiveModel::from(cursor))
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
    group_row_id: i64,
    peer_domain: &str,
    seq: i64,
) -> Result<(), StoreError> {
    federation_peer_group::Entity::update_many()
        .col_expr(
            federation_peer_group::Column::DeliveredSeq,
            Expr::value(seq),
        )
        .filter(federation_peer_group::Column::GroupId.eq(group_row_id))
        .filter(federation_peer_group::Column::PeerDomain.eq(peer_domain))
        .exec(db.database())
        .await?;
    Ok(())
}

/// True if some follower domain still receives the group's events.
pub(crate) async fn has_followers(
    db: &impl Connection,
    group_row_id: i64,
) -> Result<bool, StoreError> {
    Ok(federation_peer_group::Entity::find()
        .filter(federation_peer_group::Column::GroupId.eq(group_row_id))
        .filter(federation_peer_group::Column::UntilSeq.is_null())
        .one(db.database())
        .await?
        .is_some())
}

/// Ends a follower domain's delivery of a group at `seq`, as if its last device
/// had left there.
pub(crate) async fn end_peer_delivery(
    db: &impl Connection,
    group_row_id: i64,
    peer_domain: &str,
    seq: i64,
) -> Result<(), StoreError> {
    federation_peer_group::Entity::update_many()
        .col_expr(
            federation_peer_group::Column::DeliveredSeq,
            Expr::value(seq),
        )
        .col_expr(federation_peer_group::Column::UntilSeq, Expr::value(seq))
        .filter(federation_peer_group::Column::GroupId.eq(group_row_id))
        .filter(federation_peer_group::Column::PeerDomain.eq(peer_domain))
        .exec(db.database())
        .await?;
    Ok(())
}

/// The domains other than this one with a current member device in the group.
pub(crate) async fn remote_domains_with_members(
    db: &impl Connection,
    group_row_id: i64,
) -> Result<Vec<String>, StoreError> {
    Ok(group_member::Entity::find()
        .select_only()
        .column(group_member::Column::RemoteDomain)
        .distinct()
        .filter(group_member::Column::GroupId.eq(group_row_id))
        .filter(group_member::Column::RemovedAtSeq.is_null())
        .filter(group_member::Column::RemoteDomain.is_not_null())
        .into_tuple::<String>()
        .all(db.database())
        .await?)
}

pub(crate) async fn insert_membership_change(
    db: &impl Connection,
    change: MembershipChangeRecord,
) -> Result<(), StoreError> {
    remote_membership_change::Entity::insert(remote_membership_change::ActiveModel::from(change))
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
    group_row_id: i64,
    domain: &str,
    after_seq: i64,
    up_to_seq: i64,
) -> Result<Vec<MembershipChangeRecord>, StoreError> {
    Ok(remote_membership_change::Entity::find()
        .filter(remote_membership_change::Column::GroupId.eq(group_row_id))
        .filter(remote_membership_change::Column::Domain.eq(domain))
        .filter(remote_membership_change::Column::Seq.gt(after_seq))
        .filter(remote_membership_change::Column::Seq.lte(up_to_seq))
        .order_by_asc(remote_membership_change::Column::Seq)
        .order_by_asc(remote_membership_change::Column::Identity)
        .all(db.database())
        .await?)
}

pub(crate) async fn insert_remote_welcome(
    db: &impl Connection,
    welcome: RemoteWelcomeRecord,
) -> Result<(), StoreError> {
    remote_welcome::Entity::insert(remote_welcome::ActiveModel::from(welcome))
        .exec_without_returning(db.database())
        .await?;
    Ok(())
}

pub(crate) async fn find_remote_welcome(
    db: &impl Connection,
    group_row_id: i64,
    seq: i64,
) -> Result<Option<RemoteWelcomeRecord>, StoreError> {
    Ok(remote_welcome::Entity::find_by_id((group_row_id, seq))
        .one(db.database())
        .await?)
}

/// A group with events a follower domain has not received yet.
#[derive(Debug, Clone, FromQueryResult)]
pub(crate) struct PendingDelivery {
    pub(crate) group_row_id: i64,
    pub(crate) mls_group_id: Vec<u8>,
    pub(crate) delivered_seq: i64,
    /// The last event the domain gets: the log's end, or the commit that removed
    /// the domain's last device.
    pub(crate) end_seq: i64,
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
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    Ok(
        PendingDelivery::find_by_statement(Statement::from_sql_and_values(
            backend,
            sql,
            [peer_domain.into(), limit.into()],
        ))
        .all(db.database())
        .await?,
    )
}

/// Events each peer domain has yet to receive, summed over its groups.
pub(crate) async fn outbox_depths(db: &impl Connection) -> Result<Vec<(String, i64)>, StoreError> {
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
    Ok(
        Depth::find_by_statement(Statement::from_string(backend, sql))
            .all(db.database())
            .await?
            .into_iter()
            .map(|row| (row.peer_domain, row.depth))
            .collect(),
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
    Ok(federation_peer::Entity::find()
        .order_by_asc(federation_peer::Column::Domain)
        .all(db.database())
        .await?)
}

/// Creates a follower's copy of a group hosted by `hub_domain`, empty (its
/// first event comes next); `Ok(None)` if the MLS group id is taken.
pub(crate) async fn insert_follower_group(
    db: &impl Connection,
    mls_group_id: &[u8],
    hub_domain: &str,
    created_by: &str,
    now_ms: i64,
) -> Result<Option<super::GroupRecord>, StoreError> {
    let model = group::ActiveModel {
        mls_group_id: Set(mls_group_id.to_vec()),
        epoch: Set(0),
        last_seq: Set(0),
        state: Set(Vec::new()),
        created_by: Set(created_by.to_owned()),
        created_at_ms: Set(now_ms),
        hub_domain: Set(Some(hub_domain.to_owned())),
        hub_member_count: Set(None),
        ..Default::default()
    };
    match model.insert(db.database()).await.map_err(StoreError::from) {
        Ok(record) => Ok(Some(record)),
        Err(error) if error.is_unique_violation() => Ok(None),
        Err(error) => Err(error),
    }
}

/// This homeserver's copies of groups hosted elsewhere that still have member
/// devices here: (MLS group id, hub domain, newest sequence number).
pub(crate) async fn followed_groups(
    db: &impl Connection,
) -> Result<Vec<(Vec<u8>, String, i64)>, StoreError> {
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
    Ok(followed)
}

/// Saves a follower copy's position after applying events.
pub(crate) async fn update_follower_group(
    db: &impl Connection,
    row_id: i64,
    epoch: i64,
    last_seq: i64,
    hub_member_count: i64,
) -> Result<(), StoreError> {
    group::Entity::update_many()
        .col_expr(group::Column::Epoch, Expr::value(epoch))
        .col_expr(group::Column::LastSeq, Expr::value(last_seq))
        .col_expr(group::Column::HubMemberCount, Expr::value(hub_member_count))
        .filter(group::Column::Id.eq(row_id))
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
