//! What the group and message commands print: a text for people and a JSON
//! object for scripts, side by side as in `output`. A received message or
//! membership change is one line either way, so `listen --json` prints JSON
//! lines.

use chrono::{DateTime, SecondsFormat, Utc};
use conclave_client::{
    CommitOutcome, GroupId, GroupSummary, Member, MembershipChange, MembershipEvent,
    MembershipKind, ReceivedMessage, SentMessage, TimelineEvent,
};
use conclave_core::ids::CredentialIdentity;
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

/// A sent message: where it landed, or (sent by another process on this
/// state) no position, which this process does not know.
pub(crate) fn sent(sent: &SentMessage) -> Report {
    if sent.by_another_process {
        return Report {
            text: "sent, by another conclave process on this device's state".to_owned(),
            json: json!({
                "group_id": sent.group_id.to_string(),
                "seq": null,
                "epoch": null,
                "by_another_process": true,
            }),
        };
    }
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
            "{:<32}  {:<20}  {:<9}  {:>5}  {:>7}  {:>6}\n",
            "GROUP", "NAME", "STATUS", "EPOCH", "DEVICES", "UNREAD"
        )
    };
    for group in groups {
        text.push_str(&format!(
            "{:<32}  {:<20}  {:<9}  {:>5}  {:>7}  {:>6}\n",
            group.group_id,
            group.name,
            status_text(group),
            group
                .epoch
                .map_or("-".to_owned(), |epoch| epoch.to_string()),
            group.member_devices,
            group.unread,
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

/// One entry of a group's timeline (a message or a membership change) as one
/// line.
pub(crate) fn event_line(event: &TimelineEvent, as_json: bool) -> String {
    match event {
        TimelineEvent::Message(message) => message_line(message, as_json),
        TimelineEvent::Membership(event) => membership_line(event, as_json),
    }
}

/// A group's history, oldest first: one line per entry, or one JSON object
/// with the entries and the `--before` of the next older page (the oldest
/// entry's log position: a page holds whole log positions; null when the page
/// is empty, as there is nothing older).
pub(crate) fn history(group_id: &GroupId, name: &str, events: &[TimelineEvent]) -> Report {
    let text = if events.is_empty() {
        format!("no history of {name}")
    } else {
        events
            .iter()
            .map(|event| event_line(event, false))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let entries: Vec<Value> = events.iter().map(event_json).collect();
    Report {
        text,
        json: json!({
            "group_id": group_id.to_string(),
            "name": name,
            "entries": entries,
            "next_before": events.first().map(TimelineEvent::seq),
        }),
    }
}

/// One received message as one line.
pub(crate) fn message_line(message: &ReceivedMessage, as_json: bool) -> String {
    if as_json {
        return message_json(message).to_string();
    }
    let body = match message.body.text() {
        Some(text) => one_line(text),
        None => format!(
            "[a {} message this conclave cannot show]",
            message.body.kind()
        ),
    };
    format!(
        "{}[{}] {}: {body}",
        times_text(message.server_time, message.sent_at),
        one_line(&message.group_name),
        message.sender.user_id()
    )
}

/// Text a member or a hub wrote, made safe for one terminal line: a newline is
/// shown as `\n`, and every other control character but a tab (an escape
/// sequence could move the cursor or forge a line of its own) as `\u{..}`.
fn one_line(text: &str) -> String {
    let mut shown = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '\n' => shown.push_str("\\n"),
            character if character.is_control() && character != '\t' => {
                shown.push_str(&character.escape_unicode().to_string());
            }
            character => shown.push(character),
        }
    }
    shown
}

/// One membership change as one line.
pub(crate) fn membership_line(event: &MembershipEvent, as_json: bool) -> String {
    if as_json {
        return membership_json(event).to_string();
    }
    let subject = if event.this_device {
        format!("{} (this device)", event.subject)
    } else {
        event.subject.to_string()
    };
    let by = event.by.as_ref().map(CredentialIdentity::to_string);
    let mut change = match (event.kind, by) {
        (MembershipKind::Joined, Some(by)) if event.by.as_ref() != Some(&event.subject) => {
            format!("{subject} joined, added by {by}")
        }
        (MembershipKind::Joined, _) => format!("{subject} joined"),
        (MembershipKind::Left, _) => format!("{subject} left"),
        (MembershipKind::Removed, Some(by)) => format!("{subject} was removed by {by}"),
        (MembershipKind::Removed, None) => format!("{subject} was removed"),
        (MembershipKind::Rotated, _) => format!("{subject} replaced its keys"),
        (MembershipKind::Rejoined, _) => format!("{subject} rejoined"),
    };
    if !event.reason.is_empty() {
        change.push_str(&format!(" ({})", one_line(&event.reason)));
    }
    format!(
        "{}[{}] * {change}",
        times_text(event.server_time, None),
        one_line(&event.group_name)
    )
}

fn event_json(event: &TimelineEvent) -> Value {
    match event {
        TimelineEvent::Message(message) => message_json(message),
        TimelineEvent::Membership(event) => membership_json(event),
    }
}

fn message_json(message: &ReceivedMessage) -> Value {
    json!({
        "event": "message",
        "group_id": message.group_id.to_string(),
        "group": message.group_name,
        "seq": message.seq,
        "sender": message.sender.user_id().to_string(),
        "sender_device": message.sender.device_id().to_string(),
        "server_time": message.server_time.map(rfc3339),
        "sent_at": message.sent_at.map(rfc3339),
        "own": message.own,
        "type": message.body.kind(),
        "body": message.body.text(),
    })
}

fn membership_json(event: &MembershipEvent) -> Value {
    json!({
        "event": "membership",
        "group_id": event.group_id.to_string(),
        "group": event.group_name,
        "seq": event.seq,
        "change": event.kind.as_str(),
        "member": event.subject.user_id().to_string(),
        "member_device": event.subject.device_id().to_string(),
        "this_device": event.this_device,
        "by": event.by.as_ref().map(|by| by.user_id().to_string()),
        "by_device": event.by.as_ref().map(|by| by.device_id().to_string()),
        "reason": event.reason,
        "server_time": event.server_time.map(rfc3339),
        "own": event.own,
    })
}

fn rfc3339(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The server's time, then the sender's clock when it says something else:
/// `2026-12-04 10:00:01 (sent 10:00:00) `, or empty when neither is known.
fn times_text(server_time: Option<DateTime<Utc>>, sent_at: Option<DateTime<Utc>>) -> String {
    const FULL: &str = "%Y-%m-%d %H:%M:%S";
    match (server_time, sent_at) {
        (Some(server), Some(sent)) if server.date_naive() == sent.date_naive() => format!(
            "{} (sent {}) ",
            server.format(FULL),
            sent.format("%H:%M:%S")
        ),
        (Some(server), Some(sent)) => {
            format!("{} (sent {}) ", server.format(FULL), sent.format(FULL))
        }
        (Some(server), None) => format!("{} ", server.format(FULL)),
        (None, Some(sent)) => format!("(sent {}) ", sent.format(FULL)),
        (None, None) => String::new(),
    }
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
        "unread": group.unread,
        "cipher_suite": group.cipher_suite.map(|suite| suite.short_name()),
    })
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn what_others_wrote_stays_on_one_line_without_escape_sequences() {
        assert_eq!(one_line("hi\nthere"), "hi\\nthere");
        assert_eq!(one_line("plain, ünïcode"), "plain, ünïcode");
        assert_eq!(one_line("\u{1b}[2Kfake"), "\\u{1b}[2Kfake");
        assert_eq!(one_line("a\rb\tc"), "a\\u{d}b\tc");
    }
}
