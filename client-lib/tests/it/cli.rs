//! The `conclave` binary, run as a person or a script would run it.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use conclave_test_support::TestHomeserver;
use serde_json::Value;

use crate::support::PASSWORD;

/// Generous: the first run of a debug binary can be slow on a loaded machine.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs `conclave` with `args`, in an environment holding nothing of the caller's
/// Conclave settings. Uses tokio's process API: the homeserver runs on this
/// test's runtime and must keep serving while the command runs.
async fn conclave(args: &[&str], env: &[(&str, &str)]) -> Output {
    conclave_with_stdin(args, env, None).await
}

/// [`conclave`] with `stdin` as its standard input (else none).
pub(crate) async fn conclave_with_stdin(
    args: &[&str],
    env: &[(&str, &str)],
    stdin: Option<&str>,
) -> Output {
    use tokio::io::AsyncWriteExt;
    let home = tempfile::tempdir().unwrap();
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_conclave"));
    command
        .args(args)
        .env_remove("CONCLAVE_SERVER")
        .env_remove("CONCLAVE_STATE")
        .env_remove("CONCLAVE_PASSWORD")
        .env_remove("RUST_LOG")
        .env("HOME", home.path())
        .stdin(if stdin.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().unwrap();
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(input.as_bytes()).await.unwrap();
        // Dropping the pipe closes it: the command sees the end of its input.
    }
    tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("conclave {args:?} did not finish"))
        .unwrap()
}

/// Runs a command that must succeed, returning its stdout.
pub(crate) async fn succeed(args: &[&str], env: &[(&str, &str)]) -> String {
    let output = conclave(args, env).await;
    assert!(
        output.status.success(),
        "conclave {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Runs a command that must print JSON lines, one object each.
pub(crate) async fn succeed_json_lines(args: &[&str]) -> Vec<Value> {
    let stdout = succeed(args, &[]).await;
    stdout
        .lines()
        .map(|line| {
            let value: Value = serde_json::from_str(line).unwrap();
            assert!(value.is_object(), "{line}");
            value
        })
        .collect()
}

/// Runs a command that must print exactly one JSON object.
/// The lines of `listen --json` split into membership changes and messages.
fn split_membership(lines: Vec<Value>) -> (Vec<Value>, Vec<Value>) {
    lines
        .into_iter()
        .partition(|line| line["event"] == "membership")
}

/// `listen --count COUNT --json` on `state`, waiting up to 60 seconds: every
/// line it printed.
async fn listen_json(state: &str, count: &str) -> Vec<Value> {
    succeed_json_lines(&[
        "--state",
        state,
        "listen",
        "--count",
        count,
        "--timeout",
        "60",
        "--json",
    ])
    .await
}

/// `listen --count 1 --json`: the membership changes before the next message,
/// and that message.
async fn listen_for_one_json(state: &str) -> (Vec<Value>, Vec<Value>) {
    split_membership(listen_json(state, "1").await)
}

/// Registers each `(state directory, username)` at `url`.
async fn register_each(url: &str, users: &[(&str, &str)]) {
    let password = [("CONCLAVE_PASSWORD", PASSWORD)];
    for (state, name) in users {
        succeed(
            &["--server", url, "--state", state, "register", name],
            &password,
        )
        .await;
    }
}

/// The bodies of the messages among the entries of `history --json`.
fn history_bodies(history: &Value) -> Vec<&str> {
    history["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|entry| entry["body"].as_str())
        .collect()
}

pub(crate) async fn succeed_json(args: &[&str], env: &[(&str, &str)]) -> Value {
    let stdout = succeed(args, env).await;
    assert_eq!(stdout.trim_end().lines().count(), 1, "one line: {stdout}");
    let value: Value = serde_json::from_str(&stdout).unwrap();
    assert!(value.is_object(), "{stdout}");
    value
}

/// Runs a command that must fail with one `error:` line and exit code 1.
pub(crate) async fn fail(args: &[&str], env: &[(&str, &str)]) -> String {
    let output = conclave(args, env).await;
    assert_eq!(output.status.code(), Some(1), "conclave {args:?}");
    assert!(output.stdout.is_empty(), "nothing on stdout");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr:?}");
    assert!(stderr.starts_with("error: "), "{stderr:?}");
    stderr.trim_end().to_owned()
}

pub(crate) fn path(dir: &Path) -> &str {
    dir.to_str().unwrap()
}

#[tokio::test]
async fn walkthrough() {
    let server = TestHomeserver::start().await;
    let url = server.client_url();
    let alice_dir = tempfile::tempdir().unwrap();
    let bob_dir = tempfile::tempdir().unwrap();
    let alice = path(alice_dir.path());
    let bob = path(bob_dir.path());
    let password = [("CONCLAVE_PASSWORD", PASSWORD)];

    let registered = succeed(
        &["--server", &url, "--state", alice, "register", "alice"],
        &password,
    )
    .await;
    assert!(
        registered.starts_with("registered alice@localhost as device "),
        "{registered}"
    );
    assert!(
        registered.contains("published 50 key packages"),
        "{registered}"
    );
    succeed(
        &[
            "--server",
            &url,
            "--state",
            bob,
            "register",
            "bob",
            "--device-name",
            "bob's laptop",
        ],
        &password,
    )
    .await;

    // From here on the server comes from the state.
    let published = succeed(&["--state", alice, "keys", "publish", "--count", "5"], &[]).await;
    assert!(
        published.starts_with("published 5 key packages"),
        "{published}"
    );

    let status = succeed_json(&["--state", alice, "keys", "status", "--json"], &[]).await;
    assert_eq!(status["available"], 55);
    assert_eq!(status["has_last_resort"], true);
    assert!(status["earliest_expiry"].is_string(), "{status}");

    let claimed = succeed_json(
        &["--state", alice, "keys", "claim", "bob@localhost", "--json"],
        &[],
    )
    .await;
    assert_eq!(claimed["user_id"], "bob@localhost");
    let packages = claimed["key_packages"].as_array().unwrap();
    assert_eq!(packages.len(), 1, "{claimed}");
    let package = &packages[0];
    let bob_device = package["device_id"].as_str().unwrap().to_owned();
    assert_eq!(
        package["credential_identity"],
        format!("bob@localhost/{bob_device}")
    );
    assert_eq!(package["last_resort"], false);
    assert_eq!(
        package["hash_ref"].as_str().unwrap().len(),
        64,
        "SHA-256, hex"
    );
    let size = package["size"].as_u64().unwrap();
    assert_eq!(
        package["key_package"].as_str().unwrap().len() as u64,
        size * 2
    );

    let whoami = succeed(&["--state", alice, "whoami"], &[]).await;
    assert!(whoami.contains("alice@localhost"), "{whoami}");
    assert!(whoami.contains(&url), "{whoami}");

    let devices = succeed_json(&["--state", alice, "devices", "--json"], &[]).await;
    let devices = devices["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0]["current"], true);
    assert_eq!(devices[0]["key_packages_available"], 55);
    let bob_devices = succeed_json(&["--state", bob, "devices", "--json"], &[]).await;
    assert_eq!(bob_devices["devices"][0]["device_id"], bob_device.as_str());
    assert_eq!(bob_devices["devices"][0]["display_name"], "bob's laptop");

    let logged_out = succeed(&["--state", alice, "logout"], &[]).await;
    assert!(
        logged_out.starts_with("logged out alice@localhost"),
        "{logged_out}"
    );
    let error = fail(&["--state", alice, "whoami"], &[]).await;
    assert_eq!(error, "error: not logged in: register or log in first");

    // Logging in again needs no --server: it was remembered.
    let login = succeed_json(&["--state", alice, "login", "alice", "--json"], &password).await;
    assert_eq!(login["user_id"], "alice@localhost");
    assert_eq!(login["server"], url.as_str());
}

#[tokio::test]
async fn errors_are_one_line_with_exit_code_1() {
    let server = TestHomeserver::start().await;
    let url = server.client_url();
    let state_dir = tempfile::tempdir().unwrap();
    let state = path(state_dir.path());
    let password_dir = tempfile::tempdir().unwrap();
    let password_file = password_dir.path().join("password");
    std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
    let password_file = path(&password_file);

    let error = fail(&["--state", state, "register", "carol"], &[]).await;
    assert_eq!(error, "error: no server known: pass --server URL once");
    let error = fail(&["--state", state, "keys", "status"], &[]).await;
    assert!(error.contains("not logged in"), "{error}");

    let no_password = fail(
        &["--server", &url, "--state", state, "register", "carol"],
        &[],
    )
    .await;
    assert!(no_password.contains("--password-file"), "{no_password}");

    let carol = [
        "--server",
        &url,
        "--state",
        state,
        "register",
        "carol",
        "--password-file",
        password_file,
    ];
    succeed(&carol, &[]).await;
    let error = fail(&carol, &[]).await;
    assert_eq!(
        error,
        "error: already logged in as carol@localhost; log out first"
    );

    // The server's refusal, in one line.
    let other_dir = tempfile::tempdir().unwrap();
    let error = fail(
        &[
            "--server",
            &url,
            "--state",
            path(other_dir.path()),
            "register",
            "carol",
            "--password-file",
            password_file,
        ],
        &[],
    )
    .await;
    assert!(error.starts_with("error: register failed: "), "{error}");
    assert!(error.ends_with("(already exists)"), "{error}");

    let error = fail(
        &["--state", state, "keys", "claim", "nobody@localhost"],
        &[],
    )
    .await;
    assert!(error.contains("(not found)"), "{error}");

    let error = fail(
        &["--server", "http://127.0.0.2:1", "--state", state, "whoami"],
        &[],
    )
    .await;
    assert!(
        error.contains("log out first to use another server"),
        "{error}"
    );
}

#[tokio::test]
async fn usage_errors_exit_with_code_2() {
    let state_dir = tempfile::tempdir().unwrap();
    let state = path(state_dir.path());
    for args in [
        &["--state", state, "frobnicate"][..],
        &["--state", state, "register", "Not A Name"],
        &[
            "--server",
            "http://chat.example.org",
            "--state",
            state,
            "whoami",
        ],
    ] {
        let output = conclave(args, &[]).await;
        assert_eq!(output.status.code(), Some(2), "{args:?}");
    }
}

/// Three people through the CLI: create a group, invite, talk, listen, remove.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_walkthrough() {
    let server = TestHomeserver::start().await;
    let url = server.client_url();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let [alice, bob, carol] = [0, 1, 2].map(|index| path(dirs[index].path()));
    register_each(&url, &[(alice, "alice"), (bob, "bob"), (carol, "carol")]).await;

    let created = succeed_json(
        &["--state", alice, "group", "create", "team", "--json"],
        &[],
    )
    .await;
    assert_eq!(created["name"], "team");
    assert_eq!(created["epoch"], 0);
    assert_eq!(created["member_devices"], 1);
    let group_id = created["group_id"].as_str().unwrap().to_owned();
    assert_eq!(group_id.len(), 32, "16 bytes in hex");

    let invited = succeed_json(
        &[
            "--state",
            alice,
            "group",
            "invite",
            "team",
            "bob@localhost",
            "carol@localhost",
            "--json",
        ],
        &[],
    )
    .await;
    assert_eq!(invited["group_id"], group_id.as_str());
    assert_eq!(invited["added"].as_array().unwrap().len(), 2);
    assert_eq!(invited["epoch"], 1);

    // Bob's next command fetches the invitation first.
    let groups = succeed_json(&["--state", bob, "groups", "--json"], &[]).await;
    let listed = groups["groups"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{groups}");
    assert_eq!(listed[0]["group_id"], group_id.as_str());
    assert_eq!(listed[0]["name"], "team");
    assert_eq!(listed[0]["status"], "active");
    assert_eq!(listed[0]["member_devices"], 3);
    let text = succeed(&["--state", bob, "groups"], &[]).await;
    assert!(text.contains("team") && text.contains("active"), "{text}");

    // A message as an argument, and one from stdin (by the hex id).
    let sent = succeed_json(
        &["--state", alice, "send", "team", "hello team", "--json"],
        &[],
    )
    .await;
    assert!(sent["seq"].as_u64().unwrap() > 0);
    let output = conclave_with_stdin(
        &["--state", alice, "send", &group_id, "-"],
        &[],
        Some("from stdin\n"),
    )
    .await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    for state in [bob, carol] {
        let lines = listen_json(state, "2").await;
        // First the Welcome that added this device, then the messages.
        let (changes, lines) = split_membership(lines);
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(changes[0]["change"], "joined");
        assert_eq!(changes[0]["this_device"], true);
        assert_eq!(lines.len(), 2);
        for (line, body) in lines.iter().zip(["hello team", "from stdin"]) {
            assert_eq!(line["group_id"], group_id.as_str());
            assert_eq!(line["group"], "team");
            assert_eq!(line["sender"], "alice@localhost");
            assert_eq!(line["type"], "text");
            assert_eq!(line["body"], body);
            assert!(line["server_time"].is_string(), "{line}");
            assert!(line["sent_at"].is_string(), "{line}");
        }
    }

    // A listener that is already waiting when the message is sent.
    let listen = [
        "--state",
        bob,
        "listen",
        "team",
        "--count",
        "1",
        "--timeout",
        "60",
        "--json",
    ];
    let send = ["--state", carol, "send", "team", "hi from carol"];
    let (lines, sent) = tokio::join!(succeed_json_lines(&listen), succeed(&send, &[]));
    assert!(sent.starts_with("sent"), "{sent}");
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["sender"], "carol@localhost");
    assert_eq!(lines[0]["body"], "hi from carol");
    let text = succeed(
        &[
            "--state",
            alice,
            "listen",
            "--count",
            "1",
            "--timeout",
            "60",
        ],
        &[],
    )
    .await;
    assert!(
        text.contains("[team] carol@localhost: hi from carol"),
        "{text}"
    );

    // Chat: each line typed is sent; the end of input ends the chat.
    let output = conclave_with_stdin(
        &["--state", alice, "chat", "team"],
        &[],
        Some("line one\n\nline two\n"),
    )
    .await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines = listen_json(bob, "2").await;
    let bodies: Vec<&str> = lines
        .iter()
        .map(|line| line["body"].as_str().unwrap())
        .collect();
    assert_eq!(bodies, ["line one", "line two"]);

    let removed = succeed_json(
        &[
            "--state",
            alice,
            "group",
            "remove",
            "team",
            "carol@localhost",
            "--json",
        ],
        &[],
    )
    .await;
    let removed_devices = removed["removed"].as_array().unwrap();
    assert_eq!(removed_devices.len(), 1);
    assert!(
        removed_devices[0]
            .as_str()
            .unwrap()
            .starts_with("carol@localhost/"),
        "{removed}"
    );

    let groups = succeed_json(&["--state", carol, "groups", "--json"], &[]).await;
    assert_eq!(groups["groups"][0]["status"], "removed", "{groups}");
    let error = fail(&["--state", carol, "send", "team", "still there?"], &[]).await;
    assert!(error.contains("not a member"), "{error}");

    let members = succeed_json(&["--state", bob, "group", "members", "team", "--json"], &[]).await;
    let users: Vec<&str> = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|member| member["user_id"].as_str().unwrap())
        .collect();
    assert_eq!(users.len(), 2, "{members}");
    assert!(users.contains(&"alice@localhost") && users.contains(&"bob@localhost"));
    assert_eq!(
        members["members"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|member| member["this_device"] == true)
            .count(),
        1
    );

    let rotated = succeed_json(&["--state", bob, "group", "rotate", "team", "--json"], &[]).await;
    assert_eq!(rotated["epoch"], 3);
    succeed(&["--state", bob, "group", "leave", "team"], &[]).await;
    // Alice's client commits Bob's leave proposal as it fetches it.
    let members = succeed_json(
        &["--state", alice, "group", "members", "team", "--json"],
        &[],
    )
    .await;
    assert_eq!(members["members"].as_array().unwrap().len(), 1, "{members}");
    let groups = succeed_json(&["--state", bob, "groups", "--json"], &[]).await;
    assert_eq!(groups["groups"][0]["status"], "removed", "{groups}");

    let error = fail(&["--state", alice, "send", "nonesuch", "hello"], &[]).await;
    assert!(error.contains("no group \"nonesuch\""), "{error}");
}

/// Only `register` and `login` create a state directory; other commands, and
/// enrolments bound to fail for want of a server, leave the disk as it was.
#[tokio::test]
async fn only_enrolment_creates_a_state_directory() {
    let parent = tempfile::tempdir().unwrap();
    let missing = parent.path().join("state");
    let state = path(&missing);
    let error = fail(&["--state", state, "whoami"], &[]).await;
    assert_eq!(
        error,
        format!(
            "error: not logged in: no device state in {state}; run `conclave register` or `conclave login` first"
        )
    );
    for args in [
        &["--state", state, "groups"][..],
        &["--state", state, "keys", "status"],
        &["--state", state, "logout"],
        &["--state", state, "register", "dave"],
        &["--state", state, "login", "dave"],
        // A token may begin with `-`: it is still the option's value.
        &[
            "--state",
            state,
            "register",
            "dave",
            "--registration-token",
            "-Ab",
        ],
    ] {
        fail(args, &[]).await;
        assert!(!missing.exists(), "{args:?} created {state}");
    }

    let server = TestHomeserver::start().await;
    let url = server.client_url();
    succeed(
        &["--server", &url, "--state", state, "register", "dave"],
        &[("CONCLAVE_PASSWORD", PASSWORD)],
    )
    .await;
    assert!(missing.join(conclave_client::STATE_FILE_NAME).is_file());
}

#[test]
fn completions_and_manual_pages_cover_every_subcommand() {
    let binary = Path::new(env!("CARGO_BIN_EXE_conclave"));
    conclave_test_support::command_line::check_completions(binary);
    conclave_test_support::command_line::check_manual(binary, "conclave");
}

/// Membership changes through the CLI: a third and fourth member join, one
/// leaves, one is removed, one logs out; the others' `listen --json` shows
/// each with who did it, next to the messages with their senders' clocks;
/// `groups` counts what is unread; `history` shows it all again from the local
/// state, in a later process; `--no-history` keeps nothing once shown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_changes_history_and_leaving() {
    let server = TestHomeserver::start().await;
    let url = server.client_url();
    let password = [("CONCLAVE_PASSWORD", PASSWORD)];
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let [alice, bob, carol, dave] = [0, 1, 2, 3].map(|index| path(dirs[index].path()));
    register_each(&url, &[(alice, "alice"), (bob, "bob"), (carol, "carol")]).await;
    succeed(
        &[
            "--server",
            &url,
            "--state",
            dave,
            "register",
            "dave",
            "--no-history",
        ],
        &password,
    )
    .await;

    succeed(&["--state", alice, "group", "create", "team"], &[]).await;
    succeed(
        &["--state", alice, "group", "invite", "team", "bob@localhost"],
        &[],
    )
    .await;
    // One commit adds two users.
    succeed(
        &[
            "--state",
            alice,
            "group",
            "invite",
            "team",
            "carol@localhost",
            "dave@localhost",
        ],
        &[],
    )
    .await;
    succeed(&["--state", alice, "send", "team", "hello all"], &[]).await;

    let groups = succeed_json(&["--state", bob, "groups", "--json"], &[]).await;
    assert_eq!(
        groups["groups"][0]["unread"], 4,
        "joined, two joined, a message: {groups}"
    );
    let (changes, messages) = listen_for_one_json(bob).await;
    let described: Vec<(String, String, bool, Value)> = changes
        .iter()
        .map(|change| {
            (
                change["change"].as_str().unwrap().to_owned(),
                change["member"].as_str().unwrap().to_owned(),
                change["this_device"].as_bool().unwrap(),
                change["by"].clone(),
            )
        })
        .collect();
    assert_eq!(
        described,
        [
            ("joined".into(), "bob@localhost".into(), true, Value::Null),
            (
                "joined".into(),
                "carol@localhost".into(),
                false,
                "alice@localhost".into()
            ),
            (
                "joined".into(),
                "dave@localhost".into(),
                false,
                "alice@localhost".into()
            ),
        ],
        "{changes:?}"
    );
    assert_eq!(messages[0]["body"], "hello all");
    assert!(messages[0]["sent_at"].is_string(), "{}", messages[0]);
    let groups = succeed_json(&["--state", bob, "groups", "--json"], &[]).await;
    assert_eq!(groups["groups"][0]["unread"], 0, "{groups}");
    let text = succeed(&["--state", bob, "groups"], &[]).await;
    assert!(text.contains("UNREAD"), "{text}");

    // Dave keeps no history: once shown, nothing of the message stays on disk.
    let (_, messages) = listen_for_one_json(dave).await;
    assert_eq!(messages[0]["body"], "hello all");
    let history = succeed_json(&["--state", dave, "history", "team", "--json"], &[]).await;
    assert_eq!(history["entries"], serde_json::json!([]), "{history}");
    for entry in std::fs::read_dir(dave).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(
            !bytes.windows(9).any(|window| window == b"hello all"),
            "dave's state keeps the message"
        );
    }

    // Carol leaves; alice removes dave (committing carol's leave first).
    let left = succeed(&["--state", carol, "group", "leave", "team"], &[]).await;
    assert!(left.contains("asked to leave team"), "{left}");
    succeed(
        &[
            "--state",
            alice,
            "group",
            "remove",
            "team",
            "dave@localhost",
        ],
        &[],
    )
    .await;
    succeed(&["--state", alice, "send", "team", "after them"], &[]).await;
    let (changes, messages) = listen_for_one_json(bob).await;
    let described: Vec<(&str, &str, &Value)> = changes
        .iter()
        .map(|change| {
            (
                change["change"].as_str().unwrap(),
                change["member"].as_str().unwrap(),
                &change["by"],
            )
        })
        .collect();
    assert_eq!(
        described,
        [
            ("left", "carol@localhost", &Value::from("carol@localhost")),
            ("removed", "dave@localhost", &Value::from("alice@localhost")),
        ],
        "{changes:?}"
    );
    assert_eq!(messages[0]["body"], "after them");
    let groups = succeed_json(&["--state", carol, "groups", "--json"], &[]).await;
    assert_eq!(groups["groups"][0]["status"], "removed", "{groups}");

    // Text lines: the change with who did it, the message with both clocks.
    succeed(&["--state", bob, "send", "team", "bob is off"], &[]).await;
    let logout = succeed_json(&["--state", bob, "logout", "--json"], &[]).await;
    assert_eq!(logout["left_groups"][0]["name"], "team", "{logout}");
    let text = succeed(
        &[
            "--state",
            alice,
            "listen",
            "--count",
            "1",
            "--timeout",
            "60",
        ],
        &[],
    )
    .await;
    assert!(text.contains("(sent "), "{text}");
    assert!(text.contains("bob@localhost: bob is off"), "{text}");
    // Bob's departure: alice's client commits its removal; the change is shown
    // as bob leaving, with his homeserver's reason.
    succeed(&["--state", alice, "groups"], &[]).await;
    let history = succeed(&["--state", alice, "history", "team"], &[]).await;
    let lines: Vec<&str> = history.lines().collect();
    assert!(
        lines
            .last()
            .is_some_and(|line| line.contains("[team] * bob@localhost/")
                && line.ends_with(" left (logged out)")),
        "{history}"
    );
    // Alice's own history, from a later process: her messages, the changes
    // she made (read already) and the others'.
    let history = succeed_json(&["--state", alice, "history", "team", "--json"], &[]).await;
    let entries = history["entries"].as_array().unwrap();
    assert_eq!(
        history_bodies(&history),
        ["hello all", "after them", "bob is off"],
        "{history}"
    );
    assert!(
        entries
            .iter()
            .any(|entry| entry["change"] == "removed" && entry["member"] == "dave@localhost"),
        "{history}"
    );
    // The next older page starts before the oldest entry shown.
    assert_eq!(history["next_before"], entries[0]["seq"], "{history}");
    let seq = entries[entries.len() - 1]["seq"].as_u64().unwrap();
    let page = succeed_json(
        &[
            "--state",
            alice,
            "history",
            "team",
            "--limit",
            "1",
            "--before",
            &seq.to_string(),
            "--json",
        ],
        &[],
    )
    .await;
    let entries = page["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{page}");
    assert!(entries[0]["seq"].as_u64().unwrap() < seq);
    assert_eq!(page["next_before"], entries[0]["seq"], "{page}");
}

/// A post-quantum group from the command line: `--help` names the suites,
/// `--cipher-suite pq` makes one, an invitee joins it in that suite.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_quantum_group() {
    let help = succeed(&["group", "create", "--help"], &[]).await;
    assert!(help.contains("classic") && help.contains("pq"), "{help}");
    let server = TestHomeserver::start().await;
    let url = server.client_url();
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let [alice, bob] = [0, 1].map(|index| path(dirs[index].path()));
    register_each(&url, &[(alice, "alice"), (bob, "bob")]).await;
    let created = succeed_json(
        &[
            "--state",
            alice,
            "group",
            "create",
            "quantum",
            "--cipher-suite",
            "pq",
            "--json",
        ],
        &[],
    )
    .await;
    assert_eq!(created["cipher_suite"], "pq", "{created}");
    succeed(
        &[
            "--state",
            alice,
            "group",
            "invite",
            "quantum",
            "bob@localhost",
        ],
        &[],
    )
    .await;
    let groups = succeed_json(&["--state", bob, "groups", "--json"], &[]).await;
    let listed = groups["groups"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{groups}");
    assert_eq!(listed[0]["cipher_suite"], "pq", "{groups}");
    assert_eq!(listed[0]["member_devices"], 2, "{groups}");
}

/// `send` while the homeserver is away: the message is kept (exit status 75,
/// one stderr line saying so, nothing on stdout), and goes out once, with the
/// sender's next command after the homeserver is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_kept_but_not_sent_exits_with_75() {
    let server = TestHomeserver::start().await;
    let url = server.client_url();
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let [alice, bob] = [0, 1].map(|index| path(dirs[index].path()));
    register_each(&url, &[(alice, "alice"), (bob, "bob")]).await;
    succeed(&["--state", alice, "group", "create", "team"], &[]).await;
    succeed(
        &["--state", alice, "group", "invite", "team", "bob@localhost"],
        &[],
    )
    .await;
    succeed(&["--state", bob, "groups"], &[]).await;

    let config = server.config().clone();
    let database = server.stop().await;
    let output = conclave(&["--state", alice, "send", "team", "while away"], &[]).await;
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(75), "{stderr}");
    assert!(output.stdout.is_empty(), "nothing on stdout");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr:?}");
    assert!(
        stderr.starts_with(&format!(
            "not sent yet: the message to team is kept, because cannot connect to {url}"
        )),
        "why it is not sent: {stderr:?}"
    );
    assert!(stderr.contains("(do not send it again)"), "{stderr:?}");
    // Nothing is kept of a message to a group this device does not know (it
    // may be an invitation not fetched yet): a failure, which names the
    // homeserver's absence rather than the group.
    let unknown = fail(&["--state", alice, "send", "nowhere", "lost"], &[]).await;
    assert!(
        unknown.starts_with(&format!("error: cannot connect to {url}")),
        "{unknown}"
    );

    let _server = TestHomeserver::start_again(config, database).await;
    succeed(&["--state", alice, "send", "team", "after return"], &[]).await;
    let (_, messages) = split_membership(listen_json(bob, "2").await);
    let bodies: Vec<&str> = messages
        .iter()
        .map(|message| message["body"].as_str().unwrap())
        .collect();
    assert_eq!(bodies, ["while away", "after return"]);
    let history = succeed_json(&["--state", bob, "history", "team", "--json"], &[]).await;
    assert_eq!(
        history_bodies(&history),
        ["while away", "after return"],
        "sent once"
    );
}
