//! `conclave-homeserver admin groups ...`: the groups hosted here and this
//! domain's copies of others', listed and inspected (never message content).

use super::{AdminCommandError, print};
use crate::service::Context;
use crate::service::admin::inspect_group::{GroupInspection, inspect_group};
use crate::service::admin::list_groups::{AdminGroupSummary, MAX_PAGE_SIZE, list_groups};
use std::fmt::Write as _;

/// `admin groups ...`.
#[derive(Debug, clap::Subcommand)]
pub enum GroupsCommand {
    /// List groups, most recently active first: all of them, or those whose
    /// id starts with some hex digits, or those a user's devices are in.
    List {
        /// Hex digits of a group id, or a user id `name@domain`.
        #[arg(long, default_value = "")]
        query: String,
        /// One JSON object per group, one per line.
        #[arg(long)]
        json: bool,
    },
    /// Show one group: hub, epoch, members per domain and their devices,
    /// each local device's cursor and how far behind it is, the log, the
    /// follower domains, and the group's name where this server hosts it.
    Inspect {
        /// The MLS group id, in hex.
        group_id: String,
        /// The inspection as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

pub(super) async fn run(
    context: &Context,
    command: GroupsCommand,
    out: &mut impl std::io::Write,
) -> Result<(), AdminCommandError> {
    match command {
        GroupsCommand::List { query, json } => {
            let mut page_token = String::new();
            loop {
                let page = list_groups(context, &query, MAX_PAGE_SIZE, &page_token).await?;
                for group in &page.groups {
                    print(out, json, group, summary_line(group))?;
                }
                if page.next_page_token.is_empty() {
                    return Ok(());
                }
                page_token = page.next_page_token;
            }
        }
        GroupsCommand::Inspect { group_id, json } => {
            let group_id = hex::decode(group_id.trim()).map_err(|error| {
                AdminCommandError::Refused(format!("the group id is not hex: {error}"))
            })?;
            let inspection = inspect_group(context, &group_id).await?;
            print(out, json, &inspection, inspection_text(&inspection))
        }
    }
}

/// `2026-12-03 23:10:00 UTC`, or `never`.
pub(super) fn time(at_ms: Option<i64>) -> String {
    at_ms
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map_or_else(
            || "never".to_owned(),
            |at| at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        )
}

fn summary_line(group: &AdminGroupSummary) -> String {
    format!(
        "{}  {:?}  hub {}  epoch {}  {} devices  last seq {}  active {}",
        hex::encode(&group.group_id),
        group.name.as_deref().unwrap_or(""),
        group.hub_domain,
        group.epoch,
        group.member_devices,
        group.last_seq,
        time(Some(group.last_activity_at_ms)),
    )
}

fn inspection_text(inspection: &GroupInspection) -> String {
    let group = &inspection.group;
    let mut text = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(text, "group:         {}", hex::encode(&group.group_id));
    let _ = writeln!(
        text,
        "name:          {}",
        group.name.as_deref().unwrap_or("(not visible here)")
    );
    let hosting = if group.hosted_here {
        " (hosted here)"
    } else {
        ""
    };
    let _ = writeln!(text, "hub:           {}{hosting}", group.hub_domain);
    let _ = writeln!(text, "epoch:         {}", group.epoch);
    if let Some(cipher_suite) = inspection.cipher_suite {
        let _ = writeln!(text, "cipher suite:  0x{cipher_suite:04x}");
    }
    let _ = writeln!(
        text,
        "created:       {}",
        time(Some(inspection.created_at_ms))
    );
    let _ = writeln!(
        text,
        "last commit:   {}",
        time(inspection.last_commit_at_ms)
    );
    let _ = writeln!(
        text,
        "last activity: {}",
        time(Some(group.last_activity_at_ms))
    );
    let _ = writeln!(
        text,
        "log:           {} events from seq {} to {}",
        inspection.log_length, inspection.first_retained_seq, group.last_seq
    );
    let _ = writeln!(text, "members:       {} devices", inspection.members.len());
    for (domain, devices) in &inspection.members_per_domain {
        let _ = writeln!(text, "  {domain}: {devices}");
    }
    for member in &inspection.members {
        let leaf = member
            .leaf_index
            .map_or_else(String::new, |leaf| format!("leaf {leaf}  "));
        if member.local {
            let _ = writeln!(
                text,
                "  {leaf}{}  acknowledged seq {} ({} behind)  last seen {}",
                member.credential_identity,
                member.acknowledged_seq,
                member.behind,
                time(member.last_seen_at_ms)
            );
        } else {
            let _ = writeln!(text, "  {leaf}{}", member.credential_identity);
        }
    }
    for follower in &inspection.followers {
        let _ = writeln!(
            text,
            "follower:      {} confirmed seq {} ({} behind)",
            follower.domain, follower.confirmed_seq, follower.behind
        );
    }
    text.trim_end().to_owned()
}
