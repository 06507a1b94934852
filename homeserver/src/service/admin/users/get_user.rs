//! One account in full: its devices (last seen, key-package stock, groups)
//! and the groups they are in. Not audited (a read).

use super::super::AdminError;
use super::views::{UserDetail, describe_devices, find_account, summary_of};
use crate::service::Context;
use crate::store;

/// The account named `user` (`alice` or `alice@<this domain>`).
pub(crate) async fn get_user(context: &Context, user: &str) -> Result<UserDetail, AdminError> {
    let account = find_account(context, user).await?;
    let username = account.user.username.clone();
    let devices = store::list_devices(&context.store, account.user.key)
        .await?
        .into_iter()
        .map(|device| (device, username.clone()))
        .collect();
    let (devices, groups) = describe_devices(context, devices).await?;
    Ok(UserDetail {
        user: summary_of(context, account).await?,
        devices,
        groups,
    })
}
