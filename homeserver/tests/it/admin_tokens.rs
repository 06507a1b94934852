//! `conclave-homeserver admin tokens ...` as an operator runs it (the real
//! binary, `--json`), against a running homeserver's database: a token made
//! there registers an account, a revoked one registers no one (refused
//! before anything is written), and the listing shows where each stands.
//! `registration-token create`, the older command, makes tokens through the
//! same use case.

use crate::harness::{Api, assert_status, new_signer, register_request};
use conclave_homeserver::config::RegistrationPolicy;
use conclave_proto::client::v1 as proto;
use conclave_test_support::{DatabaseChoice, TestHomeserver, TestOptions};
use serde_json::Value;
use std::process::{Output, Stdio};
use tokio::process::Command;
use tonic::Code;

on_both_databases!(tokens_are_made_listed_and_revoked_from_the_command_line);

/// Runs `conclave-homeserver ARGS` against the database of `server`.
async fn homeserver_command(server: &TestHomeserver, arguments: &[&str]) -> Output {
    let config = server.config();
    Command::new(env!("CARGO_BIN_EXE_conclave-homeserver"))
        .args(arguments)
        .env_clear()
        .env("CONCLAVE_DOMAIN", &config.domain)
        .env("CONCLAVE_DATABASE__URL", &config.database.url)
        .env("CONCLAVE_LOG__FILTER", "warn")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .expect("running conclave-homeserver")
}

/// The stdout of a command that succeeded.
fn succeeded(output: &Output) -> String {
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

/// Each line of the output as a JSON object.
fn json_lines(output: &str) -> Vec<Value> {
    output
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
        .collect()
}

fn request_with_token(username: &str, registration_token: &str) -> proto::RegisterRequest {
    let mut request = register_request(username, &new_signer());
    request.registration_token = registration_token.to_owned();
    request
}

async fn tokens_are_made_listed_and_revoked_from_the_command_line(database: DatabaseChoice) {
    let server = TestHomeserver::start_with(
        TestOptions::on(database).registration(RegistrationPolicy::Token),
    )
    .await;
    let api = Api::connect(&server).await;

    // Made by the admin command: the secret once, with its record.
    let created = succeeded(
        &homeserver_command(
            &server,
            &[
                "admin",
                "tokens",
                "create",
                "--uses",
                "3",
                "--valid-days",
                "7",
                "--json",
            ],
        )
        .await,
    );
    let created = json_lines(&created);
    assert_eq!(created.len(), 1, "{created:?}");
    let token = created[0]["token"].as_str().expect("the secret").to_owned();
    let record = &created[0]["registration_token"];
    let id = record["id"].as_u64().expect("the token's id");
    assert_eq!(record["uses_allowed"], 3);
    assert_eq!(record["uses_remaining"], 3);
    assert_eq!(record["state"], "usable");
    assert_eq!(record["created_by"], "operator");
    assert!(record["expires_at_ms"].is_i64(), "{record}");

    // And by the older command, through the same use case: it prints only
    // the secret.
    let older = succeeded(
        &homeserver_command(&server, &["registration-token", "create", "--uses", "1"]).await,
    );
    let older = older.trim_end().to_owned();
    assert!(!older.is_empty() && !older.contains(' '), "{older:?}");

    // Bad terms are refused and make nothing.
    for arguments in [
        ["admin", "tokens", "create", "--uses", "0"],
        ["admin", "tokens", "create", "--uses", "1000001"],
    ] {
        let refusal = failed(&homeserver_command(&server, &arguments).await);
        assert!(refusal.contains("uses must be 1 to 1000000"), "{refusal}");
    }
    let refusal = failed(
        &homeserver_command(
            &server,
            &["admin", "tokens", "create", "--valid-days", "3651"],
        )
        .await,
    );
    assert!(
        refusal.contains("valid_for_days must be 1 to 3650"),
        "{refusal}"
    );

    api.try_register(request_with_token("alice", &token))
        .await
        .expect("registering with the admin's token");
    api.try_register(request_with_token("bob", &older))
        .await
        .expect("registering with the older command's token");

    let listed = json_lines(&succeeded(
        &homeserver_command(&server, &["admin", "tokens", "list", "--json"]).await,
    ));
    // Usable only, newest first: the older command's single use is spent.
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["id"], id);
    assert_eq!(listed[0]["uses_count"], 1);
    assert_eq!(listed[0]["uses_remaining"], 2);
    assert!(
        !listed[0].to_string().contains(&token),
        "a listing never shows a secret"
    );

    // Revoked: the token registers no one, though it has uses left.
    let revoked = json_lines(&succeeded(
        &homeserver_command(
            &server,
            &["admin", "tokens", "revoke", &id.to_string(), "--json"],
        )
        .await,
    ));
    assert_eq!(revoked[0]["state"], "revoked");
    assert_eq!(revoked[0]["uses_remaining"], 0);
    assert!(revoked[0]["revoked_at_ms"].is_i64(), "{:?}", revoked[0]);
    let result = api.try_register(request_with_token("carol", &token)).await;
    assert_status(
        result,
        Code::PermissionDenied,
        "the registration token is unknown, expired, used up or revoked",
    );
    let again =
        failed(&homeserver_command(&server, &["admin", "tokens", "revoke", &id.to_string()]).await);
    assert!(
        again.contains(&format!("registration token {id} is already revoked")),
        "{again}"
    );
    let unknown =
        failed(&homeserver_command(&server, &["admin", "tokens", "revoke", "999999"]).await);
    assert!(
        unknown.contains("there is no registration token 999999"),
        "{unknown}"
    );

    assert!(
        succeeded(&homeserver_command(&server, &["admin", "tokens", "list"]).await).is_empty(),
        "no usable token is left"
    );
    let everything = json_lines(&succeeded(
        &homeserver_command(&server, &["admin", "tokens", "list", "--all", "--json"]).await,
    ));
    let states: Vec<&str> = everything
        .iter()
        .map(|token| token["state"].as_str().expect("a state"))
        .collect();
    assert_eq!(states, ["used_up", "revoked"], "{everything:?}");
}
