//! Queries for registration tokens.

use super::entities::registration_token;
use super::{Connection, StoreError};
use crate::rules::registration::RegistrationToken;
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    Set,
};

/// A stored token, without its hash, as administrators see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RegistrationTokenRecord {
    /// The row's id, by which administrators name it.
    pub(crate) id: u64,
    pub(crate) token: RegistrationToken,
    pub(crate) created_at_ms: i64,
    /// An administrator's user id, or `operator`.
    pub(crate) created_by: String,
}

impl TryFrom<registration_token::Model> for RegistrationTokenRecord {
    type Error = StoreError;
    fn try_from(model: registration_token::Model) -> Result<Self, StoreError> {
        let row = format!("registration token row {}", model.id);
        let uses = |value: i32, column: &str| {
            u32::try_from(value).map_err(|_| {
                StoreError::Corrupt(format!("{row}: {column} is {value}, which is negative"))
            })
        };
        Ok(RegistrationTokenRecord {
            id: super::convert::to_u64(model.id, &row, "id")?,
            token: RegistrationToken {
                uses_allowed: uses(model.uses_allowed, "uses_allowed")?,
                uses_count: uses(model.uses_count, "uses_count")?,
                expires_at_ms: model.expires_at_ms,
                revoked_at_ms: model.revoked_at_ms,
            },
            created_at_ms: model.created_at_ms,
            created_by: model.created_by,
        })
    }
}

/// A token about to be stored.
pub(crate) struct NewRegistrationTokenRow<'a> {
    /// SHA-256 of the secret.
    pub(crate) token_hash: &'a [u8],
    /// The column is a 32-bit signed integer: more uses than fit allow as many
    /// as fit (the admin API allows at most a million anyway).
    pub(crate) uses_allowed: u32,
    pub(crate) expires_at_ms: Option<i64>,
    pub(crate) created_by: &'a str,
    pub(crate) now_ms: i64,
}

/// Stores a new token's hash and returns its record.
pub(crate) async fn insert_registration_token(
    db: &impl Connection,
    new_token: NewRegistrationTokenRow<'_>,
) -> Result<RegistrationTokenRecord, StoreError> {
    registration_token::ActiveModel {
        token_hash: Set(new_token.token_hash.to_vec()),
        uses_allowed: Set(i32::try_from(new_token.uses_allowed).unwrap_or(i32::MAX)),
        uses_count: Set(0),
        expires_at_ms: Set(new_token.expires_at_ms),
        created_at_ms: Set(new_token.now_ms),
        revoked_at_ms: Set(None),
        created_by: Set(new_token.created_by.to_owned()),
        ..Default::default()
    }
    .insert(db.database())
    .await?
    .try_into()
}

/// The token with this hash, if there is one.
pub(crate) async fn find_registration_token(
    db: &impl Connection,
    token_hash: &[u8],
) -> Result<Option<RegistrationToken>, StoreError> {
    registration_token::Entity::find()
        .filter(registration_token::Column::TokenHash.eq(token_hash.to_vec()))
        .one(db.database())
        .await?
        .map(|model| RegistrationTokenRecord::try_from(model).map(|record| record.token))
        .transpose()
}

/// The token with this id, if there is one.
pub(crate) async fn find_registration_token_by_id(
    db: &impl Connection,
    id: u64,
) -> Result<Option<RegistrationTokenRecord>, StoreError> {
    let Ok(id) = i64::try_from(id) else {
        return Ok(None);
    };
    registration_token::Entity::find_by_id(id)
        .one(db.database())
        .await?
        .map(RegistrationTokenRecord::try_from)
        .transpose()
}

/// The condition [`RegistrationToken::is_usable`] states, in SQL, at `now_ms`.
fn usable_at(now_ms: i64) -> Condition {
    Condition::all()
        .add(
            Expr::col(registration_token::Column::UsesCount)
                .lt(Expr::col(registration_token::Column::UsesAllowed)),
        )
        .add(
            registration_token::Column::ExpiresAtMs
                .is_null()
                .or(registration_token::Column::ExpiresAtMs.gt(now_ms)),
        )
        .add(registration_token::Column::RevokedAtMs.is_null())
}

/// How many tokens are usable at `now_ms`.
pub(crate) async fn count_usable_registration_tokens(
    db: &impl Connection,
    now_ms: i64,
) -> Result<u64, StoreError> {
    use sea_orm::PaginatorTrait;
    Ok(registration_token::Entity::find()
        .filter(usable_at(now_ms))
        .count(db.database())
        .await?)
}

/// Up to `limit` tokens, newest first, with ids below `before_id` if given;
/// only those usable at `now_ms` unless `include_unusable`.
pub(crate) async fn list_registration_tokens(
    db: &impl Connection,
    include_unusable: bool,
    now_ms: i64,
    before_id: Option<u64>,
    limit: u64,
) -> Result<Vec<RegistrationTokenRecord>, StoreError> {
    let mut query = registration_token::Entity::find();
    if !include_unusable {
        query = query.filter(usable_at(now_ms));
    }
    if let Some(before_id) = before_id {
        let before_id = i64::try_from(before_id).unwrap_or(i64::MAX); // tidy: saturating (beyond every row: from the newest)
        query = query.filter(registration_token::Column::Id.lt(before_id));
    }
    query
        .order_by_desc(registration_token::Column::Id)
        .limit(limit)
        .all(db.database())
        .await?
        .into_iter()
        .map(RegistrationTokenRecord::try_from)
        .collect()
}

/// Revokes a token at `now_ms`; `Ok(false)` if it is unknown or already
/// revoked. One conditional UPDATE, so two revocations cannot both succeed.
pub(crate) async fn revoke_registration_token(
    db: &impl Connection,
    id: u64,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let Ok(id) = i64::try_from(id) else {
        return Ok(false);
    };
    let result = registration_token::Entity::update_many()
        .col_expr(
            registration_token::Column::RevokedAtMs,
            Expr::value(Some(now_ms)),
        )
        .filter(registration_token::Column::Id.eq(id))
        .filter(registration_token::Column::RevokedAtMs.is_null())
        .exec(db.database())
        .await?;
    Ok(result.rows_affected == 1)
}

/// Spends one use of a registration token; `Ok(false)` if the token is unknown
/// or not usable at `now_ms`. One conditional UPDATE, so that concurrent
/// registrations cannot overspend a single-use token, nor spend one revoked
/// meanwhile: its condition is [`RegistrationToken::is_usable`], restated in
/// SQL (the test below holds the two equal).
pub(crate) async fn consume_registration_token(
    db: &impl Connection,
    token_hash: &[u8],
    now_ms: i64,
) -> Result<bool, StoreError> {
    let result = registration_token::Entity::update_many()
        .col_expr(
            registration_token::Column::UsesCount,
            Expr::col(registration_token::Column::UsesCount).add(1),
        )
        .filter(registration_token::Column::TokenHash.eq(token_hash.to_vec()))
        .filter(usable_at(now_ms))
        .exec(db.database())
        .await?;
    Ok(result.rows_affected == 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::registration::cases;
    use crate::store::Store;
    use conclave_test_support::{DatabaseChoice, TestDatabase};

    #[tokio::test]
    async fn spending_a_use_follows_the_rule() {
        for choice in DatabaseChoice::ALL {
            let database = TestDatabase::create(choice).await;
            let store = Store::connect(database.url(), 2).await.unwrap();
            store.migrate().await.unwrap();
            for (index, (case, token, usable)) in cases::usability().into_iter().enumerate() {
                let hash = format!("token {index}").into_bytes();
                registration_token::ActiveModel {
                    token_hash: Set(hash.clone()),
                    uses_allowed: Set(i32::try_from(token.uses_allowed).unwrap()),
                    uses_count: Set(i32::try_from(token.uses_count).unwrap()),
                    expires_at_ms: Set(token.expires_at_ms),
                    created_at_ms: Set(0),
                    revoked_at_ms: Set(token.revoked_at_ms),
                    created_by: Set("operator".to_owned()),
                    ..Default::default()
                }
                .insert(store.database())
                .await
                .unwrap();
                let found = find_registration_token(&store, &hash).await.unwrap();
                assert_eq!(found, Some(token), "{choice:?}: {case}");
                let spent = consume_registration_token(&store, &hash, cases::NOW_MS)
                    .await
                    .unwrap();
                assert_eq!(spent, usable, "{choice:?}: {case}");
                let after = find_registration_token(&store, &hash).await.unwrap();
                let uses_count = token.uses_count + u32::from(usable);
                assert_eq!(after.map(|token| token.uses_count), Some(uses_count));
            }
            assert_eq!(
                find_registration_token(&store, b"unknown").await.unwrap(),
                None
            );
            assert!(
                !consume_registration_token(&store, b"unknown", cases::NOW_MS)
                    .await
                    .unwrap()
            );
            store.close().await.unwrap();
        }
    }

    #[tokio::test]
    async fn tokens_are_listed_newest_first_and_revoked_once() {
        for choice in DatabaseChoice::ALL {
            let database = TestDatabase::create(choice).await;
            let store = Store::connect(database.url(), 2).await.unwrap();
            store.migrate().await.unwrap();
            let mut ids = Vec::new();
            for (index, expires_at_ms) in [None, Some(500), None, None].into_iter().enumerate() {
                let hash = format!("hash {index}").into_bytes();
                let record = insert_registration_token(
                    &store,
                    NewRegistrationTokenRow {
                        token_hash: &hash,
                        uses_allowed: 2,
                        expires_at_ms,
                        created_by: "alice@a.example",
                        now_ms: 100,
                    },
                )
                .await
                .unwrap();
                assert_eq!(record.created_by, "alice@a.example");
                assert_eq!(record.token.uses_count, 0);
                ids.push(record.id);
            }
            assert!(
                revoke_registration_token(&store, ids[2], 900)
                    .await
                    .unwrap()
            );
            assert!(
                !revoke_registration_token(&store, ids[2], 901)
                    .await
                    .unwrap()
            );
            assert!(!revoke_registration_token(&store, 9999, 901).await.unwrap());
            let revoked = find_registration_token_by_id(&store, ids[2])
                .await
                .unwrap()
                .unwrap();
            assert_eq!(revoked.token.revoked_at_ms, Some(900), "{choice:?}");
            // A revoked token is never spent.
            assert!(
                !consume_registration_token(&store, b"hash 2", 950)
                    .await
                    .unwrap()
            );
            let listed = |include_unusable, before_id, limit| {
                let store = &store;
                async move {
                    list_registration_tokens(store, include_unusable, 1000, before_id, limit)
                        .await
                        .unwrap()
                        .into_iter()
                        .map(|record| record.id)
                        .collect::<Vec<_>>()
                }
            };
            assert_eq!(
                listed(true, None, 10).await,
                vec![ids[3], ids[2], ids[1], ids[0]]
            );
            // Usable only: the expired (index 1) and the revoked (index 2) are left out.
            assert_eq!(listed(false, None, 10).await, vec![ids[3], ids[0]]);
            assert_eq!(listed(true, None, 2).await, vec![ids[3], ids[2]]);
            assert_eq!(listed(true, Some(ids[2]), 2).await, vec![ids[1], ids[0]]);
            store.close().await.unwrap();
        }
    }
}
