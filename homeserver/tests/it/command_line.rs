//! The binary as an operator's shell sees it: shell completions and manual
//! pages; one-shot commands that print only their answer on stdout (logs on
//! stderr, quiet unless asked, never with colour codes when redirected);
//! unknown `CONCLAVE_*` variables and unreadable files refused in one line
//! that says what to do; a port in use reported once.

use conclave_test_support::command_line;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_conclave-homeserver"))
}

/// Runs the binary with `arguments` and only `variables` in its environment.
fn homeserver(arguments: &[&str], variables: &[(&str, &str)]) -> Output {
    Command::new(binary())
        .args(arguments)
        .env_clear()
        .envs(variables.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("running conclave-homeserver")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("the output is text")
}

#[test]
fn completions_and_manual_pages_cover_every_subcommand() {
    command_line::check_completions(binary());
    command_line::check_manual(binary(), "conclave-homeserver");
}

#[test]
fn one_shot_commands_print_only_their_result() {
    let directory = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        directory.path().join("conclave.sqlite").display()
    );
    let variables = [("CONCLAVE_DATABASE__URL", url.as_str())];
    let migrated = homeserver(&["migrate"], &variables);
    assert!(migrated.status.success(), "{migrated:?}");
    let stdout = text(&migrated.stdout);
    assert!(
        stdout.lines().all(|line| line.starts_with("applied m")),
        "{stdout}"
    );
    assert!(!stdout.is_empty());
    assert_eq!(text(&migrated.stderr), "", "quiet unless asked");

    let again = homeserver(&["migrate"], &variables);
    assert_eq!(
        text(&again.stdout),
        "the database schema is up to date; nothing to apply\n"
    );
    assert_eq!(text(&again.stderr), "");

    // Asked for: the logs, on stderr, with no colour codes (stderr is a pipe
    // here, as when redirected to a file).
    let verbose = homeserver(&["--verbose", "migrate"], &variables);
    assert!(verbose.status.success(), "{verbose:?}");
    let stderr = text(&verbose.stderr);
    assert!(stderr.contains(" INFO "), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "colour codes in {stderr:?}");
    assert_eq!(text(&verbose.stdout), text(&again.stdout));
}

#[test]
fn unknown_variables_are_refused_naming_the_nearest_key() {
    for (name, suggestion) in [
        ("CONCLAVE_DOMIAN", "CONCLAVE_DOMAIN"),
        ("CONCLAVE_DATABASE__ULR", "CONCLAVE_DATABASE__URL"),
        ("CONCLAVE_REDIS_URL", "CONCLAVE_REDIS__URL"),
    ] {
        for command in ["migrate", "run", "check-config"] {
            let refused = homeserver(&[command], &[(name, "x")]);
            assert_eq!(
                refused.status.code(),
                Some(2),
                "{command} {name}: {refused:?}"
            );
            assert!(refused.stdout.is_empty(), "{refused:?}");
            let stderr = text(&refused.stderr);
            // check-config closes with a summary line of its own.
            let lines = if command == "check-config" { 2 } else { 1 };
            assert_eq!(stderr.lines().count(), lines, "{stderr}");
            assert!(
                stderr.contains(&format!(
                    "environment variable {name} names no configuration key; did you mean {suggestion}?"
                )),
                "{command}: {stderr}"
            );
        }
    }
    // The client's and the tests' variables are not the homeserver's business.
    let directory = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        directory.path().join("conclave.sqlite").display()
    );
    let migrated = homeserver(
        &["migrate"],
        &[
            ("CONCLAVE_DATABASE__URL", url.as_str()),
            ("CONCLAVE_PASSWORD", "secret"),
            ("CONCLAVE_SERVER", "http://127.0.0.1:7400"),
            ("CONCLAVE_STATE", "/nowhere"),
            ("CONCLAVE_CA_FILE", "/nowhere/ca.pem"),
            ("CONCLAVE_TEST_POSTGRES_URL", "postgres://x/y"),
        ],
    );
    assert!(migrated.status.success(), "{migrated:?}");
}

#[test]
fn an_unreadable_file_is_one_line_naming_file_key_and_what_is_allowed() {
    let directory = tempfile::tempdir().unwrap();
    let file = directory.path().join("conclave.toml");
    std::fs::write(&file, "[limits]\nmax_streams_per_devise = 3\n").unwrap();
    let file_name = file.to_str().unwrap();
    let refused = homeserver(&["--config", file_name, "migrate"], &[]);
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    let stderr = text(&refused.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{file_name}: limits.max_streams_per_devise: `max_streams_per_devise` is not a configuration key in [limits]"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("the keys there are "), "{stderr}");
    assert!(!stderr.contains("unknown field"), "serde's words: {stderr}");
}

#[test]
fn a_port_in_use_is_reported_once() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_address = taken.local_addr().unwrap().to_string();
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let directory = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        directory.path().join("conclave.sqlite").display()
    );
    let refused = homeserver(
        &["run"],
        &[
            ("CONCLAVE_DATABASE__URL", url.as_str()),
            ("CONCLAVE_CLIENT_API__LISTEN", taken_address.as_str()),
            ("CONCLAVE_HTTP__LISTEN", free.as_str()),
        ],
    );
    assert!(!refused.status.success(), "{refused:?}");
    let stderr = text(&refused.stderr);
    let mentions: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains(&taken_address))
        .collect();
    // Human logs on stderr: the ERROR event is the one line (no plain line
    // repeating it).
    assert_eq!(mentions.len(), 1, "{stderr}");
    assert!(mentions[0].contains(" ERROR "), "{stderr}");
    assert!(
        mentions[0].ends_with(&format!(
            "serving failed error=cannot listen on {taken_address} (client_api.listen): the address is in use (another homeserver, or another program, listens there)"
        )),
        "{stderr}"
    );
    drop(taken);
}

/// Serving that fails once logging is set up (here: the database cannot be
/// opened) is logged as one JSON ERROR event with the error's whole chain, for
/// log collectors that read only the log, and said once more in a plain line,
/// for a person reading JSON logs on a terminal.
#[test]
fn a_fatal_error_while_serving_is_one_json_log_event() {
    // A file where the database's directory should be: it cannot be created.
    let directory = tempfile::tempdir().unwrap();
    let not_a_directory = directory.path().join("file");
    std::fs::write(&not_a_directory, "").unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        not_a_directory.join("conclave.sqlite").display()
    );
    let refused = homeserver(
        &["run"],
        &[
            ("CONCLAVE_DATABASE__URL", url.as_str()),
            ("CONCLAVE_CLIENT_API__LISTEN", "127.0.0.1:0"),
            ("CONCLAVE_HTTP__LISTEN", "127.0.0.1:0"),
            ("CONCLAVE_LOG__FORMAT", "json"),
        ],
    );
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    let stderr = text(&refused.stderr);
    let errors: Vec<serde_json::Value> = stderr
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|event| event["level"] == "ERROR")
        .collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert_eq!(errors[0]["fields"]["message"], "serving failed", "{stderr}");
    let chain = errors[0]["fields"]["error"].as_str().unwrap();
    assert!(
        chain.starts_with("homeserver failed: database error: "),
        "{stderr}"
    );
    let cause = format!(
        "cannot create the database directory {}",
        not_a_directory.display()
    );
    assert_eq!(chain.matches(&cause).count(), 1, "each cause once: {chain}");
    let plain: Vec<&str> = stderr
        .lines()
        .filter(|line| line.starts_with("conclave-homeserver: "))
        .collect();
    assert_eq!(plain, [format!("conclave-homeserver: {chain}")], "{stderr}");
}
