//! `admin grant USER` and `admin revoke USER`.

use super::{AdminCommandError, print};
use crate::service::Context;
use crate::service::admin::AdminCaller;
use crate::service::admin::grant_role::grant_role;
use crate::service::admin::revoke_role::revoke_role;

/// The result of either command, as `--json` prints it.
#[derive(serde::Serialize)]
struct RoleResult {
    user_id: String,
    admin: bool,
}

pub(super) async fn grant(
    context: &Context,
    caller: &AdminCaller,
    user: &str,
    json: bool,
    out: &mut impl std::io::Write,
) -> Result<(), AdminCommandError> {
    let user_id = grant_role(context, caller, user).await?;
    let text = format!("{user_id} is now an administrator");
    let result = RoleResult {
        user_id: user_id.to_string(),
        admin: true,
    };
    print(out, json, &result, text)
}

pub(super) async fn revoke(
    context: &Context,
    caller: &AdminCaller,
    user: &str,
    json: bool,
    out: &mut impl std::io::Write,
) -> Result<(), AdminCommandError> {
    let user_id = revoke_role(context, caller, user).await?;
    let text = format!("{user_id} is no longer an administrator");
    let result = RoleResult {
        user_id: user_id.to_string(),
        admin: false,
    };
    print(out, json, &result, text)
}
