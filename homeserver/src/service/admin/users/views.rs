//! What the users use cases return (accounts, devices, group memberships) and
//! the reads they share: a batch of devices with their stock and groups in a
//! fixed number of statements, whatever the number of devices.

use super::super::group_name::group_name;
use super::super::{AdminError, parse_local_user, user_id};
use crate::rules::account_state::AccountState;
use crate::service::Context;
use crate::store::{self, Account, DeviceActivity, DeviceRecord};
use conclave_core::ids::{CredentialIdentity, UserId, Username};
use std::collections::{BTreeMap, HashMap};

/// An account, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UserSummary {
    pub(crate) user_id: UserId,
    pub(crate) state: AccountState,
    /// Why it was suspended or deactivated; empty if active or not said.
    pub(crate) state_reason: String,
    /// It has the admin role.
    pub(crate) admin: bool,
    pub(crate) created_at_ms: i64,
    /// The latest time any of its devices was seen; `None` without devices.
    pub(crate) last_seen_at_ms: Option<i64>,
    pub(crate) device_count: u64,
}

/// An enrolled device, with its key-package stock and how many groups it is in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeviceSummary {
    pub(crate) identity: CredentialIdentity,
    pub(crate) display_name: String,
    pub(crate) created_at_ms: i64,
    pub(crate) last_seen_at_ms: i64,
    /// Unclaimed, unexpired ordinary key packages.
    pub(crate) key_packages: u64,
    pub(crate) has_last_resort: bool,
    /// Groups it is a current member of.
    pub(crate) groups: u64,
}

/// A group some of an account's devices are in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GroupMembership {
    pub(crate) group_id: Vec<u8>,
    /// The group's name where this homeserver sees it; empty otherwise.
    pub(crate) name: String,
    /// The hub's domain (this domain's own for a group hosted here).
    pub(crate) hub_domain: String,
    /// The account's member devices, by device id.
    pub(crate) device_ids: Vec<String>,
}

/// An account in full.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UserDetail {
    pub(crate) user: UserSummary,
    /// Oldest first.
    pub(crate) devices: Vec<DeviceSummary>,
    /// Ordered by the group's row (oldest group first).
    pub(crate) groups: Vec<GroupMembership>,
}

/// The account named `text` (`alice` or `alice@<this domain>`), or
/// INVALID_ARGUMENT / NOT_FOUND.
pub(super) async fn find_account(context: &Context, text: &str) -> Result<Account, AdminError> {
    let username = parse_local_user(context, text)?;
    store::find_account(&context.store, username.as_str())
        .await?
        .ok_or_else(|| no_such_user(context, &username))
}

pub(super) fn no_such_user(context: &Context, username: &Username) -> AdminError {
    AdminError::NotFound(format!("there is no user {}", user_id(context, username)))
}

/// The summary of `account` given its devices' activity.
pub(super) fn summarize(
    context: &Context,
    account: Account,
    activity: DeviceActivity,
) -> UserSummary {
    UserSummary {
        user_id: user_id(context, &account.user.username),
        state: account.user.state,
        state_reason: account.state_reason,
        admin: account.user.is_admin,
        created_at_ms: account.created_at_ms,
        last_seen_at_ms: activity.last_seen_at_ms,
        device_count: activity.devices,
    }
}

/// The summary of one account, reading its devices' activity.
pub(super) async fn summary_of(
    context: &Context,
    account: Account,
) -> Result<UserSummary, AdminError> {
    let activity = store::device_activity(&context.store, &[account.user.key])
        .await?
        .remove(&account.user.key)
        .unwrap_or_default();
    Ok(summarize(context, account, activity))
}

/// `devices` (each with its owner's username) with their stock and group
/// counts, in their order, and the groups they are in (named where hosted
/// here): four statements in all.
pub(super) async fn describe_devices(
    context: &Context,
    devices: Vec<(DeviceRecord, Username)>,
) -> Result<(Vec<DeviceSummary>, Vec<GroupMembership>), AdminError> {
    let ids: Vec<String> = devices
        .iter()
        .map(|(device, _)| device.device_id.as_str().to_owned())
        .collect();
    let stock = store::stock_of_devices(&context.store, &ids, context.now_ms()).await?;
    let memberships = store::current_groups_of_devices(&context.store, &ids).await?;
    let mut groups_per_device: HashMap<&str, u64> = HashMap::new();
    // Keyed by the order the store returned them in (by group row), then the id.
    let mut groups: BTreeMap<usize, GroupMembership> = BTreeMap::new();
    let mut index_of: HashMap<&[u8], usize> = HashMap::new();
    for membership in &memberships {
        *groups_per_device
            .entry(membership.device_id.as_str())
            .or_default() += 1;
        let next = index_of.len();
        let index = *index_of
            .entry(membership.group_id.as_slice())
            .or_insert(next);
        groups
            .entry(index)
            .or_insert_with(|| GroupMembership {
                group_id: membership.group_id.clone(),
                name: String::new(),
                hub_domain: membership
                    .hub_domain
                    .clone()
                    .unwrap_or_else(|| context.domain.to_string()),
                device_ids: Vec::new(),
            })
            .device_ids
            .push(membership.device_id.clone());
    }
    // Names only where this homeserver holds the group's public state: the
    // groups it hosts (`group_name` reads the metadata extension).
    let group_ids: Vec<Vec<u8>> = groups
        .values()
        .map(|group| group.group_id.clone())
        .collect();
    let states = store::hosted_group_states(&context.store, &group_ids).await?;
    for group in groups.values_mut() {
        if let Some(name) = states
            .get(&group.group_id)
            .and_then(|state| group_name(state))
        {
            group.name = name;
        }
    }
    let summaries = devices
        .iter()
        .map(|(device, username)| {
            let device_stock = stock
                .get(device.device_id.as_str())
                .copied()
                .unwrap_or_default();
            DeviceSummary {
                identity: CredentialIdentity::new(
                    user_id(context, username),
                    device.device_id.clone(),
                ),
                display_name: device.display_name.clone(),
                created_at_ms: device.created_at_ms,
                last_seen_at_ms: device.last_seen_at_ms,
                key_packages: device_stock.ordinary,
                has_last_resort: device_stock.has_last_resort,
                groups: groups_per_device
                    .get(device.device_id.as_str())
                    .copied()
                    .unwrap_or_default(),
            }
        })
        .collect();
    Ok((summaries, groups.into_values().collect()))
}
