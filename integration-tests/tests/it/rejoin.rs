//! Rejoining a group of another domain by external commit: bob@b.example's
//! device loses its state of a group hosted on a.example and recovers on its
//! own; then a second device of bob joins the same way. Each time bob's client
//! asks its own homeserver for the group's GroupInfo (b.example fetches it
//! from the hub with FetchGroupInfo), its external commit is relayed to the
//! hub, and b.example's copy of the group delivers to the new leaf from its
//! commit on. Afterwards everyone agrees on the group and messages flow both
//! ways.

use conclave_client::GroupId;
use conclave_test_support::{DatabaseChoice, TestNetwork};

use crate::harness::{User, assert_same_state, group_of};

on_both_databases!(a_device_of_another_domain_rejoins_by_external_commit);

async fn a_device_of_another_domain_rejoins_by_external_commit(database: DatabaseChoice) {
    let network = TestNetwork::start(&["a.example", "b.example"], database).await;
    let [alice, bob] = User::register_all(&network, ["alice@a.example", "bob@b.example"]).await;
    let group_id = group_of(&alice, "rejoin", &[&bob]).await;
    assert_same_state(&[&alice, &bob], &group_id, 2);
    let copy = network.stored_group("b.example", group_id.as_bytes()).await;
    assert_eq!(
        copy.and_then(|group| group.hub_domain).as_deref(),
        Some("a.example")
    );

    // Bob's device forgets the group (as a lost or restored state would); its
    // next receive notices and rejoins by external commit, through b.example.
    bob.client
        .discard_group_state(&group_id)
        .expect("drop the state");
    let report = bob.receive().await;
    assert_eq!(report.rejoined, vec![group_id.clone()]);
    assert_eq!(bob.group(&group_id).epoch, Some(2), "the external commit");
    alice
        .receive_until("bob's external commit", |user| {
            user.epoch(&group_id) == Some(2)
        })
        .await;
    // The commit replaced bob's leaf: still two members, one state.
    assert_same_state(&[&alice, &bob], &group_id, 2);
    let hub = network.stored_group("a.example", group_id.as_bytes()).await;
    let copy = network.stored_group("b.example", group_id.as_bytes()).await;
    assert_eq!(hub.as_ref().map(|group| group.member_devices), Some(2));
    assert_eq!(copy.as_ref().map(|group| group.member_devices), Some(1));
    assert_eq!(
        copy.map(|group| group.last_seq),
        hub.map(|group| group.last_seq)
    );
    assert_conversation(&group_id, &alice, &[&bob], "after bob's rejoin").await;
    assert_conversation(&group_id, &bob, &[&alice], "after bob's rejoin").await;

    // A second device of bob knows nothing of the group; the recovery API
    // brings it in the same way, as a new leaf.
    let bob_laptop = User::login(&network, "bob@b.example").await;
    let rejoined = bob_laptop
        .client
        .rejoin(&group_id)
        .await
        .expect("bob's second device rejoins");
    assert_eq!(rejoined.epoch, 3);
    for user in [&alice, &bob] {
        user.receive_until("the second device's external commit", |user| {
            user.epoch(&group_id) == Some(3)
        })
        .await;
    }
    assert_same_state(&[&alice, &bob, &bob_laptop], &group_id, 3);
    let copy = network.stored_group("b.example", group_id.as_bytes()).await;
    assert_eq!(copy.map(|group| group.member_devices), Some(2));
    assert_conversation(
        &group_id,
        &bob_laptop,
        &[&alice, &bob],
        "from the new device",
    )
    .await;
    assert_conversation(&group_id, &alice, &[&bob, &bob_laptop], "to the new device").await;
}

/// `sender` sends a message; each of `readers` receives exactly it next.
async fn assert_conversation(group_id: &GroupId, sender: &User, readers: &[&User], case: &str) {
    let text = format!("{case}: hello from {}", sender.identity());
    let sent = sender.send(group_id, &text).await;
    for reader in readers {
        let received = reader.next_messages(group_id, 1).await;
        assert_eq!(received[0].seq, sent.seq, "{case}: {}", reader.user_id());
        assert_eq!(received[0].sender, sender.identity(), "{case}");
        assert_eq!(received[0].body.text(), Some(text.as_str()), "{case}");
    }
}
