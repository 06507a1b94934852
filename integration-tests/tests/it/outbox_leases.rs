//! A domain of two replicas on one PostgreSQL database (the second on a
//! runtime of its own, so it can be killed as SIGKILL would), federating with
//! a peer: one replica at a time sends the peer's outbox, the holder of its
//! lease, as `federation status` shows. A replica stopped gracefully hands the
//! lease over at once; one killed stops renewing it, and another takes over
//! once it expires. The peer receives every event in order, once.

use conclave_client::GroupId;
use conclave_test_support::wait::DELIVERY_TIMEOUT;
use conclave_test_support::{DatabaseChoice, KillableReplica, TestNetwork, eventually};

use crate::harness::{User, assert_received_once_in_order, group_of, within_timeout};

/// Messages alice sends before the sending replica is killed, and after.
const MESSAGES_PER_PHASE: usize = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_has_one_sender_and_another_replica_takes_over() {
    within_timeout(one_sender_and_takeovers()).await;
}

/// The replica that holds a.example's lease on its outbox to b.example.
async fn outbox_owner(network: &TestNetwork) -> Option<String> {
    let status = network.outbox_status("a.example", "b.example").await;
    status.outbox_owner
}

/// Waits until a replica other than `previous` ones sends to b.example.
async fn new_owner(network: &TestNetwork, previous: &[&str]) -> String {
    eventually(
        DELIVERY_TIMEOUT,
        "another replica taking the outbox over",
        || async {
            outbox_owner(network)
                .await
                .filter(|owner| !previous.contains(&owner.as_str()))
        },
    )
    .await
}

/// alice sends `count` messages "<label> <n>", riding out her replica's
/// restart.
async fn send_numbered(alice: &User, group_id: &GroupId, label: &str, count: usize) {
    for number in 0..count {
        alice
            .send_through_outages(group_id, &format!("{label} {number}"), || {})
            .await;
    }
}

async fn one_sender_and_takeovers() {
    // A short lease, so the takeover after the kill comes soon.
    let mut network = TestNetwork::builder(&["a.example", "b.example"], DatabaseChoice::Postgres)
        .configure(|_, _, config| {
            config.leases.ttl_ms = 3000;
            config.leases.renew_interval_ms = 1000;
        })
        .start()
        .await;
    let [alice, bob] = User::register_all(&network, ["alice@a.example", "bob@b.example"]).await;
    let group_id = group_of(&alice, "leases", &[&bob]).await;
    let first = outbox_owner(&network)
        .await
        .expect("a.example's only replica holds the outbox's lease");

    // A second replica of a.example, on its database: it waits for the lease.
    let replica = KillableReplica::start(network.config("a.example").clone()).await;
    assert_eq!(
        outbox_owner(&network).await.as_deref(),
        Some(first.as_str())
    );

    // The first replica stops gracefully: it releases, the second takes over.
    network.stop("a.example").await;
    let second = new_owner(&network, &[&first]).await;
    // Started again (a new replica id), it waits: the second still holds it.
    network.start_again("a.example").await;
    assert_eq!(
        outbox_owner(&network).await.as_deref(),
        Some(second.as_str())
    );

    // alice sends through the restarted replica while the second sends to
    // b.example; the second is killed mid-burst, holding its lease.
    send_numbered(&alice, &group_id, "before", MESSAGES_PER_PHASE).await;
    replica.kill();
    send_numbered(&alice, &group_id, "after", MESSAGES_PER_PHASE).await;
    let third = new_owner(&network, &[&first, &second]).await;

    assert_received_once_in_order(&alice, &bob, &group_id, 2 * MESSAGES_PER_PHASE).await;
    network.outbox_drained("a.example", "b.example").await;
    assert_eq!(
        outbox_owner(&network).await.as_deref(),
        Some(third.as_str())
    );
    network.shutdown().await;
}
