//! Queries of the admin API's users slice: accounts a page at a time with
//! their devices' counts, the state of an account (suspended, deactivated),
//! a batch of devices' key-package stock and groups, and removing every
//! device of an account.

use super::accounts::{device_record, user_record};
use super::convert::to_u64;
use super::entities::{device, group, group_member, key_package, user};
use super::{Connection, DeviceRecord, StoreError, UserKey, UserRecord};
use crate::rules::account_state::AccountState;
use conclave_core::ids::DeviceId;
use sea_orm::sea_query::{Expr, ExprTrait, LikeExpr};
use sea_orm::{
    ColumnTrait, EntityTrait, FromQueryResult, QueryFilter, QueryOrder, QuerySelect, Set,
};
use std::collections::HashMap;

/// An account with what the admin API shows of it besides its devices.
#[derive(Debug, Clone)]
pub(crate) struct Account {
    pub(crate) user: UserRecord,
    pub(crate) created_at_ms: i64,
    /// Why it was suspended or deactivated, as the administrator said; empty
    /// if active or not said.
    pub(crate) state_reason: String,
}

fn account(model: user::Model) -> Result<Account, StoreError> {
    let created_at_ms = model.created_at_ms;
    let state_reason = model.state_reason.clone().unwrap_or_default();
    Ok(Account {
        user: user_record(model)?,
        created_at_ms,
        state_reason,
    })
}

/// The account named `username`.
pub(crate) async fn find_account(
    db: &impl Connection,
    username: &str,
) -> Result<Option<Account>, StoreError> {
    user::Entity::find()
        .filter(user::Column::Username.eq(username))
        .one(db.database())
        .await?
        .map(account)
        .transpose()
}

/// Accounts whose username contains `query` (already lowercase, as usernames
/// are), after the username `after`, ordered by username, at most `limit`.
pub(crate) async fn list_accounts(
    db: &impl Connection,
    query: &str,
    after: Option<&str>,
    limit: u64,
) -> Result<Vec<Account>, StoreError> {
    let mut select = user::Entity::find();
    if !query.is_empty() {
        let pattern = format!("%{}%", escape_like(query));
        select = select
            .filter(Expr::col(user::Column::Username).like(LikeExpr::new(pattern).escape('\\')));
    }
    if let Some(after) = after {
        select = select.filter(user::Column::Username.gt(after));
    }
    select
        .order_by_asc(user::Column::Username)
        .limit(limit)
        .all(db.database())
        .await?
        .into_iter()
        .map(account)
        .collect()
}

/// `text` with LIKE's wildcards (and its escape character) escaped by `\`.
fn escape_like(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        if matches!(character, '%' | '_' | '\\') {
            escaped.push('\\');
        }
        escaped.push(character);
    }
    escaped
}

/// Per account: how many devices it has, and the latest time any of them was
/// seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct DeviceActivity {
    pub(crate) devices: u64,
    /// `None` when it has no devices.
    pub(crate) last_seen_at_ms: Option<i64>,
}

#[derive(FromQueryResult)]
struct ActivityRow {
    user_id: i64,
    devices: i64,
    last_seen: Option<i64>,
}

/// The device activity of each of `users`, in one grouped statement; an
/// account without devices is absent from the map.
pub(crate) async fn device_activity(
    db: &impl Connection,
    users: &[UserKey],
) -> Result<HashMap<UserKey, DeviceActivity>, StoreError> {
    if users.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = device::Entity::find()
        .select_only()
        .column(device::Column::UserId)
        .column_as(Expr::col(device::Column::Id).count(), "devices")
        .column_as(Expr::col(device::Column::LastSeenAtMs).max(), "last_seen")
        .filter(device::Column::UserId.is_in(users.iter().map(|user| user.0)))
        .group_by(device::Column::UserId)
        .into_model::<ActivityRow>()
        .all(db.database())
        .await?;
    rows.into_iter()
        .map(|row| {
            let devices = to_u64(
                row.devices,
                format!("devices of user row {}", row.user_id),
                "count",
            )?;
            Ok((
                UserKey(row.user_id),
                DeviceActivity {
                    devices,
                    last_seen_at_ms: row.last_seen,
                },
            ))
        })
        .collect()
}

/// Where a device's account stands, read with the device in one statement;
/// `None` if the device no longer exists.
pub(crate) async fn device_account_state(
    db: &impl Connection,
    device_id: &DeviceId,
) -> Result<Option<AccountState>, StoreError> {
    let found = device::Entity::find_by_id(device_id.as_str().to_owned())
        .find_also_related(user::Entity)
        .one(db.database())
        .await?;
    Ok(found
        .and_then(|(_, user)| user)
        .map(|user| AccountState::from_times(user.suspended_at_ms, user.deactivated_at_ms)))
}

/// Which of `device_ids` may no longer call: gone, or of an account that is
/// not active. One statement for the resync's whole batch.
pub(crate) async fn devices_without_access(
    db: &impl Connection,
    device_ids: &[String],
) -> Result<Vec<String>, StoreError> {
    if device_ids.is_empty() {
        return Ok(Vec::new());
    }
    let allowed: std::collections::HashSet<String> = device::Entity::find()
        .select_only()
        .column(device::Column::Id)
        .inner_join(user::Entity)
        .filter(device::Column::Id.is_in(device_ids.iter().cloned()))
        .filter(user::Column::SuspendedAtMs.is_null())
        .filter(user::Column::DeactivatedAtMs.is_null())
        .into_tuple::<String>()
        .all(db.database())
        .await?
        .into_iter()
        .collect();
    Ok(device_ids
        .iter()
        .filter(|id| !allowed.contains(*id))
        .cloned()
        .collect())
}

/// Suspends an active account at `now_ms`; `Ok(false)`, changing nothing, if
/// it is not active (anymore: the condition is in the statement, so two
/// administrators cannot both suspend it).
pub(crate) async fn suspend_account(
    db: &impl Connection,
    user: UserKey,
    reason: &str,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let result = user::Entity::update_many()
        .set(user::ActiveModel {
            suspended_at_ms: Set(Some(now_ms)),
            state_reason: Set(Some(reason.to_owned())),
            ..Default::default()
        })
        .filter(user::Column::Id.eq(user.0))
        .filter(user::Column::SuspendedAtMs.is_null())
        .filter(user::Column::DeactivatedAtMs.is_null())
        .exec(db.database())
        .await?;
    Ok(result.rows_affected == 1)
}

/// Lifts a suspension; `Ok(false)`, changing nothing, if the account is not
/// suspended (or was deactivated meanwhile).
pub(crate) async fn unsuspend_account(
    db: &impl Connection,
    user: UserKey,
) -> Result<bool, StoreError> {
    let result = user::Entity::update_many()
        .set(user::ActiveModel {
            suspended_at_ms: Set(None),
            state_reason: Set(None),
            ..Default::default()
        })
        .filter(user::Column::Id.eq(user.0))
        .filter(user::Column::SuspendedAtMs.is_not_null())
        .filter(user::Column::DeactivatedAtMs.is_null())
        .exec(db.database())
        .await?;
    Ok(result.rows_affected == 1)
}

/// Deactivates an account at `now_ms` (active or suspended); `Ok(false)`,
/// changing nothing, if it was deactivated already. The row stays, so the
/// username stays taken.
pub(crate) async fn deactivate_account(
    db: &impl Connection,
    user: UserKey,
    reason: &str,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let result = user::Entity::update_many()
        .set(user::ActiveModel {
            deactivated_at_ms: Set(Some(now_ms)),
            state_reason: Set(Some(reason.to_owned())),
            ..Default::default()
        })
        .filter(user::Column::Id.eq(user.0))
        .filter(user::Column::DeactivatedAtMs.is_null())
        .exec(db.database())
        .await?;
    Ok(result.rows_affected == 1)
}

/// Deletes every device of `user` (their key packages go with them, by
/// foreign key) and returns the ids deleted. Run it in the deactivation's
/// transaction, after reading what the response counts.
pub(crate) async fn delete_devices_of_user(
    db: &impl Connection,
    user: UserKey,
) -> Result<Vec<DeviceId>, StoreError> {
    let devices = super::list_devices(db, user).await?;
    device::Entity::delete_many()
        .filter(device::Column::UserId.eq(user.0))
        .exec(db.database())
        .await?;
    Ok(devices.into_iter().map(|device| device.device_id).collect())
}

/// How many key packages (of any kind, claimed or not) `device_ids` hold: what
/// deleting them deletes.
pub(crate) async fn count_key_packages_of_devices(
    db: &impl Connection,
    device_ids: &[DeviceId],
) -> Result<u64, StoreError> {
    use sea_orm::PaginatorTrait;
    if device_ids.is_empty() {
        return Ok(0);
    }
    Ok(key_package::Entity::find()
        .filter(
            key_package::Column::DeviceId.is_in(device_ids.iter().map(|id| id.as_str().to_owned())),
        )
        .count(db.database())
        .await?)
}

/// A device's stock as the admin API shows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct DeviceStock {
    /// Unclaimed, unexpired ordinary packages.
    pub(crate) ordinary: u64,
    /// An unexpired last-resort package is stored.
    pub(crate) has_last_resort: bool,
}

#[derive(FromQueryResult)]
struct StockRow {
    device_id: String,
    last_resort: bool,
    usable: i64,
}

/// The stock of each of `device_ids` at `now_ms`, in one grouped statement
/// (the same notion of usable as a claim's: unclaimed and unexpired); a
/// device with nothing usable is absent.
pub(crate) async fn stock_of_devices(
    db: &impl Connection,
    device_ids: &[String],
    now_ms: i64,
) -> Result<HashMap<String, DeviceStock>, StoreError> {
    if device_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = key_package::Entity::find()
        .select_only()
        .column(key_package::Column::DeviceId)
        .column(key_package::Column::LastResort)
        .column_as(Expr::col(key_package::Column::Id).count(), "usable")
        .filter(key_package::Column::DeviceId.is_in(device_ids.iter().cloned()))
        .filter(
            key_package::Column::ClaimedAtMs
                .is_null()
                .or(key_package::Column::LastResort.eq(true)),
        )
        .filter(key_package::Column::NotAfterMs.gt(now_ms))
        .group_by(key_package::Column::DeviceId)
        .group_by(key_package::Column::LastResort)
        .into_model::<StockRow>()
        .all(db.database())
        .await?;
    let mut stock: HashMap<String, DeviceStock> = HashMap::new();
    for row in rows {
        let usable = to_u64(
            row.usable,
            format!("key packages of device {}", row.device_id),
            "count",
        )?;
        let entry = stock.entry(row.device_id).or_default();
        if row.last_resort {
            entry.has_last_resort = usable > 0;
        } else {
            entry.ordinary = usable;
        }
    }
    Ok(stock)
}

/// A local device's current membership of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeviceGroup {
    pub(crate) device_id: String,
    /// The MLS group id.
    pub(crate) group_id: Vec<u8>,
    /// The hub's domain; `None` for a group hosted here.
    pub(crate) hub_domain: Option<String>,
}

#[derive(FromQueryResult)]
struct DeviceGroupRow {
    device_id: String,
    mls_group_id: Vec<u8>,
    hub_domain: Option<String>,
}

/// The groups each of `device_ids` (devices of this domain) is a current
/// member of, ordered by group then device, in one statement.
pub(crate) async fn current_groups_of_devices(
    db: &impl Connection,
    device_ids: &[String],
) -> Result<Vec<DeviceGroup>, StoreError> {
    if device_ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows = group_member::Entity::find()
        .select_only()
        .column(group_member::Column::DeviceId)
        .column(group::Column::MlsGroupId)
        .column(group::Column::HubDomain)
        .join(
            sea_orm::JoinType::InnerJoin,
            group_member::Entity::belongs_to(group::Entity)
                .from(group_member::Column::GroupId)
                .to(group::Column::Id)
                .into(),
        )
        .filter(group_member::Column::DeviceId.is_in(device_ids.iter().cloned()))
        .filter(group_member::Column::RemoteDomain.is_null())
        .filter(group_member::Column::RemovedAtSeq.is_null())
        .order_by_asc(group::Column::Id)
        .order_by_asc(group_member::Column::DeviceId)
        .into_model::<DeviceGroupRow>()
        .all(db.database())
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| DeviceGroup {
            device_id: row.device_id,
            group_id: row.mls_group_id,
            hub_domain: row.hub_domain,
        })
        .collect())
}

/// The devices named, each with its account, in no particular order; ids
/// that name no device are left out.
pub(crate) async fn find_devices_with_accounts(
    db: &impl Connection,
    device_ids: &[String],
) -> Result<Vec<(DeviceRecord, UserRecord)>, StoreError> {
    if device_ids.is_empty() {
        return Ok(Vec::new());
    }
    device::Entity::find()
        .filter(device::Column::Id.is_in(device_ids.iter().cloned()))
        .find_also_related(user::Entity)
        .all(db.database())
        .await?
        .into_iter()
        .filter_map(|(device, user)| user.map(|user| (device, user)))
        .map(|(device, user)| Ok((device_record(device)?, user_record(user)?)))
        .collect()
}

/// The stored public state of each of the groups hosted here among
/// `group_ids` (MLS group ids), in one statement; a follower's copy (which
/// holds no state) is left out.
pub(crate) async fn hosted_group_states(
    db: &impl Connection,
    group_ids: &[Vec<u8>],
) -> Result<HashMap<Vec<u8>, Vec<u8>>, StoreError> {
    if group_ids.is_empty() {
        return Ok(HashMap::new());
    }
    Ok(group::Entity::find()
        .select_only()
        .column(group::Column::MlsGroupId)
        .expr(super::groups::current_state())
        .filter(group::Column::MlsGroupId.is_in(group_ids.iter().cloned()))
        .filter(group::Column::HubDomain.is_null())
        .into_tuple::<(Vec<u8>, Vec<u8>)>()
        .all(db.database())
        .await?
        .into_iter()
        .collect())
}
