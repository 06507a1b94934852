//! `conclave-homeserver admin ...`, the real binary as an operator runs it:
//! the admin role granted and revoked, refusals on stderr with a failure
//! exit, `--json` output, and the audit log of it all.

use conclave_test_support::{DatabaseChoice, TestDatabase};
use std::process::{Output, Stdio};
use tokio::process::Command;

on_both_databases!(grant_and_revoke_the_admin_role);

/// Runs `conclave-homeserver admin ARGS` for the domain `a.example` on
/// `database_url`, configured by the environment only.
async fn admin(database_url: &str, arguments: &[&str]) -> Output {
    admin_command("a.example", database_url, arguments).await
}

/// Runs `conclave-homeserver admin ARGS` for `domain` on `database_url`, as an
/// operator on the server's host would.
pub(crate) async fn admin_command(domain: &str, database_url: &str, arguments: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_conclave-homeserver"))
        .arg("admin")
        .args(arguments)
        .env_clear()
        .env("CONCLAVE_DOMAIN", domain)
        .env("CONCLAVE_DATABASE__URL", database_url)
        .env("CONCLAVE_LOG__FILTER", "warn")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .expect("running conclave-homeserver admin")
}

/// The stdout of a command that succeeded.
pub(crate) fn succeeded(output: &Output) -> String {
    assert!(
        output.status.success(),
        "{output:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).expect("the output is text")
}

/// The stderr of a command that failed, which printed nothing on stdout.
fn failed(output: &Output) -> String {
    assert!(!output.status.success(), "{output:?}");
    assert!(output.stdout.is_empty(), "{output:?}");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// An account, written as Register would (the password hash is never read
/// by these commands).
async fn add_account(database: &TestDatabase, username: &str) {
    database
        .execute(&format!(
            "INSERT INTO users (username, password_hash, created_at_ms) VALUES ('{username}', 'unused', 0)"
        ))
        .await
        .expect("inserting an account");
}

async fn grant_and_revoke_the_admin_role(database: DatabaseChoice) {
    let database = TestDatabase::create(database).await;
    let url = database.url();
    // The command migrates the database it is given, as `migrate` would.
    let unknown = failed(&admin(url, &["grant", "alice"]).await);
    assert!(
        unknown.contains("there is no user alice@a.example"),
        "{unknown}"
    );
    add_account(&database, "alice").await;

    let granted = succeeded(&admin(url, &["grant", "alice"]).await);
    assert_eq!(granted, "alice@a.example is now an administrator\n");
    let again = failed(&admin(url, &["grant", "alice@a.example"]).await);
    assert!(
        again.contains("alice@a.example is an administrator already"),
        "{again}"
    );
    let foreign = failed(&admin(url, &["grant", "alice@b.example"]).await);
    assert!(foreign.contains("belongs to domain b.example"), "{foreign}");

    let revoked = succeeded(&admin(url, &["revoke", "alice", "--json"]).await);
    let revoked: serde_json::Value = serde_json::from_str(&revoked).expect("one JSON object");
    assert_eq!(
        revoked,
        serde_json::json!({"user_id": "alice@a.example", "admin": false})
    );
    let again = failed(&admin(url, &["revoke", "alice"]).await);
    assert!(
        again.contains("alice@a.example is not an administrator"),
        "{again}"
    );
    let granted = succeeded(&admin(url, &["grant", "--json", "alice"]).await);
    assert_eq!(
        granted,
        "{\"user_id\":\"alice@a.example\",\"admin\":true}\n"
    );

    // Everything above is in the audit log, newest first, by the operator.
    let listed = succeeded(&admin(url, &["audit", "list", "--json", "--action", "admin."]).await);
    let entries: Vec<serde_json::Value> = listed
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON object per line"))
        .collect();
    let summary: Vec<(&str, &str, bool)> = entries
        .iter()
        .map(|entry| {
            assert_eq!(entry["actor"], "operator", "{entry}");
            assert_eq!(entry["address"], "", "{entry}");
            (
                entry["action"].as_str().unwrap(),
                entry["target"].as_str().unwrap(),
                entry["succeeded"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("admin.grant", "alice@a.example", true),
            ("admin.revoke", "alice@a.example", false),
            ("admin.revoke", "alice@a.example", true),
            ("admin.grant", "alice@b.example", false),
            ("admin.grant", "alice@a.example", false),
            ("admin.grant", "alice@a.example", true),
            ("admin.grant", "alice@a.example", false),
        ]
    );
    let limited = succeeded(&admin(url, &["audit", "list", "--limit", "2"]).await);
    assert_eq!(limited.lines().count(), 2, "{limited}");
    assert!(
        limited
            .lines()
            .next()
            .unwrap()
            .contains("operator  admin.grant alice@a.example  done: granted the admin role"),
        "{limited}"
    );
    failed(&admin(url, &["audit", "list", "--limit", "0"]).await);

    let exported = succeeded(&admin(url, &["audit", "export"]).await);
    let actions: Vec<String> = exported
        .lines()
        .map(|line| {
            let entry: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
            entry["action"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(actions.len(), 8, "{exported}");
    assert_eq!(actions.first().map(String::as_str), Some("admin.grant"));
    assert_eq!(actions.last().map(String::as_str), Some("audit.export"));
}
