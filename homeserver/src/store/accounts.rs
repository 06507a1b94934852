//! Queries for users and devices. They return the store's
//! own records, with identifiers parsed (a stored value that does not parse is
//! [`StoreError::Corrupt`], naming its row).

use super::convert::to_parsed;
use super::entities::{device, user};
use super::{Connection, StoreError};
use crate::rules::account_state::AccountState;
use conclave_core::ids::{DeviceId, Username};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set,
};
use std::collections::HashMap;

/// A user's row, as its devices refer to it. Only the store makes one, from a
/// row it read or wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct UserKey(pub(super) i64);

/// A user of this homeserver.
#[derive(Debug, Clone)]
pub(crate) struct UserRecord {
    pub(crate) key: UserKey,
    pub(crate) username: Username,
    /// Argon2id hash in PHC string format.
    pub(crate) password_hash: String,
    /// Active, suspended or deactivated.
    pub(crate) state: AccountState,
    /// The admin role (`conclave-homeserver admin grant`).
    pub(crate) is_admin: bool,
}

/// A device of a user of this homeserver.
#[derive(Debug, Clone)]
pub(crate) struct DeviceRecord {
    pub(crate) device_id: DeviceId,
    pub(crate) display_name: String,
    /// The Ed25519 key bound to the device's credential.
    pub(crate) signature_public_key: Vec<u8>,
    /// Milliseconds since the Unix epoch.
    pub(crate) created_at_ms: i64,
    /// Milliseconds since the Unix epoch, written at most once a minute.
    pub(crate) last_seen_at_ms: i64,
}

pub(super) fn user_record(model: user::Model) -> Result<UserRecord, StoreError> {
    let row = format!("user row {}", model.id);
    Ok(UserRecord {
        key: UserKey(model.id),
        username: to_parsed(&model.username, &row, "username")?,
        password_hash: model.password_hash,
        state: AccountState::from_times(model.suspended_at_ms, model.deactivated_at_ms),
        is_admin: model.is_admin,
    })
}

pub(super) fn device_record(model: device::Model) -> Result<DeviceRecord, StoreError> {
    let row = format!("device row {:?}", model.id);
    Ok(DeviceRecord {
        device_id: to_parsed(&model.id, &row, "id")?,
        display_name: model.display_name,
        signature_public_key: model.signature_public_key,
        created_at_ms: model.created_at_ms,
        last_seen_at_ms: model.last_seen_at_ms,
    })
}

/// Inserts a user; `Ok(None)` if the username is taken.
pub(crate) async fn insert_user(
    db: &impl Connection,
    username: &Username,
    password_hash: &str,
    now_ms: i64,
) -> Result<Option<UserRecord>, StoreError> {
    let new_user = user::ActiveModel {
        username: Set(username.as_str().to_owned()),
        password_hash: Set(password_hash.to_owned()),
        created_at_ms: Set(now_ms),
        ..Default::default()
    };
    match new_user
        .insert(db.database())
        .await
        .map_err(StoreError::from)
    {
        Ok(model) => user_record(model).map(Some),
        Err(error) if error.is_unique_violation() => Ok(None),
        Err(error) => Err(error),
    }
}

pub(crate) async fn find_user_by_username(
    db: &impl Connection,
    username: &Username,
) -> Result<Option<UserRecord>, StoreError> {
    user::Entity::find()
        .filter(user::Column::Username.eq(username.as_str()))
        .one(db.database())
        .await?
        .map(user_record)
        .transpose()
}

/// What a new device row holds.
pub(crate) struct NewDevice<'a> {
    pub(crate) device_id: &'a DeviceId,
    pub(crate) user: UserKey,
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
        id: Set(new_device.device_id.as_str().to_owned()),
        user_id: Set(new_device.user.0),
        display_name: Set(new_device.display_name.to_owned()),
        signature_public_key: Set(new_device.signature_public_key.to_vec()),
        access_token_hash: Set(new_device.access_token_hash.to_vec()),
        created_at_ms: Set(new_device.now_ms),
        last_seen_at_ms: Set(new_device.now_ms),
    };
    super::insert_unless_taken(db, model).await
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

/// The device holding this access token, with its user, in one statement (a
/// join): this runs on every authenticated call.
pub(crate) async fn find_device_by_token_hash(
    db: &impl Connection,
    access_token_hash: &[u8],
) -> Result<Option<(DeviceRecord, UserRecord)>, StoreError> {
    let Some((device, user)) = device::Entity::find()
        .filter(device::Column::AccessTokenHash.eq(access_token_hash.to_vec()))
        .find_also_related(user::Entity)
        .one(db.database())
        .await?
    else {
        return Ok(None);
    };
    user.map(|user| Ok((device_record(device)?, user_record(user)?)))
        .transpose()
}

/// A user's devices, oldest first.
pub(crate) async fn list_devices(
    db: &impl Connection,
    user: UserKey,
) -> Result<Vec<DeviceRecord>, StoreError> {
    device::Entity::find()
        .filter(device::Column::UserId.eq(user.0))
        .order_by_asc(device::Column::CreatedAtMs)
        .order_by_asc(device::Column::Id)
        .all(db.database())
        .await?
        .into_iter()
        .map(device_record)
        .collect()
}

/// Deletes one of a user's devices (its key packages go with it, by foreign key);
/// `Ok(false)` if the user has no such device.
pub(crate) async fn delete_device(
    db: &impl Connection,
    user: UserKey,
    device_id: &DeviceId,
) -> Result<bool, StoreError> {
    let result = device::Entity::delete_many()
        .filter(device::Column::UserId.eq(user.0))
        .filter(device::Column::Id.eq(device_id.as_str()))
        .exec(db.database())
        .await?;
    Ok(result.rows_affected == 1)
}

/// Records activity at `now_ms` unless the stored time is within
/// `granularity_ms` of it. The caller decides from the time it already read
/// whether to call at all (so most calls write nothing); the condition here
/// keeps concurrent calls, or replicas, from writing the same minute twice.
pub(crate) async fn touch_device(
    db: &impl Connection,
    device_id: &DeviceId,
    now_ms: i64,
    granularity_ms: i64,
) -> Result<(), StoreError> {
    device::Entity::update_many()
        .col_expr(device::Column::LastSeenAtMs, Expr::value(now_ms))
        .filter(device::Column::Id.eq(device_id.as_str()))
        .filter(device::Column::LastSeenAtMs.lte(now_ms - granularity_ms))
        .exec(db.database())
        .await?;
    Ok(())
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

/// Most device ids per statement of [`device_keys`].
const IDS_PER_STATEMENT: usize = 500;

/// A registered device's user and signature key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeviceKey {
    pub(crate) username: String,
    pub(crate) signature_public_key: Vec<u8>,
}

/// The user and signature key of each of these devices that is registered, by
/// device id: one statement per 500 ids, so that a commit adding a thousand
/// devices checks them in two statements rather than a thousand.
pub(crate) async fn device_keys(
    db: &impl Connection,
    device_ids: &[&str],
) -> Result<HashMap<String, DeviceKey>, StoreError> {
    let mut keys = HashMap::with_capacity(device_ids.len());
    for chunk in device_ids.chunks(IDS_PER_STATEMENT) {
        let rows: Vec<(String, String, Vec<u8>)> = device::Entity::find()
            .inner_join(user::Entity)
            .select_only()
            .column(device::Column::Id)
            .column(user::Column::Username)
            .column(device::Column::SignaturePublicKey)
            .filter(device::Column::Id.is_in(chunk.iter().copied()))
            .into_tuple()
            .all(db.database())
            .await?;
        keys.extend(
            rows.into_iter()
                .map(|(device_id, username, signature_public_key)| {
                    let key = DeviceKey {
                        username,
                        signature_public_key,
                    };
                    (device_id, key)
                }),
        );
    }
    Ok(keys)
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
) -> Result<Option<device::Model>, StoreError> {
    // One statement: the hub checks each new leaf of a commit under the
    // group's lock.
    Ok(device::Entity::find_by_id(device_id.to_owned())
        .inner_join(user::Entity)
        .filter(user::Column::Username.eq(username))
        .one(db.database())
        .await?)
}
