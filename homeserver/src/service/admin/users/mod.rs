//! The accounts and devices of this domain, as administrators see and act on
//! them (`conclave.admin.v1.UserAdminService`, the console, `conclave-homeserver
//! admin users|devices|key-stock`).
//!
//! Suspending keeps everything of an account (its devices stay enrolled and
//! in their groups) and refuses it: `accounts::authenticate` reads the
//! account's state with the device, in the same statement, so every call of
//! its devices answers UNAUTHENTICATED "this account is suspended", Login is
//! refused alike, and its open Subscribe streams end
//! (`delivery::close_device_streams`). Unsuspending lifts the refusal and
//! nothing else is needed. Deactivating and revoking a device remove devices
//! for good: their rows and key packages are deleted, their streams end, and
//! `departures::announce` asks the groups they were in to remove them.
//!
//! # Layout
//! One use case per file: `list_users`, `get_user`, `suspend_user`,
//! `unsuspend_user`, `deactivate_user`, `list_devices`, `revoke_device`,
//! `list_low_stock`; `views` holds what they return and the reads they share.

mod deactivate_user;
mod get_user;
mod list_devices;
mod list_low_stock;
mod list_users;
mod revoke_device;
mod suspend_user;
mod unsuspend_user;
mod views;

pub(crate) use deactivate_user::deactivate_user;
pub(crate) use get_user::get_user;
pub(crate) use list_devices::list_devices;
pub(crate) use list_low_stock::list_low_stock;
pub(crate) use list_users::list_users;
pub(crate) use revoke_device::revoke_device;
pub(crate) use suspend_user::suspend_user;
pub(crate) use unsuspend_user::unsuspend_user;
pub(crate) use views::{DeviceSummary, GroupMembership, UserDetail, UserSummary};

use super::{Actor, AdminCaller, AdminError};
use crate::rules::account_state::StateRefusal;
use crate::store::{self, Account, UserKey};

/// True if `caller` is the administrator `user` themself.
fn is_own_account(caller: &AdminCaller, user: UserKey) -> bool {
    matches!(&caller.actor, Actor::Admin { user: own, .. } if *own == user)
}

impl From<StateRefusal> for AdminError {
    fn from(refusal: StateRefusal) -> AdminError {
        AdminError::FailedPrecondition(refusal.to_string())
    }
}

/// The account again, after a conditional update found it in another state
/// than the one checked (another administrator acted in between): the
/// refusal names the state it is in now.
async fn state_changed_meanwhile(
    context: &crate::service::Context,
    account: &Account,
    check: impl Fn(crate::rules::account_state::AccountState) -> Result<(), StateRefusal>,
) -> AdminError {
    match store::find_account(&context.store, account.user.username.as_str()).await {
        Ok(Some(now)) => match check(now.user.state) {
            Err(refusal) => refusal.into(),
            Ok(()) => AdminError::FailedPrecondition(
                "the account changed meanwhile; try again".to_owned(),
            ),
        },
        Ok(None) => AdminError::NotFound(format!(
            "there is no user {}",
            super::user_id(context, &account.user.username)
        )),
        Err(error) => error.into(),
    }
}

#[cfg(test)]
mod tests;
