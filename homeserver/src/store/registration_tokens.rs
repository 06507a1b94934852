//! Queries for registration tokens.

use super::entities::registration_token;
use super::{Connection, StoreError};
use crate::rules::registration::RegistrationToken;
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, Set};

/// Stores a new token's hash. The column is a 32-bit signed integer: a token
/// allowing more uses than fit allows as many as fit, which no homeserver will
/// ever see spent.
pub(crate) async fn insert_registration_token(
    db: &impl Connection,
    token_hash: &[u8],
    uses_allowed: u32,
    expires_at_ms: Option<i64>,
    now_ms: i64,
) -> Result<(), StoreError> {
    registration_token::ActiveModel {
        token_hash: Set(token_hash.to_vec()),
        uses_allowed: Set(i32::try_from(uses_allowed).unwrap_or(i32::MAX)),
        uses_count: Set(0),
        expires_at_ms: Set(expires_at_ms),
        created_at_ms: Set(now_ms),
        ..Default::default()
    }
    .insert(db.database())
    .await?;
    Ok(())
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
        .map(|token| {
            let row = format!("registration token row {}", token.id);
            let uses = |value: i32, column: &str| {
                u32::try_from(value).map_err(|_| {
                    StoreError::Corrupt(format!("{row}: {column} is {value}, which is negative"))
                })
            };
            Ok(RegistrationToken {
                uses_allowed: uses(token.uses_allowed, "uses_allowed")?,
                uses_count: uses(token.uses_count, "uses_count")?,
                expires_at_ms: token.expires_at_ms,
            })
        })
        .transpose()
}

/// Spends one use of a registration token; `Ok(false)` if the token is unknown
/// or not usable at `now_ms`. One conditional UPDATE, so that concurrent
/// registrations cannot overspend a single-use token: its condition is
/// [`RegistrationToken::is_usable`], restated in SQL (the test below holds the
/// two equal).
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
        .filter(
            Expr::col(registration_token::Column::UsesCount)
                .lt(Expr::col(registration_token::Column::UsesAllowed)),
        )
        .filter(
            registration_token::Column::ExpiresAtMs
                .is_null()
                .or(registration_token::Column::ExpiresAtMs.gt(now_ms)),
        )
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
}
