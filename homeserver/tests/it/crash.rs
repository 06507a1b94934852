//! A crash under load: the real `conclave-homeserver` binary is killed with SIGKILL
//! while devices send, and restarted on the same database. Devices retry what was
//! not acknowledged, under the same idempotency keys; afterwards every acknowledged
//! message is in the log exactly once at the sequence number it was acknowledged
//! with, the log is dense, and nothing is in it twice.

use crate::groups_harness::{Client, EVENT_TIMEOUT, Sender, form_group};
use conclave_test_support::{DatabaseChoice, TestDatabase};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::Notify;
use tonic::transport::Channel;

on_both_databases!(acknowledged_messages_survive_a_crash_and_retries_land_once);

/// Devices sending at once, one task each.
const SENDERS: usize = 3;
const MESSAGES_PER_SENDER: usize = 150;
/// The server is killed once this many sends were acknowledged: about a fifth of
/// the burst, so sends are in flight when it dies.
const KILL_AFTER_ACKNOWLEDGED: usize = 100;

/// The homeserver binary, running as a child process.
struct Homeserver {
    child: Child,
    client_address: SocketAddr,
}

/// A loopback address nobody listens on: bound by the OS, then released for the
/// child to bind.
fn free_address() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
    listener.local_addr().expect("a bound address")
}

impl Homeserver {
    /// Starts the binary on `database_url`, configured by environment variables
    /// only, and returns once it has bound its ports and migrated the database.
    async fn start(database_url: &str) -> Homeserver {
        let client_address = free_address();
        let mut child = Command::new(env!("CARGO_BIN_EXE_conclave-homeserver"))
            .env_clear()
            .env("CONCLAVE_DATABASE__URL", database_url)
            .env("CONCLAVE_CLIENT_API__LISTEN", client_address.to_string())
            .env("CONCLAVE_HTTP__LISTEN", free_address().to_string())
            .env("CONCLAVE_LOG__FILTER", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("starting conclave-homeserver");
        let stderr = child.stderr.take().expect("stderr is piped");
        let mut lines = BufReader::new(stderr).lines();
        // The server logs this after it bound its ports and migrated the database,
        // just before it serves: connections made from then on are answered.
        let mut log = Vec::new();
        let ready = tokio::time::timeout(EVENT_TIMEOUT, async {
            while let Some(line) = lines.next_line().await.expect("reading the log") {
                let started = line.contains("homeserver started");
                log.push(line);
                if started {
                    return true;
                }
            }
            false
        })
        .await;
        assert!(
            matches!(ready, Ok(true)),
            "the homeserver did not start; its log:\n{}",
            log.join("\n")
        );
        // Keep reading, so the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Homeserver {
            child,
            client_address,
        }
    }

    async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.client_address))
            .expect("a valid URI")
            .connect()
            .await
            .expect("connecting to the homeserver")
    }

    /// SIGKILL: no shutdown, no flushing, nothing the process could do.
    async fn kill(mut self) {
        self.child.kill().await.expect("killing the homeserver");
    }
}

/// One device's messages, made in advance: (idempotency key, MLSMessage).
type Messages = Vec<(Vec<u8>, Vec<u8>)>;

/// A send the server acknowledged: (sender, message index, seq).
type Acknowledged = (usize, usize, u64);

/// Sends `messages[from..]` in order, recording each acknowledgement, until the
/// first failure. Returns the index of the first message not acknowledged.
async fn send_in_order(
    sender: Sender,
    number: usize,
    messages: Arc<Messages>,
    from: usize,
    acknowledged: Arc<Mutex<Vec<Acknowledged>>>,
    on_acknowledged: impl Fn() + Send,
) -> usize {
    for (index, (key, message)) in messages.iter().enumerate().skip(from) {
        match sender.send(key.clone(), message.clone()).await {
            Ok(response) => {
                acknowledged
                    .lock()
                    .unwrap()
                    .push((number, index, response.seq));
                on_acknowledged();
            }
            Err(_) => return index,
        }
    }
    messages.len()
}

async fn acknowledged_messages_survive_a_crash_and_retries_land_once(database: DatabaseChoice) {
    let database = TestDatabase::create(database).await;
    let server = Homeserver::start(database.url()).await;
    let channel = server.channel().await;
    let mut alice = Client::register(&channel, "alice").await;
    let mut bob = Client::register(&channel, "bob").await;
    let mut carol = Client::register(&channel, "carol").await;
    form_group(&mut alice, &mut [&mut bob, &mut carol]).await;

    // Each device encrypts its messages in advance, in the order it sends them.
    let mut clients = [alice, bob, carol];
    let messages: Vec<Arc<Messages>> = clients
        .iter_mut()
        .map(|client| {
            let messages = (0..MESSAGES_PER_SENDER)
                .map(|index| {
                    let text = format!("{} {index}", client.device.user_id);
                    (client.new_key(), client.encrypt(text.as_bytes()))
                })
                .collect();
            Arc::new(messages)
        })
        .collect();

    // The burst, killed part-way.
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let threshold = Arc::new(Notify::new());
    let tasks: Vec<_> = (0..SENDERS)
        .map(|number| {
            let (count, threshold) = (count.clone(), threshold.clone());
            tokio::spawn(send_in_order(
                clients[number].sender(),
                number,
                messages[number].clone(),
                0,
                acknowledged.clone(),
                move || {
                    if count.fetch_add(1, Ordering::SeqCst) + 1 == KILL_AFTER_ACKNOWLEDGED {
                        threshold.notify_one();
                    }
                },
            ))
        })
        .collect();
    tokio::time::timeout(EVENT_TIMEOUT, threshold.notified())
        .await
        .expect("the burst reached the kill threshold");
    server.kill().await;
    let mut resume_from = Vec::new();
    for task in tasks {
        resume_from.push(task.await.expect("a sending task"));
    }
    let before_crash = acknowledged.lock().unwrap().clone();
    assert!(
        before_crash.len() < SENDERS * MESSAGES_PER_SENDER,
        "the server was killed mid-burst"
    );

    // Restarted on the same database, the devices retry with the same keys.
    let server = Homeserver::start(database.url()).await;
    let channel = server.channel().await;
    for client in &mut clients {
        client.reconnect(&channel);
    }
    let stored_before_crash = clients[0].summary().await.last_seq;
    let retries: Vec<_> = (0..SENDERS)
        .map(|number| {
            tokio::spawn(send_in_order(
                clients[number].sender(),
                number,
                messages[number].clone(),
                resume_from[number],
                acknowledged.clone(),
                || {},
            ))
        })
        .collect();
    for task in retries {
        assert_eq!(
            task.await.expect("a retrying task"),
            MESSAGES_PER_SENDER,
            "every retry is acknowledged"
        );
    }
    // Retries that return a seq stored before the crash are sends whose answer
    // the crash lost; how many there are depends on timing, so it is reported.
    let lost_answers = acknowledged.lock().unwrap()[before_crash.len()..]
        .iter()
        .filter(|&&(_, _, seq)| seq <= stored_before_crash)
        .count();
    eprintln!(
        "{} sends acknowledged before the crash, {} stored, {lost_answers} of them with the answer lost",
        before_crash.len(),
        stored_before_crash - 1
    );
    // A retry of a message acknowledged before the crash returns its seq again.
    for &(number, index, seq) in &before_crash {
        let (key, message) = &messages[number][index];
        let sender = clients[number].sender();
        let response = sender.send(key.clone(), message.clone()).await;
        assert_eq!(response.expect("the retry is acknowledged").seq, seq);
    }

    // Alice reads the whole log (decrypting the others' messages, which only
    // works if each sender's messages are in the order they were made).
    clients[0].sync().await;
    let alice = &clients[0];
    let total = 1 + SENDERS * MESSAGES_PER_SENDER;
    let seqs: Vec<u64> = alice.log.iter().map(|event| event.seq).collect();
    let dense: Vec<u64> = (1..=total as u64).collect();
    assert_eq!(seqs, dense, "the log is dense, each event once");
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert_eq!(acknowledged.len(), SENDERS * MESSAGES_PER_SENDER);
    let mut sent = HashSet::new();
    for (number, index, seq) in acknowledged {
        assert!(
            sent.insert((number, index)),
            "message {index} of sender {number} acknowledged twice"
        );
        let event = &alice.log[usize::try_from(seq).unwrap() - 1];
        assert_eq!(event.seq, seq);
        assert!(
            event.message == messages[number][index].1,
            "the event at {seq} is not message {index} of sender {number}"
        );
        assert_eq!(event.sender_device_id, clients[number].device.device_id);
    }
    assert_eq!(alice.received.len(), (SENDERS - 1) * MESSAGES_PER_SENDER);
    server.kill().await;
}
