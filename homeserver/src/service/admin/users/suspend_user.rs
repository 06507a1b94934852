//! Suspending an account: its devices stay enrolled and in their groups, but
//! every call of theirs is refused, its logins are refused, its open
//! Subscribe streams end and its admin sessions end. Audited as
//! `user.suspend`.

use super::super::audit::audited;
use super::super::grant_role::target_name;
use super::super::{AdminCaller, AdminError, end_admin_sessions};
use super::views::{UserSummary, find_account, summary_of};
use super::{is_own_account, state_changed_meanwhile};
use crate::rules::account_state::{check_reason, check_suspend};
use crate::service::Context;
use crate::service::delivery::close_device_streams;
use crate::store;

/// Suspends the account named `user` for `reason` (up to 500 characters;
/// may be empty). FAILED_PRECONDITION if it is not active or is the caller's
/// own.
pub(crate) async fn suspend_user(
    context: &Context,
    caller: &AdminCaller,
    user: &str,
    reason: &str,
) -> Result<UserSummary, AdminError> {
    let target = target_name(context, user);
    let result = suspend(context, caller, user, reason).await;
    audited(context, caller, "user.suspend", &target, result).await
}

async fn suspend(
    context: &Context,
    caller: &AdminCaller,
    user: &str,
    reason: &str,
) -> Result<(UserSummary, String), AdminError> {
    let reason = check_reason(reason).map_err(AdminError::Invalid)?;
    let account = find_account(context, user).await?;
    let is_own = is_own_account(caller, account.user.key);
    check_suspend(account.user.state, is_own)?;
    // Read before: nothing that can fail may come between the commit and the
    // wake-ups that end the devices' streams and cached sessions (a suspended
    // account gains no devices meanwhile: its logins are refused).
    let devices = store::list_devices(&context.store, account.user.key).await?;
    if !store::suspend_account(&context.store, account.user.key, reason, context.now_ms()).await? {
        return Err(state_changed_meanwhile(context, &account, |state| {
            check_suspend(state, is_own)
        })
        .await);
    }
    // After the commit, so that a stream re-checking its device sees the
    // suspension.
    let mut streams = 0;
    for device in &devices {
        streams += close_device_streams(context, device.device_id.as_str());
    }
    let sessions = end_admin_sessions(context, account.user.key).await?;
    let mut detail =
        format!("suspended; {sessions} admin sessions ended, {streams} streams closed here");
    if !reason.is_empty() {
        detail.push_str(&format!("; reason: {reason}"));
    }
    let account = store::find_account(&context.store, account.user.username.as_str())
        .await?
        .unwrap_or(account);
    Ok((summary_of(context, account).await?, detail))
}
