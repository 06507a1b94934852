//! Giving an account the admin role (`conclave-homeserver admin grant USER`,
//! on the server's host only: no API can make an administrator).

use super::audit::audited;
use super::{AdminCaller, AdminError, find_local_user, parse_local_user, user_id};
use crate::service::Context;
use crate::store;
use conclave_core::ids::UserId;

/// Gives `user` (`alice` or `alice@<this domain>`) the admin role and returns
/// its user id; FAILED_PRECONDITION if it has the role already. Audited as
/// `admin.grant`.
pub(crate) async fn grant_role(
    context: &Context,
    caller: &AdminCaller,
    user: &str,
) -> Result<UserId, AdminError> {
    let target = target_name(context, user);
    let result = grant(context, user).await;
    audited(context, caller, "admin.grant", &target, result).await
}

async fn grant(context: &Context, user: &str) -> Result<(UserId, String), AdminError> {
    let username = parse_local_user(context, user)?;
    let account = find_local_user(context, &username).await?;
    let user_id = user_id(context, &username);
    if !store::set_admin_role(&context.store, account.key, true).await? {
        return Err(AdminError::FailedPrecondition(format!(
            "{user_id} is an administrator already"
        )));
    }
    Ok((user_id, "granted the admin role".to_owned()))
}

/// The audit log's target for a user named `user`: its user id when the name
/// parses, else the text as given.
pub(crate) fn target_name(context: &Context, user: &str) -> String {
    parse_local_user(context, user)
        .map(|username| user_id(context, &username).to_string())
        .unwrap_or_else(|_| user.to_owned())
}
