//! Membership changes across domains: each member's client derives them from
//! the commits it processes and shows them beside the messages, with who made
//! each change.

use conclave_client::{MembershipKind, TimelineEvent};
use conclave_test_support::{DatabaseChoice, TestNetwork};

use crate::harness::{User, group_of};

on_both_databases!(changes_are_shown_with_who_made_them);

async fn changes_are_shown_with_who_made_them(database: DatabaseChoice) {
    let network = TestNetwork::start(&["a.example", "b.example", "c.example"], database).await;
    let [alice, bob, carol, dave] = User::register_all(
        &network,
        [
            "alice@a.example",
            "bob@b.example",
            "carol@c.example",
            "dave@a.example",
        ],
    )
    .await;
    let group_id = group_of(&alice, "membership", &[&bob]).await;
    // Bob's own joining is shown first.
    let mut listener = bob.client.listen(Some(group_id.clone()));
    let joined = listener.next_event().await.expect("bob's joining");
    assert!(
        matches!(&joined, TimelineEvent::Membership(change)
            if change.kind == MembershipKind::Joined && change.this_device),
        "{joined:?}"
    );

    alice.invite(&group_id, &[&carol, &dave]).await;
    for user in [&carol, &dave] {
        user.receive_until("the Welcome", |user| user.epoch(&group_id) == Some(2))
            .await;
    }
    dave.client.leave(&group_id).await.expect("dave leaves");
    alice
        .receive_until("dave's leave committed", |user| {
            user.group(&group_id).member_devices == 3
        })
        .await;
    alice.remove(&group_id, &carol).await;
    alice.send(&group_id, "without them").await;

    let mut changes = Vec::new();
    let message = loop {
        match listener.next_event().await.expect("bob listening") {
            TimelineEvent::Membership(change) => changes.push((
                change.kind,
                change.subject.user_id().to_string(),
                change.by.map(|by| by.user_id().to_string()),
            )),
            TimelineEvent::Message(message) => break message,
        }
    };
    let by = |user: &str| Some(user.to_owned());
    assert_eq!(
        changes,
        [
            (
                MembershipKind::Joined,
                "carol@c.example".to_owned(),
                by("alice@a.example")
            ),
            (
                MembershipKind::Joined,
                "dave@a.example".to_owned(),
                by("alice@a.example")
            ),
            (
                MembershipKind::Left,
                "dave@a.example".to_owned(),
                by("dave@a.example")
            ),
            (
                MembershipKind::Removed,
                "carol@c.example".to_owned(),
                by("alice@a.example")
            ),
        ]
    );
    assert_eq!(message.body.text(), Some("without them"));
    assert!(message.sent_at.is_some(), "{message:?}");
    assert!(message.server_time.is_some(), "{message:?}");
}
