//! An account's groups as administrators see them, after a real chat: alice
//! and bob on a.example, carol on b.example, in a group alice made on
//! a.example (its hub). `conclave-homeserver admin users show --json` (the
//! real binary) names the group where its hub is this domain (from the
//! group context) and leaves the name out on b.example (a follower's copy
//! has no state); revoking a device gives each of its groups a departure
//! notice, at the hub here and queued for the hub elsewhere.

use std::process::{Output, Stdio};

use conclave_test_support::cluster::homeserver_binary;
use conclave_test_support::{DatabaseChoice, TestNetwork};
use serde_json::Value;
use tokio::process::Command;

use crate::harness::{User, group_of};

on_both_databases!(an_accounts_groups_are_shown_by_name_where_hosted_and_left_on_revocation);

/// Runs `conclave-homeserver admin ARGS --json` against the database of
/// `domain` and returns its one JSON object.
async fn admin_json(network: &TestNetwork, domain: &str, arguments: &[&str]) -> Value {
    let config = network.config(domain);
    let output: Output = Command::new(homeserver_binary())
        .arg("admin")
        .args(arguments)
        .arg("--json")
        .env_clear()
        .env("CONCLAVE_DOMAIN", &config.domain)
        .env("CONCLAVE_DATABASE__URL", &config.database.url)
        .env("CONCLAVE_LOG__FILTER", "warn")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .expect("running conclave-homeserver admin");
    assert!(
        output.status.success(),
        "{arguments:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    serde_json::from_str(lines[0]).expect("one JSON object")
}

async fn an_accounts_groups_are_shown_by_name_where_hosted_and_left_on_revocation(
    database: DatabaseChoice,
) {
    let network = TestNetwork::start(&["a.example", "b.example"], database).await;
    let [alice, bob, carol] = User::register_all(
        &network,
        ["alice@a.example", "bob@a.example", "carol@b.example"],
    )
    .await;
    let group_id = group_of(&alice, "project x", &[&bob, &carol]).await;
    let group_hex = group_id.to_string();

    let at_hub = admin_json(&network, "a.example", &["users", "show", "bob"]).await;
    let bob_device = bob.identity().device_id().to_string();
    assert_eq!(
        at_hub["devices"][0]["device_id"],
        bob_device.as_str(),
        "{at_hub}"
    );
    assert_eq!(at_hub["devices"][0]["groups"], 1, "{at_hub}");
    let group = &at_hub["groups"][0];
    assert_eq!(group["group_id"], group_hex.as_str(), "{at_hub}");
    assert_eq!(group["name"], "project x", "{at_hub}");
    assert_eq!(group["hub_domain"], "a.example", "{at_hub}");
    assert_eq!(group["device_ids"][0], bob_device.as_str(), "{at_hub}");

    let at_follower = admin_json(&network, "b.example", &["users", "show", "carol"]).await;
    let group = &at_follower["groups"][0];
    assert_eq!(group["group_id"], group_hex.as_str(), "{at_follower}");
    assert_eq!(group["name"], "", "{at_follower}");
    assert_eq!(group["hub_domain"], "a.example", "{at_follower}");

    let revoked = admin_json(
        &network,
        "a.example",
        &["devices", "revoke", "bob", &bob_device],
    )
    .await;
    assert_eq!(revoked["groups_left"], 1, "{revoked}");
    let carol_device = carol.identity().device_id().to_string();
    let revoked = admin_json(
        &network,
        "b.example",
        &["devices", "revoke", "carol", &carol_device],
    )
    .await;
    assert_eq!(revoked["groups_left"], 1, "{revoked}");
    let bob_now = admin_json(&network, "a.example", &["users", "show", "bob"]).await;
    assert_eq!(
        bob_now["devices"].as_array().map(Vec::len),
        Some(0),
        "{bob_now}"
    );
}
