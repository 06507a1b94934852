//! A chat through the real `conclave` CLI while the homeserver's process is
//! stopped and started again: Alice types lines before, during and after the
//! outage (those of the outage wait, in her library or her chat, and go out in
//! order once the server is back); Bob's `listen` says it lost the connection,
//! reconnects with back-off, resumes from its cursors and prints every message
//! once, in order.

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use conclave_test_support::cluster::client_binary;
use conclave_test_support::{ClusterOptions, TestCluster, within};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

/// Longest one step may take: a command, a message to arrive, a reconnection
/// (the back-off reaches 5 s; the machine is shared).
const STEP: Duration = Duration::from_secs(120);

const PASSWORD: &str = "correct horse battery staple";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_across_a_homeserver_restart_loses_and_doubles_nothing() {
    let cluster = TestCluster::start(ClusterOptions::replicas(1)).await;
    let url = cluster.client_url(0);
    let home = tempfile::tempdir().unwrap();
    let alice = home.path().join("alice");
    let bob = home.path().join("bob");
    for (state, user) in [(&alice, "alice"), (&bob, "bob")] {
        run(home.path(), state, &["--server", &url, "register", user]).await;
    }
    run(home.path(), &alice, &["group", "create", "team"]).await;
    run(
        home.path(),
        &alice,
        &["group", "invite", "team", "bob@localhost"],
    )
    .await;

    let mut listener = Running::start(
        home.path(),
        &bob,
        &["listen", "team", "--count", "9", "--json"],
    );
    let mut chat = Running::start(home.path(), &alice, &["chat", "team"]);
    let mut received = Vec::new();

    for text in ["before 1", "before 2", "before 3"] {
        chat.type_line(text).await;
    }
    while received.len() < 3 {
        received.push(listener.next_message().await);
    }

    cluster.terminate(0).await;
    listener
        .wait_for_stderr("bob's listener noticing the outage", |line| {
            line.contains(" lost (") && line.contains("; reconnecting in ")
        })
        .await;
    for text in ["during 1", "during 2", "during 3"] {
        chat.type_line(text).await;
    }
    chat.wait_for_stderr("alice's chat saying her lines wait", |line| {
        line.starts_with("not sent yet (")
    })
    .await;

    cluster.restart(0).await;
    listener
        .wait_for_stderr("bob's listener reconnecting", |line| {
            line.starts_with("reconnected to ")
        })
        .await;
    for text in ["after 1", "after 2", "after 3"] {
        chat.type_line(text).await;
    }
    while received.len() < 9 {
        received.push(listener.next_message().await);
    }
    assert_eq!(
        received,
        [
            "before 1", "before 2", "before 3", "during 1", "during 2", "during 3", "after 1",
            "after 2", "after 3"
        ]
    );
    assert!(listener.finish().await.success(), "bob's listen failed");
    chat.wait_for_stderr("alice's chat saying the waiting lines went out", |line| {
        line == "the waiting messages are sent"
    })
    .await;

    // Nothing more is due to Bob: the next message he gets is the next one
    // sent, not a repeat of one before.
    chat.type_line("last").await;
    let mut listener = Running::start(
        home.path(),
        &bob,
        &["listen", "team", "--count", "1", "--json"],
    );
    assert_eq!(listener.next_message().await, "last");
    assert!(listener.finish().await.success(), "bob's listen failed");
    assert!(chat.finish().await.success(), "alice's chat failed");
}

/// `conclave --state STATE ARGS` in an environment with nothing of the
/// test's Conclave settings.
fn command(home: &Path, state: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(client_binary());
    command
        .arg("--state")
        .arg(state)
        .args(args)
        .env_remove("CONCLAVE_SERVER")
        .env_remove("CONCLAVE_STATE")
        .env_remove("CONCLAVE_CA_FILE")
        .env_remove("RUST_LOG")
        .env("CONCLAVE_PASSWORD", PASSWORD)
        .env("HOME", home)
        .kill_on_drop(true);
    command
}

/// Runs a command to its end; it must succeed.
async fn run(home: &Path, state: &Path, args: &[&str]) {
    let output = within(
        STEP,
        "a conclave command",
        command(home, state, args).output(),
    )
    .await;
    let output = output.unwrap();
    assert!(
        output.status.success(),
        "conclave {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A long-running command (listen, chat), its output read line by line as it
/// comes.
struct Running {
    what: String,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: mpsc::UnboundedReceiver<String>,
    stderr: mpsc::UnboundedReceiver<String>,
    /// Everything read from stderr so far, for failure messages.
    stderr_seen: Vec<String>,
}

impl Running {
    fn start(home: &Path, state: &Path, args: &[&str]) -> Running {
        let mut child = command(home, state, args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = lines_of(child.stdout.take().unwrap());
        let stderr = lines_of(child.stderr.take().unwrap());
        Running {
            what: format!("conclave {args:?} ({})", state.display()),
            stdin: child.stdin.take(),
            child,
            stdout,
            stderr,
            stderr_seen: Vec::new(),
        }
    }

    async fn type_line(&mut self, text: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        stdin
            .write_all(format!("{text}\n").as_bytes())
            .await
            .unwrap();
        stdin.flush().await.unwrap();
    }

    /// The body of the next message printed (as a JSON line), past
    /// membership lines.
    async fn next_message(&mut self) -> String {
        let what = format!("a message from {}", self.what);
        loop {
            let line = within(STEP, &what, self.stdout.recv()).await;
            let line = line.unwrap_or_else(|| {
                panic!(
                    "{} ended its output; its stderr:\n{}",
                    self.what,
                    self.stderr_seen.join("\n")
                )
            });
            let value: serde_json::Value = serde_json::from_str(&line).unwrap();
            if value["event"] == "message" {
                return value["body"].as_str().unwrap().to_owned();
            }
        }
    }

    /// Reads stderr until a line matches.
    async fn wait_for_stderr(&mut self, what: &str, matches: impl Fn(&str) -> bool) {
        let found = within(STEP, what, async {
            while let Some(line) = self.stderr.recv().await {
                let hit = matches(&line);
                self.stderr_seen.push(line);
                if hit {
                    return true;
                }
            }
            false
        })
        .await;
        assert!(
            found,
            "{what}: {} ended first; its stderr:\n{}",
            self.what,
            self.stderr_seen.join("\n")
        );
    }

    /// Closes stdin and waits for the command to exit.
    async fn finish(mut self) -> ExitStatus {
        drop(self.stdin.take());
        let what = format!("{} to exit", self.what);
        within(STEP, &what, self.child.wait()).await.unwrap()
    }
}

/// The lines of a pipe, as they come.
fn lines_of(
    pipe: impl tokio::io::AsyncRead + Unpin + Send + 'static,
) -> mpsc::UnboundedReceiver<String> {
    let (sender, receiver) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut lines = BufReader::new(pipe).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    receiver
}
