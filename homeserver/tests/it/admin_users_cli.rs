//! `conclave-homeserver admin users|devices|key-stock`, the real binary, as
//! an operator runs it on the server's host: each command prints its result
//! as JSON lines with `--json`, refusals exit non-zero with the reason on
//! stderr, and every action is in the audit log as `operator`.

use crate::admin_cli::admin_command;
use conclave_test_support::{DatabaseChoice, TestDatabase};
use serde_json::Value;
use std::process::Output;

on_both_databases!(the_operator_administers_users_and_devices_from_the_command_line);

const DEVICE: &str = "00000000000000b1";

/// `conclave-homeserver admin ARGS...` on `database_url`, for `a.example`.
async fn admin(database_url: &str, arguments: &[&str]) -> Output {
    admin_command("a.example", database_url, arguments).await
}

/// The JSON objects the command printed, one per line; panics if it failed.
fn json_lines(output: &Output) -> Vec<Value> {
    assert!(
        output.status.success(),
        "the command failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect()
}

async fn the_operator_administers_users_and_devices_from_the_command_line(
    database: DatabaseChoice,
) {
    let database = TestDatabase::create(database).await;
    // Any admin command migrates first; then the accounts are written as
    // registration would leave them.
    json_lines(&admin(database.url(), &["users", "list", "--json"]).await);
    database
        .execute(
            "INSERT INTO users (username, password_hash, created_at_ms) VALUES \
             ('alice', 'x', 1000), ('bob', 'x', 2000), ('carol', 'x', 3000)",
        )
        .await
        .unwrap();
    database
        .execute(&format!(
            "INSERT INTO devices (id, user_id, display_name, signature_public_key, access_token_hash, created_at_ms, last_seen_at_ms) \
             SELECT '{DEVICE}', id, 'phone', 'key-of-bob', 'token-of-bob', 2000, 9000000000000 FROM users WHERE username = 'bob'"
        ))
        .await
        .unwrap();

    let page =
        json_lines(&admin(database.url(), &["users", "list", "--limit", "2", "--json"]).await);
    assert_eq!(
        page.len(),
        3,
        "two accounts and the next page's token: {page:?}"
    );
    assert_eq!(page[0]["user_id"], "alice@a.example");
    assert_eq!(page[1]["user_id"], "bob@a.example");
    assert_eq!(page[1]["device_count"], 1);
    let token = page[2]["next_page_token"].as_str().unwrap().to_owned();
    let rest = json_lines(
        &admin(
            database.url(),
            &[
                "users",
                "list",
                "--limit",
                "2",
                "--page-token",
                &token,
                "--json",
            ],
        )
        .await,
    );
    assert_eq!(rest.len(), 1, "{rest:?}");
    assert_eq!(rest[0]["user_id"], "carol@a.example");

    let suspended = json_lines(
        &admin(
            database.url(),
            &["users", "suspend", "bob", "--reason", "spam", "--json"],
        )
        .await,
    );
    assert_eq!(suspended[0]["state"], "suspended");
    assert_eq!(suspended[0]["state_reason"], "spam");
    let again = admin(database.url(), &["users", "suspend", "bob", "--json"]).await;
    assert!(!again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("the account is suspended"), "{stderr}");
    assert!(again.stdout.is_empty(), "a refusal prints no result");

    let shown = json_lines(
        &admin(
            database.url(),
            &["users", "show", "bob@a.example", "--json"],
        )
        .await,
    );
    assert_eq!(shown.len(), 1);
    assert_eq!(shown[0]["user"]["state"], "suspended");
    assert_eq!(shown[0]["devices"][0]["device_id"], DEVICE);
    assert_eq!(shown[0]["devices"][0]["key_packages"], 0);

    let low =
        json_lines(&admin(database.url(), &["key-stock", "--threshold", "1", "--json"]).await);
    assert_eq!(low.len(), 1, "{low:?}");
    assert_eq!(
        low[0]["credential_identity"],
        format!("bob@a.example/{DEVICE}")
    );

    let unsuspended =
        json_lines(&admin(database.url(), &["users", "unsuspend", "bob", "--json"]).await);
    assert_eq!(unsuspended[0]["state"], "active");
    let devices = json_lines(&admin(database.url(), &["devices", "list", "bob", "--json"]).await);
    assert_eq!(devices.len(), 1);
    let revoked = json_lines(
        &admin(
            database.url(),
            &["devices", "revoke", "bob", DEVICE, "--json"],
        )
        .await,
    );
    assert_eq!(revoked[0]["key_packages_deleted"], 0);
    let devices = json_lines(&admin(database.url(), &["devices", "list", "bob", "--json"]).await);
    assert!(devices.is_empty(), "{devices:?}");

    let deactivated =
        json_lines(&admin(database.url(), &["users", "deactivate", "carol", "--json"]).await);
    assert_eq!(deactivated[0]["user"]["state"], "deactivated");
    assert_eq!(deactivated[0]["devices_removed"], 0);
    let unknown = admin(database.url(), &["users", "show", "nobody"]).await;
    assert!(!unknown.status.success());
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("there is no user nobody@a.example"),
        "{unknown:?}"
    );

    let text = admin(database.url(), &["users", "list"]).await;
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("carol@a.example  deactivated"), "{text}");
}
