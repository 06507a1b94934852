//! The outbox owner of a federated domain killed with SIGKILL: a.example runs
//! as a cluster of two replicas (processes of the real binary on one
//! PostgreSQL database, with Redis), b.example as one homeserver in this
//! process. Of a.example's replicas, the one holding the lease on the outbox
//! to b.example sends to it, as `conclave-homeserver federation status` shows.
//! alice, on the other replica, sends while the owner is killed mid-delivery:
//! the other replica takes the outbox over once the lease expires (the default
//! lease), and bob receives every message in the hub's order, once.
//!
//! b.example only receives here (bob sends nothing), so it never calls
//! a.example; its peer entry for a.example points at a closed port because
//! the replicas' federation ports are chosen by the OS.

use std::net::SocketAddr;
use std::time::Duration;

use conclave_client::GroupId;
use conclave_test_support::cluster::homeserver_binary;
use conclave_test_support::wait::DELIVERY_TIMEOUT;
use conclave_test_support::{
    ClusterOptions, DatabaseChoice, TestCluster, TestFederation, TestHomeserver, TestOptions,
    TestPki, eventually,
};

use crate::harness::{User, assert_received_once_in_order, group_of};

/// Messages alice sends before the owner is killed, and after.
const MESSAGES_PER_PHASE: usize = 50;

/// Longest the whole test may take.
const TEST_TIMEOUT: Duration = Duration::from_secs(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_peer_receives_everything_once_when_the_outbox_owner_is_killed() {
    conclave_test_support::init_logging();
    conclave_test_support::within(TEST_TIMEOUT, "the outbox owner's death", owner_killed()).await;
}

async fn owner_killed() {
    let pki = TestPki::new();
    let (a_certificate, b_certificate) = (pki.issue("a.example"), pki.issue("b.example"));
    let b_listener = tokio::net::TcpListener::bind("127.0.0.2:0")
        .await
        .expect("b.example's federation listener");
    let b_endpoint = format!("https://{}", b_listener.local_addr().expect("bound"));
    let closed_port = closed_port();
    let b_example = TestHomeserver::start_with(TestOptions {
        database: DatabaseChoice::Sqlite,
        domain: "b.example".to_owned(),
        federation: Some(TestFederation {
            listener: b_listener,
            settings: pki.federation_settings(
                &b_certificate,
                &[("a.example", format!("https://{closed_port}"))],
            ),
        }),
        ..TestOptions::default()
    })
    .await;
    let federation = format!(
        "[federation]\nlisten = '127.0.0.1:0'\ncertificate = '{}'\nprivate_key = '{}'\ntrust_roots = '{}'\n\
         [federation.peers.'b.example']\nendpoint = '{b_endpoint}'",
        a_certificate.certificate.display(),
        a_certificate.private_key.display(),
        pki.trust_roots().display(),
    );
    let cluster = TestCluster::start(
        ClusterOptions::replicas(2)
            .with_redis()
            .domain("a.example")
            .config(&federation),
    )
    .await;

    // The replicas take their leases as they start: find the outbox's owner.
    let owner = eventually(DELIVERY_TIMEOUT, "a replica owning the outbox", || async {
        outbox_owner(&cluster).await
    })
    .await;
    let owner_index = replica_of(&cluster, &owner);
    let other_index = 1 - owner_index;

    let alice = User::register_at(&cluster.client_url(other_index), "alice@a.example").await;
    let bob = User::register_at(&b_example.client_url(), "bob@b.example").await;
    let group_id = group_of(&alice, "cluster outbox", &[&bob]).await;

    send_numbered(&alice, &group_id, "before", MESSAGES_PER_PHASE).await;
    cluster.kill(owner_index).await;
    send_numbered(&alice, &group_id, "after", MESSAGES_PER_PHASE).await;
    let new_owner = eventually(
        DELIVERY_TIMEOUT,
        "the other replica taking over",
        || async { outbox_owner(&cluster).await.filter(|now| *now != owner) },
    )
    .await;
    assert_eq!(replica_of(&cluster, &new_owner), other_index);

    assert_received_once_in_order(&alice, &bob, &group_id, 2 * MESSAGES_PER_PHASE).await;
    b_example.stop().await;
}

/// alice sends `count` messages "<label> <n>".
async fn send_numbered(alice: &User, group_id: &GroupId, label: &str, count: usize) {
    for number in 0..count {
        alice.send(group_id, &format!("{label} {number}")).await;
    }
}

/// The replica id holding a.example's lease on its outbox to b.example, as
/// `conclave-homeserver federation status --json` (run against the surviving
/// replica's configuration) reports it.
async fn outbox_owner(cluster: &TestCluster) -> Option<String> {
    let config = cluster.config_path(0);
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(homeserver_binary())
            .arg("--config")
            .arg(&config)
            .args(["federation", "status", "--json"])
            .output()
            .expect("conclave-homeserver federation status runs")
    })
    .await
    .expect("the status command's thread");
    assert!(output.status.success(), "federation status: {output:?}");
    let stdout = String::from_utf8(output.stdout).expect("UTF-8 output");
    let line = stdout
        .lines()
        .find(|line| line.contains("\"domain\":\"b.example\""))?;
    let (_, rest) = line.split_once("\"outbox_owner\":\"")?;
    rest.split_once('"').map(|(owner, _)| owner.to_owned())
}

/// Which replica logged `replica_id` as its own at start.
fn replica_of(cluster: &TestCluster, replica_id: &str) -> usize {
    let logged: Vec<usize> = (0..cluster.replicas())
        .filter(|index| {
            std::fs::read_to_string(cluster.log_path(*index))
                .expect("a replica's log")
                .contains(replica_id)
        })
        .collect();
    assert_eq!(logged.len(), 1, "one replica is {replica_id}: {logged:?}");
    logged[0]
}

/// A loopback address nothing listens on.
fn closed_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("bound")
}
