//! Queries for proof of possession at enrolment: the domain's challenge secret
//! and the challenges enrolments used.

use super::entities::{server_secret, used_enrolment_challenge};
use super::{Connection, StoreError};
use sea_orm::sea_query::OnConflict;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, Set};

/// Name of the enrolment challenges' MAC key in `server_secrets`.
const ENROLMENT_CHALLENGE_SECRET: &str = "enrolment_challenge";

/// The domain's enrolment-challenge secret: the stored one, or `candidate` if
/// none was stored yet (then it is stored). Replicas starting together race to
/// insert; the primary key keeps the first and all read the same.
pub(crate) async fn enrolment_challenge_secret(
    db: &impl Connection,
    candidate: &[u8],
    now_ms: i64,
) -> Result<Vec<u8>, StoreError> {
    server_secret::Entity::insert(server_secret::ActiveModel {
        name: Set(ENROLMENT_CHALLENGE_SECRET.to_owned()),
        secret: Set(candidate.to_vec()),
        created_at_ms: Set(now_ms),
    })
    .on_conflict(
        OnConflict::column(server_secret::Column::Name)
            .do_nothing()
            .to_owned(),
    )
    .exec_without_returning(db.database())
    .await?;
    let stored = server_secret::Entity::find_by_id(ENROLMENT_CHALLENGE_SECRET.to_owned())
        .one(db.database())
        .await?
        .ok_or_else(|| {
            StoreError::Corrupt(format!(
                "server secret {ENROLMENT_CHALLENGE_SECRET} is missing right after it was stored"
            ))
        })?;
    Ok(stored.secret)
}

/// True if an enrolment already used the challenge with this digest.
pub(crate) async fn enrolment_challenge_used(
    db: &impl Connection,
    challenge_digest: &[u8],
) -> Result<bool, StoreError> {
    Ok(
        used_enrolment_challenge::Entity::find_by_id(challenge_digest.to_vec())
            .one(db.database())
            .await?
            .is_some(),
    )
}

/// Records that an enrolment used the challenge; `Ok(false)` if one already
/// had (the primary key decides, so two replicas cannot both use it). After a
/// `false` the transaction is to be dropped: PostgreSQL aborts it.
pub(crate) async fn record_enrolment_challenge_use(
    db: &impl Connection,
    challenge_digest: &[u8],
    expires_at_ms: i64,
) -> Result<bool, StoreError> {
    let model = used_enrolment_challenge::ActiveModel {
        challenge_digest: Set(challenge_digest.to_vec()),
        expires_at_ms: Set(expires_at_ms),
    };
    super::insert_unless_taken(db, model).await
}

/// Forgets the uses of challenges that expired before `before_ms`; returns how
/// many.
pub(crate) async fn delete_expired_enrolment_challenges(
    db: &impl Connection,
    before_ms: i64,
) -> Result<u64, StoreError> {
    let result = used_enrolment_challenge::Entity::delete_many()
        .filter(used_enrolment_challenge::Column::ExpiresAtMs.lt(before_ms))
        .exec(db.database())
        .await?;
    Ok(result.rows_affected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use conclave_test_support::{DatabaseChoice, TestDatabase};

    #[tokio::test]
    async fn one_secret_per_domain_and_each_challenge_used_once() {
        for choice in DatabaseChoice::ALL {
            let database = TestDatabase::create(choice).await;
            let store = Store::connect(database.url(), 2).await.unwrap();
            store.migrate().await.unwrap();

            let first = enrolment_challenge_secret(&store, &[1; 32], 0).await;
            assert_eq!(first.unwrap(), vec![1; 32], "{choice:?}");
            // A second replica's candidate loses to the stored secret.
            let second = enrolment_challenge_secret(&store, &[2; 32], 1).await;
            assert_eq!(second.unwrap(), vec![1; 32], "{choice:?}");

            assert!(!enrolment_challenge_used(&store, b"a").await.unwrap());
            let transaction = store.begin().await.unwrap();
            assert!(
                record_enrolment_challenge_use(&transaction, b"a", 100)
                    .await
                    .unwrap()
            );
            // Rolled back: not used.
            drop(transaction);
            assert!(!enrolment_challenge_used(&store, b"a").await.unwrap());
            assert!(
                record_enrolment_challenge_use(&store, b"a", 100)
                    .await
                    .unwrap()
            );
            assert!(enrolment_challenge_used(&store, b"a").await.unwrap());
            assert!(
                !record_enrolment_challenge_use(&store, b"a", 100)
                    .await
                    .unwrap(),
                "{choice:?}: a second use"
            );
            assert!(
                record_enrolment_challenge_use(&store, b"b", 200)
                    .await
                    .unwrap()
            );

            assert_eq!(
                delete_expired_enrolment_challenges(&store, 100)
                    .await
                    .unwrap(),
                0
            );
            assert_eq!(
                delete_expired_enrolment_challenges(&store, 101)
                    .await
                    .unwrap(),
                1
            );
            assert!(!enrolment_challenge_used(&store, b"a").await.unwrap());
            assert!(enrolment_challenge_used(&store, b"b").await.unwrap());
            store.close().await.unwrap();
        }
    }
}
