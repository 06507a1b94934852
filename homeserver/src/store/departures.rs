//! Queries for departures the hubs of followed groups have yet to hear of
//! (`pending_departures`): queued when a device of this domain departs,
//! read per hub by that peer's outbox task, deleted once the hub answered.

use super::entities::pending_departure;
use super::{Connection, StoreError};
use crate::rules::ids::GroupKey;
use sea_orm::sea_query::OnConflict;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set};

/// A departure to announce to a group's hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PendingDeparture {
    /// This homeserver's copy of the group.
    pub(crate) group: GroupKey,
    /// `name@domain/device_id` of the departed device.
    pub(crate) identity: String,
    pub(crate) reason: String,
}

/// Queues a departure for the hub `hub_domain` of a followed group; a second
/// one for the same group and device keeps the first.
pub(crate) async fn queue_departure(
    db: &impl Connection,
    group: GroupKey,
    identity: &str,
    hub_domain: &str,
    reason: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    pending_departure::Entity::insert(pending_departure::ActiveModel {
        group_id: Set(group.row_id()),
        identity: Set(identity.to_owned()),
        hub_domain: Set(hub_domain.to_owned()),
        reason: Set(reason.to_owned()),
        created_at_ms: Set(now_ms),
    })
    .on_conflict(
        OnConflict::columns([
            pending_departure::Column::GroupId,
            pending_departure::Column::Identity,
        ])
        .do_nothing()
        .to_owned(),
    )
    .exec_without_returning(db.database())
    .await?;
    Ok(())
}

/// Up to `limit` departures queued for hub `hub_domain`, oldest first.
pub(crate) async fn pending_departures(
    db: &impl Connection,
    hub_domain: &str,
    limit: u64,
) -> Result<Vec<PendingDeparture>, StoreError> {
    Ok(pending_departure::Entity::find()
        .filter(pending_departure::Column::HubDomain.eq(hub_domain))
        .order_by_asc(pending_departure::Column::CreatedAtMs)
        .order_by_asc(pending_departure::Column::GroupId)
        .limit(limit)
        .all(db.database())
        .await?
        .into_iter()
        .map(|row| PendingDeparture {
            group: GroupKey::from_row(row.group_id),
            identity: row.identity,
            reason: row.reason,
        })
        .collect())
}

/// Forgets a departure the hub has answered for.
pub(crate) async fn forget_departure(
    db: &impl Connection,
    group: GroupKey,
    identity: &str,
) -> Result<(), StoreError> {
    pending_departure::Entity::delete_many()
        .filter(pending_departure::Column::GroupId.eq(group.row_id()))
        .filter(pending_departure::Column::Identity.eq(identity))
        .exec(db.database())
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use conclave_test_support::{DatabaseChoice, TestDatabase};

    #[tokio::test]
    async fn departures_are_queued_once_read_per_hub_and_forgotten() {
        for choice in DatabaseChoice::ALL {
            let database = TestDatabase::create(choice).await;
            let store = Store::connect(database.url(), 2).await.unwrap();
            store.migrate().await.unwrap();
            let group = GroupKey::from_row(7);
            let other = GroupKey::from_row(8);
            let bob = "bob@b.example/00000000000000b1";
            let queue = |group, hub, reason, now_ms| {
                let store = store.clone();
                async move {
                    queue_departure(&store, group, bob, hub, reason, now_ms)
                        .await
                        .unwrap()
                }
            };
            queue(group, "a.example", "revoked", 1).await;
            // A second announcement keeps the first.
            queue(group, "a.example", "again", 2).await;
            queue(other, "c.example", "revoked", 3).await;
            let for_a = pending_departures(&store, "a.example", 10).await.unwrap();
            assert_eq!(
                for_a,
                vec![PendingDeparture {
                    group,
                    identity: bob.to_owned(),
                    reason: "revoked".to_owned(),
                }],
                "{choice:?}"
            );
            forget_departure(&store, group, bob).await.unwrap();
            let for_a = pending_departures(&store, "a.example", 10).await.unwrap();
            assert!(for_a.is_empty(), "{choice:?}");
            let for_c = pending_departures(&store, "c.example", 10).await.unwrap();
            assert_eq!(for_c.len(), 1, "{choice:?}");
        }
    }
}
