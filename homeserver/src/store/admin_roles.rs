//! Queries for the admin role of accounts.

use super::accounts::UserKey;
use super::entities::user;
use super::{Connection, StoreError};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

/// Gives (`true`) or takes away (`false`) the admin role of `user`; `false`
/// if the account already was that way (or is gone). One conditional UPDATE,
/// so that two operators granting at once record one change.
pub(crate) async fn set_admin_role(
    db: &impl Connection,
    user: UserKey,
    is_admin: bool,
) -> Result<bool, StoreError> {
    let result = user::Entity::update_many()
        .col_expr(user::Column::IsAdmin, Expr::value(is_admin))
        .filter(user::Column::Id.eq(user.0))
        .filter(user::Column::IsAdmin.eq(!is_admin))
        .exec(db.database())
        .await?;
    Ok(result.rows_affected == 1)
}
