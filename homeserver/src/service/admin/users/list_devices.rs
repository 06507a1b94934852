//! One account's devices, oldest first, with their stock and group counts.
//! Not audited (a read).

use super::super::AdminError;
use super::views::{DeviceSummary, describe_devices, find_account};
use crate::service::Context;
use crate::store;

/// The devices of the account named `user`.
pub(crate) async fn list_devices(
    context: &Context,
    user: &str,
) -> Result<Vec<DeviceSummary>, AdminError> {
    let account = find_account(context, user).await?;
    let username = account.user.username;
    let devices = store::list_devices(&context.store, account.user.key)
        .await?
        .into_iter()
        .map(|device| (device, username.clone()))
        .collect();
    Ok(describe_devices(context, devices).await?.0)
}
