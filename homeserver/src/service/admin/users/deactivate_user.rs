//! Deactivating an account for good: its devices and their key packages are
//! deleted, their streams end, each leaves the groups it was in (a departure
//! notice asks the remaining members to commit its removal), its admin
//! sessions end, and the username stays taken. Audited as `user.deactivate`.

use super::super::audit::audited;
use super::super::grant_role::target_name;
use super::super::{AdminCaller, AdminError, end_admin_sessions};
use super::views::{UserSummary, find_account, summary_of};
use super::{is_own_account, state_changed_meanwhile};
use crate::rules::account_state::{check_deactivate, check_reason};
use crate::service::accounts::identity_of;
use crate::service::delivery::close_device_streams;
use crate::service::{Context, departures};
use crate::store;

/// What deactivating did.
#[derive(Debug, Clone)]
pub(crate) struct Deactivation {
    /// The account, now deactivated.
    pub(crate) user: UserSummary,
    pub(crate) devices_removed: u64,
    pub(crate) key_packages_deleted: u64,
    /// Groups given a departure notice for one of its devices.
    pub(crate) groups_left: u32,
}

/// Deactivates the account named `user` for `reason` (up to 500 characters;
/// may be empty). FAILED_PRECONDITION if it is deactivated already or is the
/// caller's own.
pub(crate) async fn deactivate_user(
    context: &Context,
    caller: &AdminCaller,
    user: &str,
    reason: &str,
) -> Result<Deactivation, AdminError> {
    let target = target_name(context, user);
    let result = deactivate(context, caller, user, reason).await;
    audited(context, caller, "user.deactivate", &target, result).await
}

async fn deactivate(
    context: &Context,
    caller: &AdminCaller,
    user: &str,
    reason: &str,
) -> Result<(Deactivation, String), AdminError> {
    let reason = check_reason(reason).map_err(AdminError::Invalid)?;
    let account = find_account(context, user).await?;
    let is_own = is_own_account(caller, account.user.key);
    check_deactivate(account.user.state, is_own)?;
    // The state and the devices change together: a deactivated account
    // never has devices, and devices are never deleted without it.
    let transaction = context.store.begin().await?;
    if !store::deactivate_account(&transaction, account.user.key, reason, context.now_ms()).await? {
        drop(transaction);
        return Err(state_changed_meanwhile(context, &account, |state| {
            check_deactivate(state, is_own)
        })
        .await);
    }
    let devices = store::list_devices(&transaction, account.user.key).await?;
    let device_ids: Vec<_> = devices.into_iter().map(|device| device.device_id).collect();
    let key_packages_deleted =
        store::count_key_packages_of_devices(&transaction, &device_ids).await?;
    store::delete_devices_of_user(&transaction, account.user.key).await?;
    transaction.commit().await?;

    // Nothing that can fail before the wake-ups that end the devices'
    // streams and cached sessions.
    for device_id in &device_ids {
        close_device_streams(context, device_id.as_str());
    }
    let sessions = end_admin_sessions(context, account.user.key).await?;
    let identities: Vec<_> = device_ids
        .iter()
        .map(|device_id| identity_of(context, &account.user.username, device_id))
        .collect();
    let groups_left = departures::announce(context, &identities, departure_reason(reason))
        .await
        .map_err(|error| {
            AdminError::Internal(format!(
                "the account is deactivated and its devices removed, but their groups could not be told: {error}"
            ))
        })?;
    let devices_removed = device_ids.len() as u64;
    let mut detail = format!(
        "deactivated; {devices_removed} devices removed, {key_packages_deleted} key packages deleted, \
         {groups_left} groups given a departure notice, {sessions} admin sessions ended"
    );
    if !reason.is_empty() {
        detail.push_str(&format!("; reason: {reason}"));
    }
    let account = store::find_account(&context.store, account.user.username.as_str())
        .await?
        .unwrap_or(account);
    let deactivation = Deactivation {
        user: summary_of(context, account).await?,
        devices_removed,
        key_packages_deleted,
        groups_left,
    };
    Ok((deactivation, detail))
}

/// The reason the groups' members see in the departure notice.
pub(super) fn departure_reason(reason: &str) -> &str {
    if reason.is_empty() {
        "removed by an administrator"
    } else {
        reason
    }
}
