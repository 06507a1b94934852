//! A homeserver of several replicas (two in-process servers on one PostgreSQL
//! database): a listening client whose replica shuts down gracefully goes on
//! through the other, and a sender whose replica is gone sends through the
//! other, with nothing lost or shown twice.

use std::future::Future;
use std::sync::{Arc, Mutex};

use conclave_client::{ConnectionNotice, GroupId};
use conclave_test_support::{AdjustableClock, DatabaseChoice, TestHomeserver};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader, Lines};
use tokio::sync::mpsc;

use crate::support::{
    GROUP_STOCK, TestDevice, register, server_url, start_server, take_all_unread, within,
};

fn user(id: &str) -> conclave_core::ids::UserId {
    id.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_goes_on_through_another_replica_when_its_own_stops() {
    let first = start_server(DatabaseChoice::Postgres).await;
    let second = first.start_replica(|_| {}).await;
    let endpoints = vec![server_url(&first), server_url(&second)];
    let (alice, _) = register(&first, "alice", GROUP_STOCK).await;
    let (bob, _) = register(&first, "bob", GROUP_STOCK).await;
    let alice = alice.with_server_endpoints(endpoints.clone());
    let bob = bob.with_server_endpoints(endpoints.clone());
    let group_id = alice
        .client
        .create_group("replicas")
        .await
        .unwrap()
        .group_id;
    alice
        .client
        .invite(&group_id, &[user("bob@localhost")])
        .await
        .unwrap();

    let notices = Arc::new(Mutex::new(Vec::new()));
    let recorded = notices.clone();
    let mut listener = bob
        .client
        .listen(None)
        .on_connection_change(move |notice| recorded.lock().unwrap().push(notice));
    let (received_sender, mut received) = mpsc::unbounded_channel();
    let bob_side = async {
        let mut texts = Vec::new();
        for _ in 0..6 {
            let message = listener.next().await.unwrap();
            texts.push(message.body.text().unwrap().to_owned());
            received_sender.send(()).unwrap();
        }
        texts
    };
    let alice_side = async {
        for text in ["one", "two", "three"] {
            alice.client.send(&group_id, text).await.unwrap();
        }
        for _ in 0..3 {
            received.recv().await.unwrap();
        }
        // Bob streams from the first replica, which shuts down: his stream
        // ends with UNAVAILABLE and he moves to the second.
        let database = first.stop().await;
        // Alice's client still uses the first one's address: its sends move
        // to the second too.
        for text in ["four", "five", "six"] {
            alice.client.send(&group_id, text).await.unwrap();
        }
        database
    };
    let (texts, _database) = within(90, "six messages across a replica's shutdown", async {
        tokio::join!(bob_side, alice_side)
    })
    .await;
    assert_eq!(texts, ["one", "two", "three", "four", "five", "six"]);
    drop(listener);
    assert!(take_all_unread(&bob).is_empty());
    let report = bob.client.receive().await.unwrap();
    assert_eq!(report.new_messages, 0, "{report:?}");

    assert_eq!(
        bob.client.server_endpoint().unwrap(),
        Some(endpoints[1].clone())
    );
    let notices = notices.lock().unwrap().clone();
    assert!(
        matches!(
            notices.first(),
            Some(ConnectionNotice::Lost { server, next, .. })
                if *server == endpoints[0] && *next == endpoints[1]
        ),
        "{notices:?}"
    );
    assert_eq!(
        notices.last(),
        Some(&ConnectionNotice::Restored {
            server: endpoints[1].clone()
        }),
        "{notices:?}"
    );
}

/// Two replicas, Alice, Bob and Carol in a group; Alice's client knows both
/// addresses.
async fn two_replicas_and_a_group() -> (
    conclave_test_support::TestHomeserver,
    conclave_test_support::TestHomeserver,
    [TestDevice; 3],
    conclave_client::GroupId,
) {
    let first = start_server(DatabaseChoice::Postgres).await;
    let second = first.start_replica(|_| {}).await;
    let (alice, _) = register(&first, "alice", GROUP_STOCK).await;
    let (bob, _) = register(&first, "bob", GROUP_STOCK).await;
    let (carol, _) = register(&first, "carol", GROUP_STOCK).await;
    let alice = alice.with_server_endpoints(vec![server_url(&first), server_url(&second)]);
    let group_id = alice
        .client
        .create_group("replicas")
        .await
        .unwrap()
        .group_id;
    alice
        .client
        .invite(&group_id, &[user("bob@localhost"), user("carol@localhost")])
        .await
        .unwrap();
    for device in [&bob, &carol] {
        device.client.receive().await.unwrap();
        // Their joining is shown now, so listeners see only messages after.
        let joined = device.client.take_unread_event(None).unwrap();
        assert!(
            matches!(joined, Some(conclave_client::TimelineEvent::Membership(_))),
            "{joined:?}"
        );
    }
    (first, second, [alice, bob, carol], group_id)
}

/// `conclave` on `state_dir`, with both replicas' addresses, as a child whose
/// output the test reads as it comes.
fn spawn_conclave(
    state_dir: &std::path::Path,
    servers: &str,
    args: &[&str],
) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_conclave"))
        .arg("--state")
        .arg(state_dir)
        .args(["--server", servers])
        .args(args)
        .env_remove("CONCLAVE_SERVER")
        .env_remove("CONCLAVE_STATE")
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// `conclave chat` (Bob) and `conclave listen` (Carol) go on when the replica
/// they use shuts down, and say so on stderr.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conclave_listen_and_chat_survive_a_replica_going_away() {
    use tokio::io::AsyncReadExt as _;
    let (first, second, [alice, bob, carol], group_id) = two_replicas_and_a_group().await;
    let servers = format!("{},{}", server_url(&first), server_url(&second));
    alice.client.send(&group_id, "one").await.unwrap();

    let mut chat = spawn_conclave(bob.state_dir.path(), &servers, &["chat", "replicas"]);
    let mut listen = spawn_conclave(
        carol.state_dir.path(),
        &servers,
        &["listen", "--count", "4", "--timeout", "60"],
    );
    let mut chat_lines = BufReader::new(chat.stdout.take().unwrap()).lines();
    let mut listen_lines = BufReader::new(listen.stdout.take().unwrap()).lines();
    let mut chat_input = chat.stdin.take().unwrap();
    let shown = |line: Option<String>| line.expect("a line before the end of output");
    let transcript = within(90, "chat and listen across a replica's shutdown", async {
        let mut chat_shown = vec![shown(chat_lines.next_line().await.unwrap())];
        let mut listen_shown = vec![shown(listen_lines.next_line().await.unwrap())];
        // Both are past their first catch-up; the first replica goes away.
        let database = first.stop().await;
        alice.client.send(&group_id, "two").await.unwrap();
        chat_shown.push(shown(chat_lines.next_line().await.unwrap()));
        listen_shown.push(shown(listen_lines.next_line().await.unwrap()));
        // Bob types in the chat: it is sent through the second replica.
        chat_input.write_all(b"from bob\n").await.unwrap();
        let mut alice_listener = alice.client.listen(Some(group_id.clone()));
        let answer = alice_listener.next().await.unwrap();
        assert_eq!(answer.body.text(), Some("from bob"));
        listen_shown.push(shown(listen_lines.next_line().await.unwrap()));
        alice.client.send(&group_id, "three").await.unwrap();
        chat_shown.push(shown(chat_lines.next_line().await.unwrap()));
        listen_shown.push(shown(listen_lines.next_line().await.unwrap()));
        drop(chat_input);
        (chat_shown, listen_shown, database)
    })
    .await;
    let (chat_shown, listen_shown, _database) = transcript;
    let texts = |shown: &[String]| -> Vec<String> {
        shown
            .iter()
            .map(|line| line.rsplit(": ").next().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        texts(&chat_shown),
        ["one", "two", "three"],
        "{chat_shown:?}"
    );
    assert_eq!(
        texts(&listen_shown),
        ["one", "two", "from bob", "three"],
        "{listen_shown:?}"
    );
    for (name, child) in [("chat", chat), ("listen", listen)] {
        let mut child = child;
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .await
            .unwrap();
        let status = within(30, "the command ending", child.wait())
            .await
            .unwrap();
        assert!(status.success(), "{name}: {stderr}");
        assert!(
            stderr.contains(&format!("reconnecting to {}", server_url(&second)))
                && stderr.contains(&format!("reconnected to {}", server_url(&second))),
            "{name}: {stderr}"
        );
    }
}

/// Reads `lines` until one matches, within 90 seconds; every line read is
/// added to `seen` (for failure messages and later checks).
async fn read_until(
    lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStderr>>,
    seen: &mut Vec<String>,
    what: &str,
    matches: impl Fn(&str) -> bool,
) {
    let found = within(90, what, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let hit = matches(&line);
            seen.push(line);
            if hit {
                return true;
            }
        }
        false
    })
    .await;
    assert!(found, "{what}: the output ended first: {seen:?}");
}

/// A running `conclave chat`, its input and what it wrote to stderr.
struct Chat {
    process: tokio::process::Child,
    /// The chat's standard input: `None` once closed, which ends the chat.
    input: Option<tokio::process::ChildStdin>,
    errors: Lines<BufReader<tokio::process::ChildStderr>>,
    /// Every line of the chat's stderr read so far.
    seen: Vec<String>,
}

impl Chat {
    /// Starts `conclave chat GROUP` on `state_dir` through `server`; returns
    /// once the chat says it is chatting.
    async fn start(state_dir: &std::path::Path, server: &str, group: &str) -> Chat {
        let mut process = spawn_conclave(state_dir, server, &["chat", group]);
        let mut chat = Chat {
            input: process.stdin.take(),
            errors: BufReader::new(process.stderr.take().unwrap()).lines(),
            process,
            seen: Vec::new(),
        };
        chat.read_until("the chat starting", |line| {
            line.starts_with(&format!("chatting in {group}"))
        })
        .await;
        chat
    }

    /// Types `line` into the chat.
    async fn type_line(&mut self, line: &str) {
        let input = self.input.as_mut().expect("the chat's input is open");
        input
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
    }

    /// Reads stderr until a line matches (see [`read_until`]).
    async fn read_until(&mut self, what: &str, matches: impl Fn(&str) -> bool) {
        read_until(&mut self.errors, &mut self.seen, what, matches).await;
    }

    /// Waits for the chat to end, then reads the rest of its stderr.
    async fn wait(&mut self) -> std::process::ExitStatus {
        let status = within(90, "the chat ending", self.process.wait())
            .await
            .unwrap();
        while let Some(line) = self.errors.next_line().await.unwrap() {
            self.seen.push(line);
        }
        status
    }
}

/// Alice, on the first of two replicas, and Bob, on the second, in a group
/// "kept"; Bob's `conclave chat` in it runs through the second replica.
struct KeptChat {
    /// Kept to the end: Alice's replica.
    _first: TestHomeserver,
    /// `None` while [`KeptChat::stop_and_keep_a_line`] has it stopped.
    second: Option<TestHomeserver>,
    alice: TestDevice,
    /// Kept to the end: the chat runs on Bob's state directory.
    _bob: TestDevice,
    group_id: GroupId,
    chat: Chat,
}

impl KeptChat {
    /// Starts the replicas, the group and the chat; returns once the chat
    /// says it is chatting.
    async fn start() -> KeptChat {
        let first = start_server(DatabaseChoice::Postgres).await;
        let second = first.start_replica(|_| {}).await;
        let (alice, _) = register(&first, "alice", GROUP_STOCK).await;
        let (bob, _) = register(&second, "bob", GROUP_STOCK).await;
        let group_id = alice.client.create_group("kept").await.unwrap().group_id;
        alice
            .client
            .invite(&group_id, &[user("bob@localhost")])
            .await
            .unwrap();
        bob.client.receive().await.unwrap();
        let chat = Chat::start(bob.state_dir.path(), &second.client_url(), "kept").await;
        KeptChat {
            _first: first,
            second: Some(second),
            alice,
            _bob: bob,
            group_id,
            chat,
        }
    }

    /// Stops Bob's replica, types `line` and waits until the chat says it
    /// keeps the line. Awaiting what it returns starts the replica again, on
    /// the same config and database.
    async fn stop_and_keep_a_line(&mut self, line: &str) -> StoppedReplica {
        let second = self.second.take().expect("the second replica runs");
        let config = second.config().clone();
        let database = second.stop().await;
        self.chat.type_line(line).await;
        self.chat
            .read_until("the chat keeping the line", |line| {
                line.starts_with("not sent yet (")
            })
            .await;
        Box::pin(TestHomeserver::start_on(
            config,
            database,
            Arc::new(AdjustableClock::default()),
        ))
    }

    /// Alice removes Bob through the first replica while his is away; then
    /// his replica starts again.
    async fn remove_bob_and_restart(&mut self, restart: StoppedReplica) {
        self.alice
            .client
            .remove(&self.group_id, &user("bob@localhost"))
            .await
            .unwrap();
        self.second = Some(restart.await);
    }
}

/// A replica stopped by [`KeptChat::stop_and_keep_a_line`]: awaiting it
/// starts the replica again.
type StoppedReplica = std::pin::Pin<Box<dyn Future<Output = TestHomeserver>>>;

/// Bob's `conclave chat` keeps a line typed while his replica is away; before
/// it is back, Alice removes him from the group through the other replica. The
/// kept line is refused when it goes out: the chat says so, with its text, and
/// does not claim the waiting lines were sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conclave_chat_tells_of_a_kept_line_that_is_refused() {
    let mut kept_chat = KeptChat::start().await;
    let mut alice_listener = kept_chat
        .alice
        .client
        .listen(Some(kept_chat.group_id.clone()));
    kept_chat.chat.type_line("before").await;
    let before = within(90, "alice receiving bob's line", alice_listener.next())
        .await
        .unwrap();
    assert_eq!(before.body.text(), Some("before"));
    drop(alice_listener);

    let restart = kept_chat.stop_and_keep_a_line("during").await;
    kept_chat.remove_bob_and_restart(restart).await;
    kept_chat
        .chat
        .read_until("the chat telling of the refusal", |line| {
            line.starts_with("not sent: during: ")
        })
        .await;
    kept_chat.chat.input = None;
    let status = kept_chat.chat.wait().await;
    let seen = &kept_chat.chat.seen;
    assert!(status.success(), "{seen:?}");
    assert!(
        !seen
            .iter()
            .any(|line| line.contains("waiting messages are sent")),
        "{seen:?}"
    );

    let alice = &kept_chat.alice;
    alice.client.receive().await.unwrap();
    let texts: Vec<String> = take_all_unread(alice)
        .into_iter()
        .filter_map(|message| message.body.text().map(str::to_owned))
        .collect();
    assert!(!texts.contains(&"during".to_owned()), "{texts:?}");
}

/// As above, but Bob types a second line while the first waits: it cannot be
/// stored before the first goes out. When the chat ends on the refusal (Bob is
/// no longer a member, which waiting does not cure), it names both lines: the
/// kept one as refused, the other as not sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conclave_chat_ending_on_an_error_names_the_lines_not_sent() {
    let mut kept_chat = KeptChat::start().await;

    let restart = kept_chat.stop_and_keep_a_line("first").await;
    kept_chat.chat.type_line("second").await;
    kept_chat.remove_bob_and_restart(restart).await;
    let status = kept_chat.chat.wait().await;
    let seen = &kept_chat.chat.seen;
    assert!(!status.success(), "{seen:?}");
    assert!(
        seen.iter()
            .any(|line| line.starts_with("not sent: first: ")),
        "{seen:?}"
    );
    assert!(
        seen.iter().any(|line| line == "not sent: second"),
        "{seen:?}"
    );
}
