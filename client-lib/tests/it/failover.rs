//! A homeserver of several replicas (two in-process servers on one PostgreSQL
//! database): a listening client whose replica shuts down gracefully goes on
//! through the other, and a sender whose replica is gone sends through the
//! other, with nothing lost or shown twice.

use std::sync::{Arc, Mutex};

use conclave_client::ConnectionNotice;
use conclave_test_support::DatabaseChoice;
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
    let second = first.start_replica().await;
    let endpoints = vec![server_url(&first), server_url(&second)];
    let (alice, _) = register(&first, "alice", GROUP_STOCK).await;
    let (bob, _) = register(&first, "bob", GROUP_STOCK).await;
    let TestDevice { client, state_dir } = alice;
    let alice = TestDevice {
        client: client.with_server_endpoints(endpoints.clone()),
        state_dir,
    };
    let TestDevice { client, state_dir } = bob;
    let bob = TestDevice {
        client: client.with_server_endpoints(endpoints.clone()),
        state_dir,
    };
    let group_id = alice.client.create_group("replicas").await.unwrap().group_id;
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

    assert_eq!(bob.client.server_endpoint().unwrap(), Some(endpoints[1].clone()));
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
