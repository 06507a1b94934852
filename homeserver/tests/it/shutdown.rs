//! Graceful shutdown (SIGTERM, Ctrl-C, or a test's shutdown signal): the server
//! stops accepting connections and answers 503 on `/readyz` at once, ends
//! open Subscribe streams with UNAVAILABLE (the status clients treat as
//! "reconnect"), lets a call in progress finish, and returns within
//! `shutdown.deadline_seconds`, cutting short what is still running then.
//!
//! The call in progress (ListGroups) is held by a lock the test takes on the
//! `group_members` table, which it reads (not `devices`: the session cache
//! answers authentication without it, and the resync reads it), which is
//! what PostgreSQL lets a test see: `pg_locks` shows when the call waits there, so the shutdown
//! begins only once the call is inside the server. So these run on PostgreSQL
//! only; SQLite serves a single process, with nothing to hand over.

use crate::groups_harness::{Client, EVENT_TIMEOUT};
use crate::harness::{channel, within_timeout};
use conclave_test_support::{
    DatabaseChoice, TableLock, TestHomeserver, TestOptions, eventually, within,
};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tonic::Code;

/// The shutdown deadline of the first test: far more than the shutdown needs.
const DEADLINE: Duration = Duration::from_secs(20);

/// The status code of `GET /readyz`.
async fn readyz_status(address: SocketAddr) -> String {
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect to the HTTP endpoint");
    let request = "GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("receive");
    let status_line = response.lines().next().unwrap_or_default();
    status_line.split(' ').nth(1).unwrap_or_default().to_owned()
}

async fn start(deadline: Duration) -> TestHomeserver {
    TestHomeserver::start_with(
        TestOptions::on(DatabaseChoice::Postgres)
            .configure(move |config| config.shutdown.deadline_seconds = deadline.as_secs()),
    )
    .await
}

/// Holds a call of `client` in the server (waiting for `lock`): returns the
/// task that made it, once the call waits inside the server.
pub(crate) async fn hold_a_call(
    client: Client,
    lock: &TableLock,
) -> tokio::task::JoinHandle<(Client, Result<usize, tonic::Status>)> {
    let waiting_before = lock.waiters().await;
    let call = tokio::spawn(async move {
        let result = client.try_list_groups().await.map(|groups| groups.len());
        (client, result)
    });
    eventually(EVENT_TIMEOUT, "the call waiting for the lock", || async {
        (lock.waiters().await > waiting_before).then_some(())
    })
    .await;
    call
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_ends_streams_for_reconnection_and_finishes_calls_in_progress() {
    within_timeout(async {
        let server = start(DEADLINE).await;
        let (client_address, http_address) = (server.client_address(), server.http_address());
        let database_url = server.config().database.url.clone();
        let channel = channel(&server).await;
        let alice = Client::register(&channel, "alice").await;
        let mut stream = alice.subscribe().await;

        let lock = TableLock::take(&database_url, "group_members").await;
        let call = hold_a_call(alice, &lock).await;
        let stopped = tokio::spawn(server.stop());

        // The stream ends with the status clients take as "reconnect".
        let status = stream.end().await.expect("the stream ended with a status");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(status.message().contains("shutting down"), "{status:?}");
        // Load balancers are told at once, and no new connection is accepted.
        assert_eq!(readyz_status(http_address).await, "503");
        eventually(EVENT_TIMEOUT, "the client listener closing", || async {
            tokio::net::TcpStream::connect(client_address)
                .await
                .is_err()
                .then_some(())
        })
        .await;
        // The server is still waiting for the call in progress.
        assert!(!stopped.is_finished());

        lock.release().await;
        let (_alice, answer) = call.await.expect("the call's task");
        assert_eq!(answer.expect("the call in progress was answered"), 0);
        within(DEADLINE, "the server stopping", stopped)
            .await
            .expect("the server stopped");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_deadline_the_server_stops_anyway() {
    within_timeout(async {
        let deadline = Duration::from_secs(1);
        let server = start(deadline).await;
        let database_url = server.config().database.url.clone();
        let channel = channel(&server).await;
        let alice = Client::register(&channel, "alice").await;

        let lock = TableLock::take(&database_url, "group_members").await;
        let call = hold_a_call(alice, &lock).await;
        // The call never gets its lock while the server stops: it is cut.
        let database = within(
            EVENT_TIMEOUT,
            "the server stopping at its deadline",
            server.stop(),
        )
        .await;
        assert!(!call.is_finished(), "the call was answered after all");
        lock.release().await;
        drop((call, database));
    })
    .await;
}
