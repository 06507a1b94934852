//! What the group and message commands print: a text for people and a JSON
//! object for scripts, side by side as in `output`. A received message is one
//! line either way, so `listen --json` prints JSON lines.

use chrono::SecondsFormat;
use conclave_client::{
    CommitOutcome, GroupId, GroupSummary, Member, MembershipChange, ReceivedMessage, SentMessage,
};
use serde_json::{Value, json};

use crate::output::Report;

pub(crate) fn created(group: &GroupSummary) -> Report {
    let suite = group
        .cipher_suite
        .map(|suite| format!(", cipher suite {suite}"))
        .unwrap_or_default();
    Report {
        text: format!("created group {} ({}{suite})", group.name, group.group_id),
        json: summary_json(group),
    }
}

pub(crate) fn invited(group_id: &GroupId, change: &MembershipChange) -> Report {
    let devices: Vec<String> = change.devices.iter().map(ToString::to_string).collect();
    let text = if devices.is_empty() {
        "everyone is a member already".to_owned()
    } else {
        format!("added {} (epoch {})", devices.join(", "), change.epoch)
    };
    Report {
        text,
        json: json!({
            "group_id": group_id.to_string(),
            "added": devices,
            "epoch": change.epoch,
        }),
    }
}

pub(crate) fn removed(group_id: &GroupId, change: &MembershipChange) -> Report {
    let devices: Vec<String> = change.devices.iter().map(ToString::to_string).collect();
    Report {
        text: format!("removed {} (epoch {})", devices.join(", "), change.epoch),
        json: json!({
            "group_id": group_id.to_string(),
            "removed": devices,
            "epoch": change.epoch,
        }),
    }
}

pub(crate) fn left(group_id: &GroupId, name: &str) -> Report {
    Report {
        text: format!("asked to leave {name}; you are out once another member's client commits it"),
        json: json!({ "group_id": group_id.to_string(), "leaving": true }),
    }
}

pub(crate) fn rotated(group_id: &GroupId, outcome: &CommitOutcome) -> Report {
    Report {
        text: format!("replaced your keys (epoch {})", outcome.epoch),
        json: json!({
            "group_id": group_id.to_string(),
            "epoch": outcome.epoch,
            "seq": outcome.seq,
        }),
    }
}

pub(crate) fn sent(sent: &SentMessage) -> Report {
    Report {
        text: format!("sent (#{} in the group's log)", sent.seq),
        json: json!({
            "group_id": sent.group_id.to_string(),
            "seq": sent.seq,
            "epoch": sent.epoch,
        }),
    }
}

pub(crate) fn groups(groups: &[GroupSummary]) -> Report {
    let mut text = if groups.is_empty() {
        "no groups\n".to_owned()
    } else {
        format!(
            "{:<32}  {:<20}  {:<9}  {:>5}  {:>7}\n",
            "GROUP", "NAME", "STATUS", "EPOCH", "DEVICES"
        )
    };
    for group in groups {
        text.push_str(&format!(
            "{:<32}  {:<20}  {:<9}  {:>5}  {:>7}\n",
            group.group_id,
            group.name,
            status_text(group),
            group
                .epoch
                .map_or("-".to_owned(), |epoch| epoch.to_string()),
            group.member_devices,
        ));
    }
    Report {
        text,
        json: json!({ "groups": groups.iter().map(summary_json).collect::<Vec<_>>() }),
    }
}

pub(crate) fn members(group: &GroupSummary, members: &[Member]) -> Report {
    let mut text = format!("{:<24}  {:<16}  {}\n", "USER", "DEVICE", "");
    for member in members {
        text.push_str(&format!(
            "{:<24}  {:<16}  {}\n",
            member.user_id().to_string(),
            member.device_id(),
            if member.this_device {
                "(this device)"
            } else {
                ""
            },
        ));
    }
    let entries: Vec<Value> = members
        .iter()
        .map(|member| {
            json!({
                "user_id": member.user_id().to_string(),
                "device_id": member.device_id().to_string(),
                "credential_identity": member.identity.to_string(),
                "leaf_index": member.leaf_index,
                "this_device": member.this_device,
            })
        })
        .collect();
    Report {
        text,
        json: json!({
            "group_id": group.group_id.to_string(),
            "name": group.name,
            "epoch": group.epoch,
            "members": entries,
        }),
    }
}

/// One received message as one line.
pub(crate) fn message_line(message: &ReceivedMessage, as_json: bool) -> String {
    let time = message
        .server_time
        .map(|time| time.to_rfc3339_opts(SecondsFormat::Millis, true));
    if as_json {
        return json!({
            "group_id": message.group_id.to_string(),
            "group": message.group_name,
            "seq": message.seq,
            "sender": message.sender.user_id().to_string(),
            "sender_device": message.sender.device_id().to_string(),
            "server_time": time,
            "type": message.body.kind(),
            "body": message.body.text(),
        })
        .to_string();
    }
    let body = match message.body.text() {
        // One message, one line: a newline inside it is shown escaped.
        Some(text) => text.replace('\n', "\\n"),
        None => format!(
            "[a {} message this conclave cannot show]",
            message.body.kind()
        ),
    };
    let time = message
        .server_time
        .map(|time| time.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default();
    format!(
        "{time} [{}] {}: {body}",
        message.group_name,
        message.sender.user_id()
    )
}

fn status_text(group: &GroupSummary) -> &'static str {
    if group.leaving {
        "leaving"
    } else {
        group.status.as_str()
    }
}

fn summary_json(group: &GroupSummary) -> Value {
    json!({
        "group_id": group.group_id.to_string(),
        "name": group.name,
        "status": group.status.as_str(),
        "epoch": group.epoch,
        "member_devices": group.member_devices,
        "member_users": group.member_users,
        "leaving": group.leaving,
        "cipher_suite": group.cipher_suite.map(|suite| suite.short_name()),
    })
}
