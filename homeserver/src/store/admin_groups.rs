//! What administrators read of groups (`conclave.admin.v1.GroupAdminService`):
//! groups listed most recently active first, and one group's rows for the
//! inspector (its log's extent, its member rows with their cursors, its
//! follower domains' cursors). Reads only; never a message's content.

use super::convert::{group_row, to_epoch, to_seq, to_u64};
use super::entities::{device, federation_peer_group, group, group_event, group_member};
use super::{Connection, StoreError};
use crate::rules::group_search::{ActivityKey, GroupSearch};
use crate::rules::ids::{Epoch, GroupId, GroupKey, Seq};
use sea_orm::sea_query::{Expr, ExprTrait, Query};
use sea_orm::{
    ColumnTrait, Condition, EntityTrait, FromQueryResult, QueryFilter, QueryOrder, QuerySelect,
};

/// A group's row as administrators see it: hosted here, or a follower's copy.
#[derive(Debug, Clone)]
pub(crate) struct AdminGroupRecord {
    pub(crate) key: GroupKey,
    pub(crate) group_id: GroupId,
    pub(crate) epoch: Epoch,
    pub(crate) last_seq: Seq,
    /// The hub's domain for a follower's copy; `None` if hosted here.
    pub(crate) hub_domain: Option<String>,
    /// The public state (`rules::hub::HubGroup::to_state`); empty for a
    /// follower's copy.
    pub(crate) state: Vec<u8>,
    /// Current member devices with a row here (at a follower: this domain's).
    pub(crate) member_devices: u64,
    pub(crate) created_at_ms: i64,
    pub(crate) last_activity_at_ms: i64,
    pub(crate) last_commit_at_ms: Option<i64>,
}

impl AdminGroupRecord {
    /// Where the listing stands after this group.
    pub(crate) fn activity_key(&self) -> ActivityKey {
        ActivityKey {
            last_activity_at_ms: self.last_activity_at_ms,
            row_id: self.key.row_id(),
        }
    }
}

#[derive(Debug, FromQueryResult)]
struct AdminGroupRow {
    id: i64,
    mls_group_id: Vec<u8>,
    epoch: i64,
    last_seq: i64,
    hub_domain: Option<String>,
    state: Vec<u8>,
    created_at_ms: i64,
    last_activity_at_ms: i64,
    last_commit_at_ms: Option<i64>,
    member_devices: i64,
}

impl TryFrom<AdminGroupRow> for AdminGroupRecord {
    type Error = StoreError;
    fn try_from(row: AdminGroupRow) -> Result<AdminGroupRecord, StoreError> {
        let key = GroupKey::from_row(row.id);
        let name = group_row(key);
        Ok(AdminGroupRecord {
            key,
            group_id: GroupId::new(row.mls_group_id),
            epoch: to_epoch(row.epoch, &name, "epoch")?,
            last_seq: to_seq(row.last_seq, &name, "last_seq")?,
            hub_domain: row.hub_domain,
            state: row.state,
            member_devices: to_u64(row.member_devices, &name, "member count")?,
            created_at_ms: row.created_at_ms,
            last_activity_at_ms: row.last_activity_at_ms,
            last_commit_at_ms: row.last_commit_at_ms,
        })
    }
}

/// Groups with their current member devices counted, one subquery per row.
fn admin_group_query() -> sea_orm::Select<group::Entity> {
    group::Entity::find()
        .select_only()
        .columns([
            group::Column::Id,
            group::Column::MlsGroupId,
            group::Column::Epoch,
            group::Column::LastSeq,
            group::Column::HubDomain,
            group::Column::CreatedAtMs,
            group::Column::LastActivityAtMs,
            group::Column::LastCommitAtMs,
        ])
        .expr_as(super::groups::current_state(), "state")
        .expr_as(
            Expr::cust(
                "(SELECT COUNT(*) FROM group_members m \
                 WHERE m.group_id = groups.id AND m.removed_at_seq IS NULL)",
            ),
            "member_devices",
        )
}

/// Up to `limit` groups the search selects, most recently active first,
/// after `after` (the previous page's last group) if given.
pub(crate) async fn list_admin_groups(
    db: &impl Connection,
    search: &GroupSearch,
    after: Option<ActivityKey>,
    limit: u64,
) -> Result<Vec<AdminGroupRecord>, StoreError> {
    let mut query = admin_group_query();
    match search {
        GroupSearch::All => {}
        GroupSearch::IdPrefix(range) => {
            query = query.filter(group::Column::MlsGroupId.gte(range.from.clone()));
            if let Some(to) = &range.to {
                query = query.filter(group::Column::MlsGroupId.lt(to.clone()));
            }
        }
        GroupSearch::Member(user_id) => {
            query = query.filter(
                group::Column::Id.in_subquery(
                    Query::select()
                        .column(group_member::Column::GroupId)
                        .from(group_member::Entity)
                        .and_where(group_member::Column::UserId.eq(user_id.to_string()))
                        .and_where(group_member::Column::RemovedAtSeq.is_null())
                        .to_owned(),
                ),
            );
        }
    }
    if let Some(after) = after {
        query = query.filter(
            Condition::any()
                .add(group::Column::LastActivityAtMs.lt(after.last_activity_at_ms))
                .add(
                    Condition::all()
                        .add(group::Column::LastActivityAtMs.eq(after.last_activity_at_ms))
                        .add(group::Column::Id.lt(after.row_id)),
                ),
        );
    }
    query
        .order_by_desc(group::Column::LastActivityAtMs)
        .order_by_desc(group::Column::Id)
        .limit(limit)
        .into_model::<AdminGroupRow>()
        .all(db.database())
        .await?
        .into_iter()
        .map(AdminGroupRecord::try_from)
        .collect()
}

/// One group, hosted here or a follower's copy.
pub(crate) async fn find_admin_group(
    db: &impl Connection,
    group_id: &GroupId,
) -> Result<Option<AdminGroupRecord>, StoreError> {
    admin_group_query()
        .filter(group::Column::MlsGroupId.eq(group_id.as_bytes().to_vec()))
        .into_model::<AdminGroupRow>()
        .one(db.database())
        .await?
        .map(AdminGroupRecord::try_from)
        .transpose()
}

/// What is left of a group's log after pruning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LogExtent {
    /// Entries in the log now.
    pub(crate) length: u64,
    /// The oldest entry's sequence number; `None` if the log is empty.
    pub(crate) first_seq: Option<Seq>,
}

/// How many entries a group's log holds, from which one.
pub(crate) async fn log_extent(
    db: &impl Connection,
    key: GroupKey,
) -> Result<LogExtent, StoreError> {
    let (length, first_seq): (i64, Option<i64>) = group_event::Entity::find()
        .select_only()
        .expr(Expr::col(group_event::Column::Seq).count())
        .expr(Expr::col(group_event::Column::Seq).min())
        .filter(group_event::Column::GroupId.eq(key.row_id()))
        .into_tuple()
        .one(db.database())
        .await?
        .unwrap_or((0, None));
    let row = format!("log of {}", group_row(key));
    Ok(LogExtent {
        length: to_u64(length, &row, "count")?,
        first_seq: first_seq.map(|seq| to_seq(seq, &row, "seq")).transpose()?,
    })
}

/// A current member device's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MemberCursor {
    /// `name@domain/device_id`.
    pub(crate) identity: String,
    pub(crate) device_id: String,
    /// Everything up to here has been acknowledged (for a device of another
    /// domain at the hub: not kept here, its homeserver keeps it).
    pub(crate) acked_seq: Seq,
    /// The device's domain if it is not this homeserver's.
    pub(crate) remote_domain: Option<String>,
}

/// A group's current member devices, by identity.
pub(crate) async fn current_member_cursors(
    db: &impl Connection,
    key: GroupKey,
) -> Result<Vec<MemberCursor>, StoreError> {
    group_member::Entity::find()
        .filter(group_member::Column::GroupId.eq(key.row_id()))
        .filter(group_member::Column::RemovedAtSeq.is_null())
        .order_by_asc(group_member::Column::Identity)
        .all(db.database())
        .await?
        .into_iter()
        .map(|model| {
            let row = format!("{} member {}", group_row(key), model.identity);
            Ok(MemberCursor {
                acked_seq: to_seq(model.acked_seq, &row, "acked_seq")?,
                identity: model.identity,
                device_id: model.device_id,
                remote_domain: model.remote_domain,
            })
        })
        .collect()
}

/// When each of these local devices last called (`devices.last_seen_at_ms`);
/// devices that no longer exist are left out.
pub(crate) async fn devices_last_seen(
    db: &impl Connection,
    device_ids: &[String],
) -> Result<Vec<(String, i64)>, StoreError> {
    if device_ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(device::Entity::find()
        .select_only()
        .columns([device::Column::Id, device::Column::LastSeenAtMs])
        .filter(device::Column::Id.is_in(device_ids.iter().cloned()))
        .into_tuple()
        .all(db.database())
        .await?)
}

/// At the hub: a follower domain still to receive a group's events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FollowerPosition {
    pub(crate) domain: String,
    /// The follower has every event up to here.
    pub(crate) delivered_seq: Seq,
    /// Its last event (the commit that removed its last device); `None`
    /// while it has member devices.
    pub(crate) until_seq: Option<Seq>,
}

/// The follower domains of a group hosted here that still receive its events
/// (they have members, or have yet to receive the commit that removed their
/// last), by domain.
pub(crate) async fn follower_positions(
    db: &impl Connection,
    key: GroupKey,
) -> Result<Vec<FollowerPosition>, StoreError> {
    federation_peer_group::Entity::find()
        .filter(federation_peer_group::Column::GroupId.eq(key.row_id()))
        .filter(
            Condition::any()
                .add(federation_peer_group::Column::UntilSeq.is_null())
                .add(
                    Expr::col(federation_peer_group::Column::DeliveredSeq)
                        .lt(Expr::col(federation_peer_group::Column::UntilSeq)),
                ),
        )
        .order_by_asc(federation_peer_group::Column::PeerDomain)
        .all(db.database())
        .await?
        .into_iter()
        .map(|model| {
            let row = format!("{} cursor of {}", group_row(key), model.peer_domain);
            Ok(FollowerPosition {
                delivered_seq: to_seq(model.delivered_seq, &row, "delivered_seq")?,
                until_seq: model
                    .until_seq
                    .map(|seq| to_seq(seq, &row, "until_seq"))
                    .transpose()?,
                domain: model.peer_domain,
            })
        })
        .collect()
}
