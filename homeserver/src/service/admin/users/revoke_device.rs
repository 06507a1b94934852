//! Revoking one device: its token stops working, its open streams end, its
//! key packages are deleted and it leaves every group it was in, as for a
//! deactivation; the account and its other devices are untouched. Audited as
//! `device.revoke`.

use super::super::audit::audited;
use super::super::{AdminCaller, AdminError};
use super::deactivate_user::departure_reason;
use super::views::find_account;
use crate::service::accounts::identity_of;
use crate::service::delivery::close_device_streams;
use crate::service::{Context, departures};
use crate::store;
use conclave_core::ids::DeviceId;

/// What revoking did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Revocation {
    pub(crate) key_packages_deleted: u64,
    /// Groups given a departure notice for the device.
    pub(crate) groups_left: u32,
}

/// Revokes the device `device_id` of the account named `user`. NOT_FOUND for
/// an unknown user or a device the account does not have; INVALID_ARGUMENT
/// for a device id that is not 16 lowercase hex digits.
pub(crate) async fn revoke_device(
    context: &Context,
    caller: &AdminCaller,
    user: &str,
    device_id: &str,
) -> Result<Revocation, AdminError> {
    let target = format!(
        "{}/{device_id}",
        super::super::grant_role::target_name(context, user)
    );
    let result = revoke(context, user, device_id).await;
    audited(context, caller, "device.revoke", &target, result).await
}

async fn revoke(
    context: &Context,
    user: &str,
    device_id: &str,
) -> Result<(Revocation, String), AdminError> {
    let device_id: DeviceId = device_id
        .trim()
        .parse()
        .map_err(|error| AdminError::Invalid(format!("device_id: {error}")))?;
    let account = find_account(context, user).await?;
    let identity = identity_of(context, &account.user.username, &device_id);
    let transaction = context.store.begin().await?;
    let key_packages_deleted =
        store::count_key_packages_of_devices(&transaction, std::slice::from_ref(&device_id))
            .await?;
    if !store::delete_device(&transaction, account.user.key, &device_id).await? {
        return Err(AdminError::NotFound(format!(
            "{} has no device {device_id}",
            identity.user_id()
        )));
    }
    transaction.commit().await?;
    let streams = close_device_streams(context, device_id.as_str());
    let groups_left = departures::announce(
        context,
        std::slice::from_ref(&identity),
        departure_reason(""),
    )
    .await
    .map_err(|error| {
        AdminError::Internal(format!(
            "the device is revoked, but its groups could not be told: {error}"
        ))
    })?;
    let detail = format!(
        "revoked; {key_packages_deleted} key packages deleted, {groups_left} groups given a departure notice, {streams} streams closed here"
    );
    Ok((
        Revocation {
            key_packages_deleted,
            groups_left,
        },
        detail,
    ))
}
