//! Queries for group membership: which devices are in a group, from which
//! commit to which, and how far each has acknowledged the log.

use super::convert::{group_row, seq_to_db, to_seq};
use super::entities::group_member;
use super::{Connection, StoreError, Transaction};
use crate::rules::ids::{GroupKey, Seq};
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, Set};
use std::collections::HashSet;

/// A device's membership of a group, current or past.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Membership {
    pub(crate) group: GroupKey,
    /// `name@domain/device_id`.
    pub(crate) identity: String,
    /// The device receives events after this one (the commit that added it, or
    /// 0 for the creator).
    pub(crate) joined_after_seq: Seq,
    /// The commit that removed it: the last event it receives.
    pub(crate) removed_at_seq: Option<Seq>,
    /// Everything up to here has been acknowledged.
    pub(crate) acked_seq: Seq,
}

impl Membership {
    pub(crate) fn is_current(&self) -> bool {
        self.removed_at_seq.is_none()
    }
}

impl TryFrom<group_member::Model> for Membership {
    type Error = StoreError;
    fn try_from(model: group_member::Model) -> Result<Membership, StoreError> {
        let group = GroupKey::from_row(model.group_id);
        let row = format!("{} member {}", group_row(group), model.identity);
        Ok(Membership {
            group,
            joined_after_seq: to_seq(model.joined_after_seq, &row, "joined_after_seq")?,
            removed_at_seq: model
                .removed_at_seq
                .map(|seq| to_seq(seq, &row, "removed_at_seq"))
                .transpose()?,
            acked_seq: to_seq(model.acked_seq, &row, "acked_seq")?,
            identity: model.identity,
        })
    }
}

/// A device becoming a member.
pub(crate) struct NewMember<'a> {
    pub(crate) identity: &'a str,
    pub(crate) user_id: &'a str,
    pub(crate) device_id: &'a str,
    /// It receives events after this one.
    pub(crate) joined_after_seq: Seq,
    /// The device's domain if it is not this homeserver's.
    pub(crate) remote_domain: Option<&'a str>,
}

/// Adds a device to a group (or re-adds a removed one).
pub(crate) async fn upsert_member(
    db: &Transaction,
    group: GroupKey,
    member: NewMember<'_>,
) -> Result<(), StoreError> {
    upsert_members(db, group, &[member]).await
}

/// Adds devices to a group (or re-adds removed ones), a few hundred rows per
/// statement.
pub(crate) async fn upsert_members(
    db: &Transaction,
    group: GroupKey,
    members: &[NewMember<'_>],
) -> Result<(), StoreError> {
    // Far below both databases' limits on bound parameters (8 per row).
    const ROWS_PER_STATEMENT: usize = 500;
    for chunk in members.chunks(ROWS_PER_STATEMENT) {
        let rows = chunk
            .iter()
            .map(|member| {
                let joined_after_seq = seq_to_db(member.joined_after_seq)?;
                Ok(group_member::ActiveModel {
                    group_id: Set(group.row_id()),
                    identity: Set(member.identity.to_owned()),
                    user_id: Set(member.user_id.to_owned()),
                    device_id: Set(member.device_id.to_owned()),
                    joined_after_seq: Set(joined_after_seq),
                    removed_at_seq: Set(None),
                    acked_seq: Set(joined_after_seq),
                    remote_domain: Set(member.remote_domain.map(str::to_owned)),
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        group_member::Entity::insert_many(rows)
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
            .exec_without_returning(db.database())
            .await?;
    }
    Ok(())
}

/// Marks a device removed by the commit at `seq`, its last event.
pub(crate) async fn mark_removed(
    db: &Transaction,
    group: GroupKey,
    identity: &str,
    seq: Seq,
) -> Result<(), StoreError> {
    group_member::Entity::update_many()
        .col_expr(
            group_member::Column::RemovedAtSeq,
            Expr::value(seq_to_db(seq)?),
        )
        .filter(group_member::Column::GroupId.eq(group.row_id()))
        .filter(group_member::Column::Identity.eq(identity))
        .filter(group_member::Column::RemovedAtSeq.is_null())
        .exec(db.database())
        .await?;
    Ok(())
}

/// The device's membership of a group, current or past.
pub(crate) async fn find_member(
    db: &impl Connection,
    group: GroupKey,
    identity: &str,
) -> Result<Option<Membership>, StoreError> {
    group_member::Entity::find()
        .filter(group_member::Column::GroupId.eq(group.row_id()))
        .filter(group_member::Column::Identity.eq(identity))
        .one(db.database())
        .await?
        .map(Membership::try_from)
        .transpose()
}

/// Which of these `(group, identity)` pairs are current members (one
/// statement for a batch of application messages to several groups; the
/// statement narrows by each column's set, the pairs are matched here;
/// duplicates are harmless).
pub(crate) async fn current_members_among(
    db: &impl Connection,
    pairs: &[(GroupKey, &str)],
) -> Result<HashSet<(GroupKey, String)>, StoreError> {
    use sea_orm::QuerySelect;
    if pairs.is_empty() {
        return Ok(HashSet::new());
    }
    let found: Vec<(i64, String)> = group_member::Entity::find()
        .select_only()
        .columns([
            group_member::Column::GroupId,
            group_member::Column::Identity,
        ])
        .filter(group_member::Column::GroupId.is_in(pairs.iter().map(|(group, _)| group.row_id())))
        .filter(group_member::Column::Identity.is_in(pairs.iter().map(|(_, identity)| *identity)))
        .filter(group_member::Column::RemovedAtSeq.is_null())
        .into_tuple()
        .all(db.database())
        .await?;
    let wanted: HashSet<(GroupKey, &str)> = pairs.iter().copied().collect();
    Ok(found
        .into_iter()
        .map(|(group, identity)| (GroupKey::from_row(group), identity))
        .filter(|(group, identity)| wanted.contains(&(*group, identity.as_str())))
        .collect())
}

/// True if some current member device of the group belongs to `user_id`.
pub(crate) async fn user_is_member(
    db: &impl Connection,
    group: GroupKey,
    user_id: &str,
) -> Result<bool, StoreError> {
    Ok(group_member::Entity::find()
        .filter(group_member::Column::GroupId.eq(group.row_id()))
        .filter(group_member::Column::UserId.eq(user_id))
        .filter(group_member::Column::RemovedAtSeq.is_null())
        .one(db.database())
        .await?
        .is_some())
}

/// Every membership of a local device (current ones, and past ones whose last
/// events are not yet acknowledged). Devices of other domains are left out even
/// if their id is the same: a peer chooses its devices' ids.
pub(crate) async fn memberships_of_device(
    db: &impl Connection,
    device_id: &str,
) -> Result<Vec<Membership>, StoreError> {
    let mut memberships: Vec<Membership> = group_member::Entity::find()
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
        .all(db.database())
        .await?
        .into_iter()
        .map(Membership::try_from)
        .collect::<Result<_, _>>()?;
    // A subscribe stream keeps this list while it is open. Collected in place,
    // it would keep the rows' larger allocation: 512 bytes for one membership.
    memberships.shrink_to_fit();
    Ok(memberships)
}

/// The groups of which a device of this domain is a current member, hosted
/// here or followed (at a hub, other domains' devices are left out: a peer
/// chooses its devices' ids).
pub(crate) async fn current_groups_of_local_device(
    db: &impl Connection,
    identity: &str,
) -> Result<Vec<GroupKey>, StoreError> {
    Ok(group_member::Entity::find()
        .filter(group_member::Column::Identity.eq(identity))
        .filter(group_member::Column::RemoteDomain.is_null())
        .filter(group_member::Column::RemovedAtSeq.is_null())
        .order_by_asc(group_member::Column::GroupId)
        .all(db.database())
        .await?
        .into_iter()
        .map(|member| GroupKey::from_row(member.group_id))
        .collect())
}

/// Number of current member devices of a group.
pub(crate) async fn member_count(db: &impl Connection, group: GroupKey) -> Result<u64, StoreError> {
    use sea_orm::PaginatorTrait;
    Ok(group_member::Entity::find()
        .filter(group_member::Column::GroupId.eq(group.row_id()))
        .filter(group_member::Column::RemovedAtSeq.is_null())
        .count(db.database())
        .await?)
}

/// Moves a member's cursor forward (never back).
pub(crate) async fn advance_member_cursor(
    db: &Transaction,
    group: GroupKey,
    identity: &str,
    seq: Seq,
) -> Result<(), StoreError> {
    let seq = seq_to_db(seq)?;
    group_member::Entity::update_many()
        .col_expr(group_member::Column::AckedSeq, Expr::value(seq))
        .filter(group_member::Column::GroupId.eq(group.row_id()))
        .filter(group_member::Column::Identity.eq(identity))
        .filter(group_member::Column::AckedSeq.lt(seq))
        .exec(db.database())
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::ids::{Epoch, GroupId};
    use crate::store::{Store, insert_group};
    use conclave_test_support::{DatabaseChoice, TestDatabase};

    /// A Subscribe stream keeps its device's memberships for as long as it is
    /// open, so the list holds them and no more (collected in place from the
    /// rows, one membership kept 512 bytes).
    #[tokio::test]
    async fn a_device_s_memberships_take_no_more_room_than_they_need() {
        let database = TestDatabase::create(DatabaseChoice::Sqlite).await;
        let store = Store::connect(database.url(), 2).await.unwrap();
        store.migrate().await.unwrap();
        let db = store.begin().await.unwrap();
        let group_id = GroupId::from(&b"group"[..]);
        let group = insert_group(&db, &group_id, Epoch::new(0), Vec::new(), "creator", 0)
            .await
            .unwrap()
            .unwrap();
        let member = NewMember {
            identity: "alice@localhost/00000000000000a1",
            user_id: "alice@localhost",
            device_id: "00000000000000a1",
            joined_after_seq: Seq::ZERO,
            remote_domain: None,
        };
        upsert_member(&db, group.key, member).await.unwrap();
        db.commit().await.unwrap();

        let memberships = memberships_of_device(&store, "00000000000000a1")
            .await
            .unwrap();
        assert_eq!(memberships.len(), 1);
        assert_eq!(memberships.capacity(), 1, "the list keeps spare room");
    }
}
