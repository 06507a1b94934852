//! Leases on background work that must run on one replica at a time: a row per
//! job (`background_leases`) naming its holder's replica id and when the lease
//! expires. Taking and renewing are one conditional upsert, so the database
//! decides between replicas racing for a job; no process memory does.
//!
//! Times are the holders' clocks (milliseconds since the Unix epoch): a replica
//! judges another's lease expired by its own clock. That is sound while the
//! replicas' clocks agree to well within the margin between a lease's renewal
//! and its expiry (`service::leases` explains the margin, seconds by default;
//! NTP keeps servers within milliseconds).

use super::entities::background_lease;
use super::{Connection, StoreError};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{ColumnTrait, EntityTrait, ExprTrait, QueryFilter, QueryOrder, Set};

/// A lease as stored, for operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LeaseRecord {
    /// The job, e.g. `janitor` or `outbox:b.example`.
    pub(crate) name: String,
    /// The replica id of the holder (or the last holder, if expired).
    pub(crate) owner: String,
    pub(crate) expires_at_ms: i64,
}

/// Takes the lease `name` for `owner` until `now_ms + ttl_ms`, or renews it if
/// `owner` holds it already; `false` if another owner holds it and it has not
/// expired by `now_ms`.
///
/// One statement: insert the row, or on conflict update it only if it expired
/// or is ours. Two replicas racing for a free or expired lease cannot both win:
/// on PostgreSQL the loser's update waits for the winner's row lock and then
/// re-checks the condition against the winner's row; SQLite runs one writer at
/// a time.
pub(crate) async fn acquire_lease(
    db: &impl Connection,
    name: &str,
    owner: &str,
    now_ms: i64,
    ttl_ms: i64,
) -> Result<bool, StoreError> {
    use background_lease::{Column, Entity};
    let taken_or_ours = Expr::col((Entity, Column::ExpiresAtMs))
        .lt(now_ms)
        .or(Expr::col((Entity, Column::Owner)).eq(owner));
    let rows = Entity::insert(background_lease::ActiveModel {
        name: Set(name.to_owned()),
        owner: Set(owner.to_owned()),
        expires_at_ms: Set(now_ms.saturating_add(ttl_ms)),
    })
    .on_conflict(
        OnConflict::column(Column::Name)
            .update_columns([Column::Owner, Column::ExpiresAtMs])
            .action_and_where(taken_or_ours)
            .to_owned(),
    )
    .exec_without_returning(db.database())
    .await?;
    Ok(rows == 1)
}

/// Gives up the lease `name` if `owner` holds it (so another replica may take
/// it at once); `false` if it did not (expired and taken, or never held).
pub(crate) async fn release_lease(
    db: &impl Connection,
    name: &str,
    owner: &str,
) -> Result<bool, StoreError> {
    use background_lease::{Column, Entity};
    let result = Entity::delete_many()
        .filter(Column::Name.eq(name))
        .filter(Column::Owner.eq(owner))
        .exec(db.database())
        .await?;
    Ok(result.rows_affected == 1)
}

/// Every lease row (held or expired), by name.
pub(crate) async fn leases(db: &impl Connection) -> Result<Vec<LeaseRecord>, StoreError> {
    use background_lease::{Column, Entity};
    Ok(Entity::find()
        .order_by_asc(Column::Name)
        .all(db.database())
        .await?
        .into_iter()
        .map(|model| LeaseRecord {
            name: model.name,
            owner: model.owner,
            expires_at_ms: model.expires_at_ms,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use conclave_test_support::{DatabaseChoice, TestDatabase};

    const TTL_MS: i64 = 8000;

    async fn holder(store: &Store, name: &str) -> Option<(String, i64)> {
        leases(store)
            .await
            .unwrap()
            .into_iter()
            .find(|lease| lease.name == name)
            .map(|lease| (lease.owner, lease.expires_at_ms))
    }

    #[tokio::test]
    async fn one_owner_at_a_time_until_expiry_or_release() {
        for choice in DatabaseChoice::ALL {
            let database = TestDatabase::create(choice).await;
            let store = Store::connect(database.url(), 2).await.unwrap();
            store.migrate().await.unwrap();
            let take = |owner: &'static str, name: &'static str, now_ms: i64| {
                let store = store.clone();
                async move {
                    acquire_lease(&store, name, owner, now_ms, TTL_MS)
                        .await
                        .unwrap()
                }
            };

            // A free lease goes to the first asker; the second is refused.
            assert!(take("a", "outbox:b.example", 1000).await, "{choice:?}");
            assert!(!take("b", "outbox:b.example", 1001).await, "{choice:?}");
            assert_eq!(
                holder(&store, "outbox:b.example").await,
                Some(("a".to_owned(), 9000))
            );
            // Other jobs are leased apart.
            assert!(take("b", "janitor", 1001).await, "{choice:?}");

            // The holder renews, moving the expiry; the other is still refused,
            // at the old expiry too.
            assert!(take("a", "outbox:b.example", 5000).await, "{choice:?}");
            assert_eq!(
                holder(&store, "outbox:b.example").await,
                Some(("a".to_owned(), 13_000))
            );
            assert!(!take("b", "outbox:b.example", 9001).await, "{choice:?}");
            assert!(!take("b", "outbox:b.example", 13_000).await, "{choice:?}");

            // Expired (no renewal): the other takes it over, and the old holder
            // can no longer renew.
            assert!(take("b", "outbox:b.example", 13_001).await, "{choice:?}");
            assert!(!take("a", "outbox:b.example", 13_002).await, "{choice:?}");
            assert_eq!(
                holder(&store, "outbox:b.example").await,
                Some(("b".to_owned(), 21_001))
            );

            // Only the holder releases; then anyone may take it at once.
            assert!(
                !release_lease(&store, "outbox:b.example", "a")
                    .await
                    .unwrap(),
                "{choice:?}"
            );
            assert!(!take("a", "outbox:b.example", 13_003).await, "{choice:?}");
            assert!(
                release_lease(&store, "outbox:b.example", "b")
                    .await
                    .unwrap(),
                "{choice:?}"
            );
            assert_eq!(holder(&store, "outbox:b.example").await, None);
            assert!(take("a", "outbox:b.example", 13_004).await, "{choice:?}");
            assert_eq!(
                holder(&store, "janitor").await,
                Some(("b".to_owned(), 9001))
            );
            store.close().await.unwrap();
        }
    }

    #[tokio::test]
    async fn replicas_racing_for_a_lease_get_one_winner() {
        for choice in DatabaseChoice::ALL {
            let database = TestDatabase::create(choice).await;
            let store = Store::connect(database.url(), 8).await.unwrap();
            store.migrate().await.unwrap();
            // A free lease, then an expired one: each raced for by eight owners.
            for (round, now_ms) in [(0, 1000), (1, 1000 + TTL_MS + 1)] {
                let mut racers = tokio::task::JoinSet::new();
                for owner in 0..8 {
                    let store = store.clone();
                    racers.spawn(async move {
                        let owner = format!("replica-{round}-{owner}");
                        acquire_lease(&store, "janitor", &owner, now_ms, TTL_MS)
                            .await
                            .unwrap()
                    });
                }
                let winners = racers
                    .join_all()
                    .await
                    .into_iter()
                    .filter(|won| *won)
                    .count();
                assert_eq!(winners, 1, "{choice:?}, round {round}");
                let (owner, _) = holder(&store, "janitor").await.unwrap();
                assert!(owner.starts_with(&format!("replica-{round}-")), "{owner}");
            }
            store.close().await.unwrap();
        }
    }
}
