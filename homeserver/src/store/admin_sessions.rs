//! Queries for admin sessions. A session is found by the hash of its token;
//! ending one deletes its row.

use super::accounts::UserKey;
use super::convert::to_parsed;
use super::entities::{admin_session, user};
use super::{Connection, StoreError};
use crate::rules::account_state::AccountState;
use conclave_core::ids::Username;
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, Condition, EntityTrait, QueryFilter, Set};

/// What a new session row holds.
#[derive(Debug, Clone)]
pub(crate) struct NewAdminSession<'a> {
    pub(crate) token_hash: &'a [u8],
    pub(crate) user: UserKey,
    pub(crate) now_ms: i64,
    pub(crate) expires_at_ms: i64,
    /// Empty if the login's address is unknown.
    pub(crate) address: &'a str,
}

/// A stored session, with its account as it is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AdminSessionRecord {
    pub(crate) user: UserKey,
    pub(crate) username: Username,
    /// Whether the account still has the admin role.
    pub(crate) is_admin: bool,
    /// Where the account stands: a session of a suspended or deactivated
    /// account is no session, even one opened in a race with the suspension.
    pub(crate) account_state: AccountState,
    pub(crate) created_at_ms: i64,
    pub(crate) last_used_at_ms: i64,
    pub(crate) expires_at_ms: i64,
}

pub(crate) async fn insert_admin_session(
    db: &impl Connection,
    session: NewAdminSession<'_>,
) -> Result<(), StoreError> {
    admin_session::ActiveModel {
        token_hash: Set(session.token_hash.to_vec()),
        user_id: Set(session.user.0),
        created_at_ms: Set(session.now_ms),
        last_used_at_ms: Set(session.now_ms),
        expires_at_ms: Set(session.expires_at_ms),
        address: Set(session.address.to_owned()),
    }
    .insert(db.database())
    .await?;
    Ok(())
}

/// The session whose token has `token_hash`, if there is one.
pub(crate) async fn find_admin_session(
    db: &impl Connection,
    token_hash: &[u8],
) -> Result<Option<AdminSessionRecord>, StoreError> {
    let Some(session) = admin_session::Entity::find_by_id(token_hash.to_vec())
        .one(db.database())
        .await?
    else {
        return Ok(None);
    };
    // The foreign key deletes a session with its account, so a missing
    // account is a session deleted between the two reads.
    let Some(account) = user::Entity::find_by_id(session.user_id)
        .one(db.database())
        .await?
    else {
        return Ok(None);
    };
    let row = format!("user row {}", account.id);
    Ok(Some(AdminSessionRecord {
        user: UserKey(account.id),
        username: to_parsed(&account.username, &row, "username")?,
        is_admin: account.is_admin,
        account_state: AccountState::from_times(account.suspended_at_ms, account.deactivated_at_ms),
        created_at_ms: session.created_at_ms,
        last_used_at_ms: session.last_used_at_ms,
        expires_at_ms: session.expires_at_ms,
    }))
}

/// Records a call of the session at `now_ms` (its idle timer starts again).
pub(crate) async fn touch_admin_session(
    db: &impl Connection,
    token_hash: &[u8],
    now_ms: i64,
) -> Result<(), StoreError> {
    admin_session::Entity::update_many()
        .col_expr(admin_session::Column::LastUsedAtMs, Expr::value(now_ms))
        .filter(admin_session::Column::TokenHash.eq(token_hash.to_vec()))
        .exec(db.database())
        .await?;
    Ok(())
}

/// Ends the session whose token has `token_hash`; `false` if there was none.
pub(crate) async fn delete_admin_session(
    db: &impl Connection,
    token_hash: &[u8],
) -> Result<bool, StoreError> {
    let result = admin_session::Entity::delete_by_id(token_hash.to_vec())
        .exec(db.database())
        .await?;
    Ok(result.rows_affected == 1)
}

/// Ends every session of `user`; returns how many there were.
pub(crate) async fn delete_admin_sessions_of_user(
    db: &impl Connection,
    user: UserKey,
) -> Result<u64, StoreError> {
    let result = admin_session::Entity::delete_many()
        .filter(admin_session::Column::UserId.eq(user.0))
        .exec(db.database())
        .await?;
    Ok(result.rows_affected)
}

/// Deletes the sessions that ended by time: past their absolute expiry, or
/// last used before `idle_since_ms`. Returns how many.
pub(crate) async fn delete_ended_admin_sessions(
    db: &impl Connection,
    now_ms: i64,
    idle_since_ms: i64,
) -> Result<u64, StoreError> {
    let result = admin_session::Entity::delete_many()
        .filter(
            Condition::any()
                .add(admin_session::Column::ExpiresAtMs.lte(now_ms))
                .add(admin_session::Column::LastUsedAtMs.lte(idle_since_ms)),
        )
        .exec(db.database())
        .await?;
    Ok(result.rows_affected)
}
