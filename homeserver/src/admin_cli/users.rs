//! `admin users list|show|suspend|unsuspend|deactivate`, `admin devices
//! list|revoke` and `admin key-stock`: the users slice of the admin API on
//! the server's host.

use super::{AdminCommandError, print};
use crate::service::Context;
use crate::service::admin::AdminCaller;
use crate::service::admin::grant_role::target_name;
use crate::service::admin::users::{self, DeviceSummary, GroupMembership, UserSummary};
use std::io::Write;

/// `conclave-homeserver admin users ...`.
#[derive(Debug, clap::Subcommand)]
pub enum UsersCommand {
    /// List accounts, ordered by username.
    List {
        /// Only accounts whose username contains this text.
        #[arg(long, default_value = "")]
        query: String,
        /// At most this many (1 to 200).
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// The `next_page_token` a previous page printed.
        #[arg(long, default_value = "")]
        page_token: String,
        /// One JSON object per account, then `{"next_page_token": ...}` if
        /// more follow.
        #[arg(long)]
        json: bool,
    },
    /// Show one account: its devices (last seen, key packages) and groups.
    Show {
        /// `alice` or `alice@<this domain>`.
        user: String,
        /// Print it as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Suspend an account: its devices' calls and its logins are refused,
    /// its streams and admin sessions end, until it is unsuspended.
    Suspend {
        /// `alice` or `alice@<this domain>`.
        user: String,
        /// Why, for the audit log (up to 500 characters).
        #[arg(long, default_value = "")]
        reason: String,
        /// Print the account as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Lift a suspension: the account's devices work again as they were.
    Unsuspend {
        /// `alice` or `alice@<this domain>`.
        user: String,
        /// Print the account as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Deactivate an account for good: its devices and key packages are
    /// deleted, its devices leave their groups; the username stays taken.
    Deactivate {
        /// `alice` or `alice@<this domain>`.
        user: String,
        /// Why, for the audit log (up to 500 characters).
        #[arg(long, default_value = "")]
        reason: String,
        /// Print the result as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

/// `conclave-homeserver admin devices ...`.
#[derive(Debug, clap::Subcommand)]
pub enum DevicesCommand {
    /// List an account's devices, oldest first.
    List {
        /// `alice` or `alice@<this domain>`.
        user: String,
        /// One JSON object per device.
        #[arg(long)]
        json: bool,
    },
    /// Revoke one device: its token stops working, its key packages are
    /// deleted and it leaves its groups.
    Revoke {
        /// `alice` or `alice@<this domain>`.
        user: String,
        /// The device id, 16 lowercase hex digits.
        device_id: String,
        /// Print the result as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

/// `conclave-homeserver admin key-stock`: devices low on key packages.
#[derive(Debug, clap::Args)]
pub struct KeyStockArgs {
    /// Devices with fewer ordinary key packages than this; 0 for
    /// `[key_packages] low_stock_threshold`.
    #[arg(long, default_value_t = 0)]
    threshold: u32,
    /// At most this many (1 to 200).
    #[arg(long, default_value_t = 50)]
    limit: u32,
    /// The `next_page_token` a previous page printed.
    #[arg(long, default_value = "")]
    page_token: String,
    /// One JSON object per device, then `{"next_page_token": ...}` if more
    /// follow.
    #[arg(long)]
    json: bool,
}

/// An account as `--json` prints it (times in milliseconds since the Unix
/// epoch).
#[derive(serde::Serialize)]
struct UserJson {
    user_id: String,
    /// `active`, `suspended` or `deactivated`.
    state: &'static str,
    state_reason: String,
    state_changed_at_ms: Option<i64>,
    admin: bool,
    created_at_ms: i64,
    last_seen_at_ms: Option<i64>,
    device_count: u64,
}

/// A device as `--json` prints it.
#[derive(serde::Serialize)]
struct DeviceJson {
    user_id: String,
    device_id: String,
    credential_identity: String,
    display_name: String,
    created_at_ms: i64,
    last_seen_at_ms: i64,
    key_packages: u64,
    has_last_resort: bool,
    groups: u64,
}

/// A group membership as `--json` prints it.
#[derive(serde::Serialize)]
struct GroupJson {
    /// Lowercase hex.
    group_id: String,
    name: String,
    hub_domain: String,
    device_ids: Vec<String>,
}

#[derive(serde::Serialize)]
struct UserDetailJson {
    user: UserJson,
    devices: Vec<DeviceJson>,
    groups: Vec<GroupJson>,
}

#[derive(serde::Serialize)]
struct NextPage<'a> {
    next_page_token: &'a str,
}

#[derive(serde::Serialize)]
struct DeactivationJson {
    user: UserJson,
    devices_removed: u64,
    key_packages_deleted: u64,
    groups_left: u32,
}

#[derive(serde::Serialize)]
struct RevocationJson {
    user_id: String,
    device_id: String,
    key_packages_deleted: u64,
    groups_left: u32,
}

fn user_json(user: &UserSummary) -> UserJson {
    UserJson {
        user_id: user.user_id.to_string(),
        state: user.state.name(),
        state_reason: user.state_reason.clone(),
        state_changed_at_ms: user.state.changed_at_ms(),
        admin: user.admin,
        created_at_ms: user.created_at_ms,
        last_seen_at_ms: user.last_seen_at_ms,
        device_count: user.device_count,
    }
}

fn device_json(device: &DeviceSummary) -> DeviceJson {
    DeviceJson {
        user_id: device.identity.user_id().to_string(),
        device_id: device.identity.device_id().to_string(),
        credential_identity: device.identity.to_string(),
        display_name: device.display_name.clone(),
        created_at_ms: device.created_at_ms,
        last_seen_at_ms: device.last_seen_at_ms,
        key_packages: device.key_packages,
        has_last_resort: device.has_last_resort,
        groups: device.groups,
    }
}

fn group_json(group: &GroupMembership) -> GroupJson {
    GroupJson {
        group_id: hex::encode(&group.group_id),
        name: group.name.clone(),
        hub_domain: group.hub_domain.clone(),
        device_ids: group.device_ids.clone(),
    }
}

/// A time for people: `2026-12-03 23:10 UTC`, or `never`.
fn time(at_ms: Option<i64>) -> String {
    at_ms
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map_or_else(
            || "never".to_owned(),
            |at| at.format("%Y-%m-%d %H:%M UTC").to_string(),
        )
}

fn user_line(user: &UserSummary) -> String {
    let admin = if user.admin { ", admin" } else { "" };
    format!(
        "{}  {}{admin}  {} devices  last seen {}",
        user.user_id,
        user.state.name(),
        user.device_count,
        time(user.last_seen_at_ms)
    )
}

fn device_line(device: &DeviceSummary) -> String {
    let last_resort = if device.has_last_resort {
        " + last resort"
    } else {
        ""
    };
    format!(
        "{}  {:?}  last seen {}  {} key packages{last_resort}  {} groups",
        device.identity,
        device.display_name,
        time(Some(device.last_seen_at_ms)),
        device.key_packages,
        device.groups
    )
}

/// `admin users ...`.
pub(super) async fn run_users(
    context: &Context,
    caller: &AdminCaller,
    command: UsersCommand,
    out: &mut impl Write,
) -> Result<(), AdminCommandError> {
    match command {
        UsersCommand::List {
            query,
            limit,
            page_token,
            json,
        } => {
            let page = users::list_users(context, &query, limit, &page_token).await?;
            for user in &page.users {
                print(out, json, &user_json(user), user_line(user))?;
            }
            print_next_page(out, json, &page.next_page_token)
        }
        UsersCommand::Show { user, json } => {
            let detail = users::get_user(context, &user).await?;
            if json {
                let value = UserDetailJson {
                    user: user_json(&detail.user),
                    devices: detail.devices.iter().map(device_json).collect(),
                    groups: detail.groups.iter().map(group_json).collect(),
                };
                return print(out, true, &value, "");
            }
            writeln!(out, "{}", user_line(&detail.user))?;
            if !detail.user.state_reason.is_empty() {
                writeln!(out, "  reason: {}", detail.user.state_reason)?;
            }
            for device in &detail.devices {
                writeln!(out, "  device {}", device_line(device))?;
            }
            for group in &detail.groups {
                let name = if group.name.is_empty() {
                    String::new()
                } else {
                    format!(" {:?}", group.name)
                };
                writeln!(
                    out,
                    "  group {}{name} at {}: devices {}",
                    hex::encode(&group.group_id),
                    group.hub_domain,
                    group.device_ids.join(", ")
                )?;
            }
            Ok(())
        }
        UsersCommand::Suspend { user, reason, json } => {
            let user = users::suspend_user(context, caller, &user, &reason).await?;
            let text = format!("{} is suspended", user.user_id);
            print(out, json, &user_json(&user), text)
        }
        UsersCommand::Unsuspend { user, json } => {
            let user = users::unsuspend_user(context, caller, &user).await?;
            let text = format!("{} is active again", user.user_id);
            print(out, json, &user_json(&user), text)
        }
        UsersCommand::Deactivate { user, reason, json } => {
            let done = users::deactivate_user(context, caller, &user, &reason).await?;
            let text = format!(
                "{} is deactivated: {} devices removed, {} key packages deleted, {} groups asked to remove its devices",
                done.user.user_id,
                done.devices_removed,
                done.key_packages_deleted,
                done.groups_left
            );
            let value = DeactivationJson {
                user: user_json(&done.user),
                devices_removed: done.devices_removed,
                key_packages_deleted: done.key_packages_deleted,
                groups_left: done.groups_left,
            };
            print(out, json, &value, text)
        }
    }
}

/// `admin devices ...`.
pub(super) async fn run_devices(
    context: &Context,
    caller: &AdminCaller,
    command: DevicesCommand,
    out: &mut impl Write,
) -> Result<(), AdminCommandError> {
    match command {
        DevicesCommand::List { user, json } => {
            for device in users::list_devices(context, &user).await? {
                print(out, json, &device_json(&device), device_line(&device))?;
            }
            Ok(())
        }
        DevicesCommand::Revoke {
            user,
            device_id,
            json,
        } => {
            let done = users::revoke_device(context, caller, &user, &device_id).await?;
            let user_id = target_name(context, &user);
            let text = format!(
                "device {device_id} of {user_id} is revoked: {} key packages deleted, {} groups asked to remove it",
                done.key_packages_deleted, done.groups_left
            );
            let value = RevocationJson {
                user_id,
                device_id,
                key_packages_deleted: done.key_packages_deleted,
                groups_left: done.groups_left,
            };
            print(out, json, &value, text)
        }
    }
}

/// `admin key-stock`.
pub(super) async fn run_key_stock(
    context: &Context,
    arguments: KeyStockArgs,
    out: &mut impl Write,
) -> Result<(), AdminCommandError> {
    let page = users::list_low_stock(
        context,
        arguments.threshold,
        arguments.limit,
        &arguments.page_token,
    )
    .await?;
    if !arguments.json && page.devices.is_empty() {
        writeln!(
            out,
            "no device seen lately has fewer than {} key packages",
            page.threshold
        )?;
        return Ok(());
    }
    for device in &page.devices {
        print(
            out,
            arguments.json,
            &device_json(device),
            device_line(device),
        )?;
    }
    print_next_page(out, arguments.json, &page.next_page_token)
}

/// The token of the next page, if there is one: a JSON line of its own, or a
/// hint for people.
fn print_next_page(
    out: &mut impl Write,
    json: bool,
    next_page_token: &str,
) -> Result<(), AdminCommandError> {
    if next_page_token.is_empty() {
        return Ok(());
    }
    let text = format!("more: --page-token {next_page_token}");
    print(out, json, &NextPage { next_page_token }, text)
}
