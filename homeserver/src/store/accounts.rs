//! Queries for users, devices and registration tokens.

use super::entities::{device, registration_token, user};
use super::{Connection, DeviceRecord, StoreError, UserRecord};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, Set};

/// Inserts a user; `Ok(None)` if the username is taken.
pub(crate) async fn insert_user(
    db: &impl Connection,
    username: &str,
    password_hash: &str,
    now_ms: i64,
) -> Result<Option<UserRecord>, StoreError> {
    let new_user = user::ActiveModel {
        username: Set(username.to_owned()),
        password_hash: Set(password_hash.to_owned()),
        created_at_ms: Set(now_ms),
        ..Default::default()
    };
    match new_user
        .insert(db.database())
        .await
        .map_err(StoreError::from)
    {
        Ok(record) => Ok(Some(record)),
        Err(error) if error.is_unique_violation() => Ok(None),
        Err(error) => Err(error),
    }
}

pub(crate) async fn find_user_by_username(
    db: &impl Connection,
    username: &str,
) -> Result<Option<UserRecord>, StoreError> {
    Ok(user::Entity::find()
        .filter(user::Column::Username.eq(username))
        .one(db.database())
        .await?)
}

/// What a new device row holds.
pub(crate) struct NewDevice<'a> {
    pub(crate) device_id: &'a str,
    pub(crate) user_id: i64,
    pub(crate) display_name: &'a str,
    pub(crate) signature_public_key: &'a [u8],
    pub(crate) access_token_hash: &'a [u8],
    pub(crate) now_ms: i64,
}

/// Inserts a device; `Ok(false)` if its id, signature key or token hash is taken.
pub(crate) async fn insert_device(
    db: &impl Connection,
    new_device: NewDevice<'_>,
) -> Result<bool, StoreError> {
    let model = device::ActiveModel {
        id: Set(new_device.device_id.to_owned()),
        user_id: Set(new_device.user_id),
        display_name: Set(new_device.display_name.to_owned()),
        signature_public_key: Set(new_device.signature_public_key.to_vec()),
        access_token_hash: Set(new_device.access_token_hash.to_vec()),
        created_at_ms: Set(new_device.now_ms),
        last_seen_at_ms: Set(new_device.now_ms),
    };
    match device::Entity::insert(model)
        .exec_without_returning(db.database())
        .await
        .map_err(StoreError::from)
    {
        Ok(_) => Ok(true),
        Err(error) if error.is_unique_violation() => Ok(false),
        Err(error) => Err(error),
    }
}

/// True if some device already has this signature key.
pub(crate) async fn signature_key_in_use(
    db: &impl Connection,
    signature_public_key: &[u8],
) -> Result<bool, StoreError> {
    Ok(device::Entity::find()
        .filter(device::Column::SignaturePublicKey.eq(signature_public_key.to_vec()))
        .one(db.database())
        .await?
        .is_some())
}

/// The device holding this access token, with its user.
pub(crate) async fn find_device_by_token_hash(
    db: &impl Connection,
    access_token_hash: &[u8],
) -> Result<Option<(DeviceRecord, UserRecord)>, StoreError> {
    let Some(device) = device::Entity::find()
        .filter(device::Column::AccessTokenHash.eq(access_token_hash.to_vec()))
        .one(db.database())
        .await?
    else {
        return Ok(None);
    };
    let user = user::Entity::find_by_id(device.user_id)
        .one(db.database())
        .await?;
    Ok(user.map(|user| (device, user)))
}

/// A user's devices, oldest first.
pub(crate) async fn list_devices(
    db: &impl Connection,
    user_id: i64,
) -> Result<Vec<DeviceRecord>, StoreError> {
    Ok(device::Entity::find()
        .filter(device::Column::UserId.eq(user_id))
        .order_by_asc(device::Column::CreatedAtMs)
        .order_by_asc(device::Column::Id)
        .all(db.database())
        .await?)
}

/// Deletes one of a user's devices (its key packages go with it, by foreign key);
/// `Ok(false)` if the user has no such device.
pub(crate) async fn delete_device(
    db: &impl Connection,
    user_id: i64,
    device_id: &str,
) -> Result<bool, StoreError> {
    let result = device::Entity::delete_many()
        .filter(device::Column::UserId.eq(user_id))
        .filter(device::Column::Id.eq(device_id))
        .exec(db.database())
        .await?;
    Ok(result.rows_affected == 1)
}

/// Records activity, at most once per `granularity_ms`, so authenticated reads do
/// not each cost a write.
pub(crate) async fn touch_device(
    db: &impl Connection,
    device_id: &str,
    now_ms: i64,
    granularity_ms: i64,
) -> Result<(), StoreError> {
    device::Entity::update_many()
        .col_expr(device::Column::LastSeenAtMs, Expr::value(now_ms))
        .filter(device::Column::Id.eq(device_id))
        .filter(device::Column::LastSeenAtMs.lt(now_ms - granularity_ms))
        .exec(db.database())
        .await?;
    Ok(())
}

pub(crate) async fn insert_registration_token(
    db: &impl Connection,
    token_hash: &[u8],
    uses_allowed: i32,
    expires_at_ms: Option<i64>,
    now_ms: i64,
) -> Result<(), StoreError> {
    registration_token::ActiveModel {
        token_hash: Set(token_hash.to_vec()),
        uses_allowed: Set(uses_allowed),
        uses_count: Set(0),
        expires_at_ms: Set(expires_at_ms),
        created_at_ms: Set(now_ms),
        ..Default::default()
    }
    .insert(db.database())
    .await?;
    Ok(())
}

/// Uses up one use of a registration token, atomically (one conditional UPDATE,
/// so concurrent registrations cannot overspend a single-use token). `Ok(false)`
/// if the token is unknown, expired or used up.
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

/// True if `device_id` is a device of user `username` bound to `signature_public_key`.
pub(crate) async fn device_has_key(
    db: &impl Connection,
    device_id: &str,
    username: &str,
    signature_public_key: &[u8],
) -> Result<bool, StoreError> {
    Ok(find_device_of_user(db, device_id, username)
        .await?
        .is_some_and(|device| device.signature_public_key == signature_public_key))
}

/// True if `device_id` is a current device of user `username`.
pub(crate) async fn device_of_user(
    db: &impl Connection,
    device_id: &str,
    username: &str,
) -> Result<bool, StoreError> {
    Ok(find_device_of_user(db, device_id, username)
        .await?
        .is_some())
}

async fn find_device_of_user(
    db: &impl Connection,
    device_id: &str,
    username: &str,
) -> Result<Option<DeviceRecord>, StoreError> {
    let Some(device) = device::Entity::find_by_id(device_id.to_owned())
        .one(db.database())
        .await?
    else {
        return Ok(None);
    };
    let user = user::Entity::find_by_id(device.user_id)
        .one(db.database())
        .await?;
    Ok(user
        .is_some_and(|user| user.username == username)
        .then_some(device))
}

/// True if the token exists, has uses left and has not expired (without using it).
pub(crate) async fn registration_token_usable(
    db: &impl Connection,
    token_hash: &[u8],
    now_ms: i64,
) -> Result<bool, StoreError> {
    let token = registration_token::Entity::find()
        .filter(registration_token::Column::TokenHash.eq(token_hash.to_vec()))
        .one(db.database())
        .await?;
    Ok(token.is_some_and(|token| {
        token.uses_count < token.uses_allowed
            && token.expires_at_ms.is_none_or(|expires| expires > now_ms)
    }))
}
