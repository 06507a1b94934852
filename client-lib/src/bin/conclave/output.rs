//! What a command prints: a text for people and a JSON object for scripts, built
//! side by side so the two never drift apart. JSON field names are a stable
//! interface; add fields, never rename them.

use chrono::{DateTime, SecondsFormat, Utc};
use conclave_client::{
    ClaimedKeyPackage, Device, Enrolment, GroupRef, KeyPackageStock, LoggedOut, PublishOutcome,
    Session, WhoAmI,
};
use conclave_core::ids::UserId;
use serde_json::{Value, json};

/// A command's result in both forms.
pub(crate) struct Report {
    pub(crate) text: String,
    pub(crate) json: Value,
}

impl Report {
    /// Nothing more to print: the command printed as it went (`listen`, `chat`).
    pub(crate) fn printed_already() -> Report {
        Report {
            text: String::new(),
            json: Value::Null,
        }
    }

    /// Prints the JSON object or the text on stdout.
    pub(crate) fn print(&self, as_json: bool) {
        if as_json {
            if !self.json.is_null() {
                println!("{}", self.json);
            }
        } else if !self.text.is_empty() {
            // Table rows are padded to align columns; the padding after the last
            // column is noise.
            for line in self.text.trim_end().lines() {
                println!("{}", line.trim_end());
            }
        }
    }
}

pub(crate) fn enrolment(verb: &str, enrolment: &Enrolment) -> Report {
    let session = &enrolment.session;
    let text = format!(
        "{verb} {} as device {} on {}\n{}",
        session.user_id(),
        session.device_id(),
        session.server_url,
        publish_text(&enrolment.key_packages),
    );
    let mut json = session_json(session);
    json["key_packages"] = publish_json(&enrolment.key_packages);
    Report { text, json }
}

pub(crate) fn logout(logged_out: &LoggedOut) -> Report {
    let session = &logged_out.session;
    let left = if logged_out.groups.is_empty() {
        "in no group".to_owned()
    } else {
        format!(
            "left {}: {}; their other members' clients remove this device",
            count_groups(logged_out.groups.len()),
            group_names(&logged_out.groups)
        )
    };
    Report {
        text: format!(
            "logged out {} (device {} removed, local keys and history deleted)\n{left}",
            session.user_id(),
            session.device_id()
        ),
        json: json!({
            "logged_out": true,
            "user_id": session.user_id().to_string(),
            "device_id": session.device_id().to_string(),
            "left_groups": groups_json(&logged_out.groups),
        }),
    }
}

fn count_groups(count: usize) -> String {
    if count == 1 {
        "1 group".to_owned()
    } else {
        format!("{count} groups")
    }
}

fn group_names(groups: &[GroupRef]) -> String {
    groups
        .iter()
        .map(|group| group.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn groups_json(groups: &[GroupRef]) -> Value {
    groups
        .iter()
        .map(|group| json!({ "group_id": group.group_id.to_string(), "name": group.name }))
        .collect()
}

pub(crate) fn whoami(whoami: &WhoAmI) -> Report {
    Report {
        text: format!(
            "user        {}\ndevice      {}\ncredential  {}\nserver      {}",
            whoami.user_id(),
            whoami.device_id(),
            whoami.credential_identity,
            whoami.server_url
        ),
        json: json!({
            "user_id": whoami.user_id().to_string(),
            "device_id": whoami.device_id().to_string(),
            "credential_identity": whoami.credential_identity.to_string(),
            "server": whoami.server_url.to_string(),
        }),
    }
}

pub(crate) fn devices(devices: &[Device]) -> Report {
    let mut text = format!(
        "{:<16}  {:<20}  {:>12}  {:<20}  {}\n",
        "DEVICE", "NAME", "KEY PACKAGES", "LAST SEEN", ""
    );
    for device in devices {
        text.push_str(&format!(
            "{:<16}  {:<20}  {:>12}  {:<20}  {}\n",
            device.device_id,
            device.display_name,
            device.key_packages_available,
            device
                .last_seen_at
                .map(|time| time.format("%Y-%m-%d %H:%M UTC").to_string())
                .unwrap_or_else(|| "never".to_owned()),
            if device.current { "(this device)" } else { "" },
        ));
    }
    let entries: Vec<Value> = devices
        .iter()
        .map(|device| {
            json!({
                "device_id": device.device_id.to_string(),
                "display_name": device.display_name,
                "current": device.current,
                "key_packages_available": device.key_packages_available,
                "created_at": timestamp(device.created_at),
                "last_seen_at": timestamp(device.last_seen_at),
                "signature_public_key": hex::encode(&device.signature_public_key),
            })
        })
        .collect();
    Report {
        text,
        json: json!({ "devices": entries }),
    }
}

pub(crate) fn device_removed(device_id: &str, shared: &[GroupRef]) -> Report {
    let groups = if shared.is_empty() {
        "it shared no group with this device".to_owned()
    } else {
        format!(
            "it leaves {} it shared with this device: {}; their members' clients remove it",
            count_groups(shared.len()),
            group_names(shared)
        )
    };
    Report {
        text: format!("removed device {device_id}\n{groups}"),
        json: json!({ "removed_device_id": device_id, "shared_groups": groups_json(shared) }),
    }
}

pub(crate) fn history_setting(keep: bool, forgotten: Option<usize>) -> Report {
    let mut text = format!(
        "history: {}",
        if keep {
            "on (messages are kept in the local state after they are shown)"
        } else {
            "off (messages are deleted from the local state once shown)"
        }
    );
    if let Some(forgotten) = forgotten.filter(|forgotten| *forgotten > 0) {
        text.push_str(&format!("\ndeleted {forgotten} stored entries"));
    }
    Report {
        text,
        json: json!({ "history": keep, "deleted_entries": forgotten }),
    }
}

pub(crate) fn published(outcome: &PublishOutcome) -> Report {
    Report {
        text: publish_text(outcome),
        json: publish_json(outcome),
    }
}

pub(crate) fn stock(stock: &KeyPackageStock) -> Report {
    Report {
        text: stock_text(stock),
        json: stock_json(stock),
    }
}

pub(crate) fn claimed(user_id: &UserId, packages: &[ClaimedKeyPackage]) -> Report {
    let mut text = if packages.is_empty() {
        format!("{user_id} has no device with a key package to claim\n")
    } else {
        format!(
            "{:<16}  {:<11}  {:>5}  {:<64}  {}\n",
            "DEVICE", "LAST RESORT", "SIZE", "HASH REF", "CREDENTIAL"
        )
    };
    for package in packages {
        text.push_str(&format!(
            "{:<16}  {:<11}  {:>5}  {:<64}  {}\n",
            package.device_id,
            if package.last_resort { "yes" } else { "no" },
            package.key_package_bytes.len(),
            hex::encode(&package.hash_ref),
            package.credential_identity,
        ));
    }
    let entries: Vec<Value> = packages
        .iter()
        .map(|package| {
            json!({
                "device_id": package.device_id.to_string(),
                "credential_identity": package.credential_identity.to_string(),
                "last_resort": package.last_resort,
                "size": package.key_package_bytes.len(),
                "hash_ref": hex::encode(&package.hash_ref),
                "key_package": hex::encode(&package.key_package_bytes),
            })
        })
        .collect();
    Report {
        text,
        json: json!({ "user_id": user_id.to_string(), "key_packages": entries }),
    }
}

fn session_json(session: &Session) -> Value {
    json!({
        "user_id": session.user_id().to_string(),
        "device_id": session.device_id().to_string(),
        "credential_identity": session.credential_identity.to_string(),
        "server": session.server_url.to_string(),
    })
}

fn publish_text(outcome: &PublishOutcome) -> String {
    if !outcome.published_last_resort {
        format!("key packages: {}", stock_text(&outcome.stock))
    } else {
        format!(
            "published {} key packages and a last-resort package; {}",
            outcome.published,
            stock_text(&outcome.stock)
        )
    }
}

fn publish_json(outcome: &PublishOutcome) -> Value {
    let mut json = stock_json(&outcome.stock);
    json["published"] = json!(outcome.published);
    json["published_last_resort"] = json!(outcome.published_last_resort);
    json
}

fn stock_text(stock: &KeyPackageStock) -> String {
    let expiry = stock
        .earliest_expiry
        .map(|time| format!(", earliest expiry {}", time.format("%Y-%m-%d %H:%M UTC")))
        .unwrap_or_default();
    format!(
        "{} available, last-resort package {}{expiry}",
        stock.available,
        if stock.has_last_resort {
            "published"
        } else {
            "missing"
        },
    )
}

fn stock_json(stock: &KeyPackageStock) -> Value {
    json!({
        "available": stock.available,
        "has_last_resort": stock.has_last_resort,
        "earliest_expiry": timestamp(stock.earliest_expiry),
    })
}

/// RFC 3339 in UTC to the second, or null.
fn timestamp(time: Option<DateTime<Utc>>) -> Value {
    time.map_or(Value::Null, |time| {
        Value::String(time.to_rfc3339_opts(SecondsFormat::Secs, true))
    })
}
