//! Lifting a suspension: the account's devices, untouched while it was
//! suspended, work again as they were. Audited as `user.unsuspend`.

use super::super::audit::audited;
use super::super::grant_role::target_name;
use super::super::{AdminCaller, AdminError};
use super::state_changed_meanwhile;
use super::views::{UserSummary, find_account, summary_of};
use crate::rules::account_state::check_unsuspend;
use crate::service::Context;
use crate::store;

/// Unsuspends the account named `user`; FAILED_PRECONDITION if it is not
/// suspended.
pub(crate) async fn unsuspend_user(
    context: &Context,
    caller: &AdminCaller,
    user: &str,
) -> Result<UserSummary, AdminError> {
    let target = target_name(context, user);
    let result = unsuspend(context, user).await;
    audited(context, caller, "user.unsuspend", &target, result).await
}

async fn unsuspend(context: &Context, user: &str) -> Result<(UserSummary, String), AdminError> {
    let account = find_account(context, user).await?;
    check_unsuspend(account.user.state)?;
    if !store::unsuspend_account(&context.store, account.user.key).await? {
        return Err(state_changed_meanwhile(context, &account, check_unsuspend).await);
    }
    let account = store::find_account(&context.store, account.user.username.as_str())
        .await?
        .unwrap_or(account);
    Ok((
        summary_of(context, account).await?,
        "unsuspended".to_owned(),
    ))
}
