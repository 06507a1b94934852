//! Groups end to end through the library: creation, invitations, messages to
//! every device, removal, leaving, key rotation and rejoining after a lost
//! state, on both of the homeserver's databases.

use std::collections::BTreeSet;

use conclave_client::{GroupId, GroupStatus, MessageBody};
use conclave_core::ids::{CredentialIdentity, UserId};
use conclave_test_support::DatabaseChoice;

use crate::support::{
    GROUP_STOCK, TestDevice, login, register, start_server, take_all_unread, within,
};

fn user(id: &str) -> UserId {
    id.parse().unwrap()
}

/// Texts a device has unread, with their senders.
fn unread_texts(device: &TestDevice) -> BTreeSet<(CredentialIdentity, String)> {
    take_all_unread(device)
        .into_iter()
        .map(|message| {
            let MessageBody::Text(text) = message.body else {
                panic!("not a text message: {message:?}");
            };
            (message.sender, text)
        })
        .collect()
}

async fn receive(device: &TestDevice) -> conclave_client::ReceiveReport {
    within(60, "receive", device.client.receive())
        .await
        .unwrap_or_else(|error| panic!("receive on {}: {error}", device.identity()))
}

/// Every device agrees on the group's epoch, authenticator and members.
fn assert_same_state(devices: &[&TestDevice], group_id: &GroupId, members: usize) {
    let summaries: Vec<_> = devices
        .iter()
        .map(|device| device.client.group(group_id).unwrap())
        .collect();
    for summary in &summaries {
        assert_eq!(summary.status, GroupStatus::Active);
        assert_eq!(summary.member_devices, members, "{summary:?}");
        assert_eq!(summary.epoch, summaries[0].epoch, "{summaries:#?}");
        assert_eq!(
            summary.epoch_authenticator, summaries[0].epoch_authenticator,
            "{summaries:#?}"
        );
        assert_eq!(summary.tree_hash, summaries[0].tree_hash);
    }
}

conclave_test_support::on_both_databases!(conversation);

async fn conversation(database: DatabaseChoice) {
    let server = start_server(database).await;
    let (alice1, _) = register(&server, "alice", GROUP_STOCK).await;
    let (alice2, _) = login(&server, "alice", GROUP_STOCK).await;
    let (bob1, _) = register(&server, "bob", GROUP_STOCK).await;
    let (bob2, _) = login(&server, "bob", GROUP_STOCK).await;
    let (carol, _) = register(&server, "carol", GROUP_STOCK).await;

    let created = alice1.client.create_group("team").await.unwrap();
    assert_eq!(created.name, "team");
    assert_eq!(created.status, GroupStatus::Active);
    assert_eq!(created.epoch, Some(0));
    assert_eq!(created.member_devices, 1);
    let group_id = created.group_id;
    assert_eq!(alice1.client.find_group("team").unwrap(), group_id);

    // Inviting alice's own user adds her other device.
    let invited = alice1
        .client
        .invite(
            &group_id,
            &[
                user("alice@localhost"),
                user("bob@localhost"),
                user("carol@localhost"),
            ],
        )
        .await
        .unwrap();
    let expected: BTreeSet<CredentialIdentity> = [&alice2, &bob1, &bob2, &carol]
        .iter()
        .map(|device| device.identity())
        .collect();
    assert_eq!(
        invited.devices.iter().cloned().collect::<BTreeSet<_>>(),
        expected
    );
    assert_eq!(invited.epoch, 1);

    for device in [&alice2, &bob1, &bob2, &carol] {
        let report = receive(device).await;
        assert_eq!(report.joined, vec![group_id.clone()]);
        // The name travels in the group's context.
        let summary = device.client.group(&group_id).unwrap();
        assert_eq!(summary.name, "team");
        assert_eq!(device.client.find_group("team").unwrap(), group_id);
        let members = device.client.members(&group_id).unwrap();
        assert_eq!(members.len(), 5);
        assert_eq!(
            members.iter().filter(|member| member.this_device).count(),
            1
        );
    }
    let everyone = [&alice1, &alice2, &bob1, &bob2, &carol];
    assert_same_state(&everyone, &group_id, 5);

    // Every device talks; every other device reads it, from the right sender.
    for device in everyone {
        let text = format!("hello from {}", device.identity());
        let sent = device.client.send(&group_id, &text).await.unwrap();
        assert!(sent.seq > 0);
    }
    for device in everyone {
        receive(device).await;
        let expected: BTreeSet<(CredentialIdentity, String)> = everyone
            .iter()
            .filter(|other| other.identity() != device.identity())
            .map(|other| (other.identity(), format!("hello from {}", other.identity())))
            .collect();
        assert_eq!(unread_texts(device), expected, "{}", device.identity());
        // Its own message is in its history, not unread.
        let history = device.client.messages(&group_id, 100).unwrap();
        assert_eq!(history.len(), 5);
        assert_eq!(history.iter().filter(|message| message.own).count(), 1);
        assert!(history.windows(2).all(|pair| pair[0].seq < pair[1].seq));
    }

    // Bob is removed: both his devices go, and receive nothing after.
    let removed = alice1
        .client
        .remove(&group_id, &user("bob@localhost"))
        .await
        .unwrap();
    assert_eq!(
        removed.devices.iter().cloned().collect::<BTreeSet<_>>(),
        BTreeSet::from([bob1.identity(), bob2.identity()])
    );
    for device in [&bob1, &bob2] {
        let report = receive(device).await;
        assert_eq!(report.removed, vec![group_id.clone()]);
        assert_eq!(
            device.client.group(&group_id).unwrap().status,
            GroupStatus::Removed
        );
    }
    alice1.client.send(&group_id, "bob is gone").await.unwrap();
    for device in [&bob1, &bob2] {
        let report = receive(device).await;
        assert_eq!(report.new_messages, 0);
        assert!(device.client.take_unread(None).unwrap().is_none());
        let error = device
            .client
            .send(&group_id, "still here?")
            .await
            .unwrap_err();
        assert!(error.to_string().contains("not a member"), "{error}");
    }
    let remaining = [&alice1, &alice2, &carol];
    for device in remaining {
        receive(device).await;
    }
    assert_same_state(&remaining, &group_id, 3);
    for device in [&alice2, &carol] {
        assert_eq!(
            unread_texts(device),
            BTreeSet::from([(alice1.identity(), "bob is gone".to_owned())])
        );
    }

    // Alice's second device leaves: a proposal, which another member's client
    // commits as soon as it receives it.
    alice2.client.leave(&group_id).await.unwrap();
    assert!(alice2.client.group(&group_id).unwrap().leaving);
    let error = alice2.client.send(&group_id, "bye").await.unwrap_err();
    assert!(error.to_string().contains("leaving"), "{error}");
    receive(&carol).await;
    let report = receive(&alice2).await;
    assert_eq!(report.removed, vec![group_id.clone()]);
    let remaining = [&alice1, &carol];
    for device in remaining {
        receive(device).await;
    }
    assert_same_state(&remaining, &group_id, 2);

    // A key rotation (self-update) by Carol.
    let before = carol.client.group(&group_id).unwrap().epoch.unwrap();
    let rotated = carol.client.rotate(&group_id).await.unwrap();
    assert_eq!(rotated.epoch, before + 1);
    receive(&alice1).await;
    assert_same_state(&remaining, &group_id, 2);

    // Carol's device loses its state of the group; the next events make it
    // rejoin by external commit, and it reads what is sent after that.
    carol.client.discard_group_state(&group_id).unwrap();
    alice1
        .client
        .send(&group_id, "sent while carol's state was lost")
        .await
        .unwrap();
    let report = receive(&carol).await;
    assert_eq!(report.rejoined, vec![group_id.clone()]);
    receive(&alice1).await;
    assert_same_state(&remaining, &group_id, 2);
    assert!(carol.client.take_unread(None).unwrap().is_none());
    alice1.client.send(&group_id, "welcome back").await.unwrap();
    receive(&carol).await;
    assert_eq!(
        unread_texts(&carol),
        BTreeSet::from([(alice1.identity(), "welcome back".to_owned())])
    );
    // Carol's rejoined device talks again, and Alice reads it.
    carol.client.send(&group_id, "hi again").await.unwrap();
    receive(&alice1).await;
    assert_eq!(
        unread_texts(&alice1),
        BTreeSet::from([(carol.identity(), "hi again".to_owned())])
    );
    assert_same_state(&remaining, &group_id, 2);
}

/// A listener started before anything exists gets the Welcome and the messages
/// from the live stream, in order; the same client sends while it listens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_streams_welcomes_and_messages() {
    let server = start_server(DatabaseChoice::Sqlite).await;
    let (alice, _) = register(&server, "alice", GROUP_STOCK).await;
    let (bob, _) = register(&server, "bob", GROUP_STOCK).await;

    let mut listener = bob.client.listen(None);
    let alice_side = async {
        let group_id = alice.client.create_group("live").await.unwrap().group_id;
        alice
            .client
            .invite(&group_id, &[user("bob@localhost")])
            .await
            .unwrap();
        for text in ["one", "two", "three"] {
            alice.client.send(&group_id, text).await.unwrap();
        }
        group_id
    };
    let bob_side = async {
        let mut received = Vec::new();
        for _ in 0..3 {
            received.push(listener.next().await.unwrap());
        }
        received
    };
    let (group_id, received) = within(60, "three messages", async {
        tokio::join!(alice_side, bob_side)
    })
    .await;
    let texts: Vec<&str> = received
        .iter()
        .map(|message| message.body.text().unwrap())
        .collect();
    assert_eq!(texts, ["one", "two", "three"]);
    for message in &received {
        assert_eq!(message.sender, alice.identity());
        assert_eq!(message.group_id, group_id);
        assert_eq!(message.group_name, "live");
        assert!(!message.own);
    }

    // Bob sends on the client he listens with; Alice answers; Bob's listener
    // shows the answer, not his own message.
    let bob_side = async {
        bob.client.send(&group_id, "from bob").await.unwrap();
        listener.next().await.unwrap()
    };
    let alice_side = async {
        let message = alice
            .client
            .listen(Some(group_id.clone()))
            .next()
            .await
            .unwrap();
        assert_eq!(message.body.text(), Some("from bob"));
        alice.client.send(&group_id, "reply").await.unwrap();
    };
    let (answer, ()) = within(60, "an answer", async {
        tokio::join!(bob_side, alice_side)
    })
    .await;
    assert_eq!(answer.body.text(), Some("reply"));
    assert_eq!(answer.sender, alice.identity());
    assert!(bob.client.take_unread(None).unwrap().is_none());
}

/// A live listener hands out membership changes between messages, with who
/// made them: a member's key rotation, and a device that logged out (its
/// removal, committed by the listening client itself, shown as it leaving
/// with its homeserver's reason). The history holds them after the client is
/// reopened; messages carry the sender's clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_shows_membership_changes_with_who() {
    use conclave_client::{MembershipKind, TimelineEvent};

    let server = start_server(DatabaseChoice::Sqlite).await;
    let (alice, _) = register(&server, "alice", GROUP_STOCK).await;
    let (bob, _) = register(&server, "bob", GROUP_STOCK).await;
    let (carol, _) = register(&server, "carol", GROUP_STOCK).await;
    let group_id = alice.client.create_group("changes").await.unwrap().group_id;
    alice
        .client
        .invite(&group_id, &[user("bob@localhost"), user("carol@localhost")])
        .await
        .unwrap();
    receive(&bob).await;
    receive(&carol).await;
    let carols_device = carol.identity();

    let mut listener = alice.client.listen(Some(group_id.clone()));
    bob.client.rotate(&group_id).await.unwrap();
    let logged_out = carol.client.logout().await.unwrap();
    assert_eq!(logged_out.groups.len(), 1);
    assert_eq!(logged_out.groups[0].name, "changes");
    let mut events = Vec::new();
    within(60, "two changes", async {
        while events.len() < 2 {
            events.push(listener.next_event().await.unwrap());
        }
    })
    .await;
    let before_sending = chrono::Utc::now();
    bob.client.send(&group_id, "after carol").await.unwrap();
    events.push(
        within(60, "the message", listener.next_event())
            .await
            .unwrap(),
    );
    let changes: Vec<_> = events
        .iter()
        .filter_map(|event| match event {
            TimelineEvent::Membership(change) => Some((
                change.kind,
                change.subject.clone(),
                change.by.clone(),
                change.reason.clone(),
            )),
            TimelineEvent::Message(_) => None,
        })
        .collect();
    assert_eq!(
        changes,
        [
            (
                MembershipKind::Rotated,
                bob.identity(),
                Some(bob.identity()),
                String::new()
            ),
            (
                MembershipKind::Left,
                carols_device.clone(),
                Some(carols_device.clone()),
                "logged out".to_owned()
            ),
        ]
    );
    let Some(TimelineEvent::Message(message)) = events.last() else {
        unreachable!("the loop ends at a message");
    };
    assert_eq!(message.body.text(), Some("after carol"));
    let sent_at = message.sent_at.expect("the sender's clock");
    // Bob's clock is this machine's: it cannot be before the test asked.
    assert!(sent_at >= before_sending - chrono::Duration::seconds(1));
    // This device's own rotation is shown to its listener too.
    alice.client.rotate(&group_id).await.unwrap();
    let rotated = within(60, "the own rotation", listener.next_event())
        .await
        .unwrap();
    let TimelineEvent::Membership(rotated) = rotated else {
        panic!("not a membership change: {rotated:?}");
    };
    assert_eq!(rotated.kind, MembershipKind::Rotated);
    assert!(rotated.this_device && rotated.own, "{rotated:?}");
    drop(listener);

    let alice = alice.reopen();
    let history = alice.client.history(&group_id, 100, None).unwrap();
    let kinds: Vec<String> = history
        .iter()
        .map(|event| match event {
            TimelineEvent::Membership(change) => change.kind.as_str().to_owned(),
            TimelineEvent::Message(message) => message.body.text().unwrap().to_owned(),
        })
        .collect();
    // Alice's own invitation first (made here, so never unread).
    assert_eq!(
        kinds,
        [
            "joined",
            "joined",
            "rotated",
            "left",
            "after carol",
            "rotated"
        ],
        "{history:#?}"
    );
    assert_eq!(alice.client.unread_count(&group_id).unwrap(), 0);
}

/// Paging the history back one entry at a time sees every entry once, though a
/// commit adding two devices makes two entries at one log position: the page
/// that reaches that position takes both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_pages_never_split_a_log_position() {
    use conclave_client::TimelineEvent;

    let server = start_server(DatabaseChoice::Sqlite).await;
    let (alice, _) = register(&server, "alice", GROUP_STOCK).await;
    let (bob1, _) = register(&server, "bob", GROUP_STOCK).await;
    let (bob2, _) = login(&server, "bob", GROUP_STOCK).await;
    let group_id = alice.client.create_group("pages").await.unwrap().group_id;
    alice
        .client
        .invite(&group_id, &[user("bob@localhost")])
        .await
        .unwrap();
    alice.client.send(&group_id, "after bob").await.unwrap();

    let whole = alice.client.history(&group_id, 100, None).unwrap();
    let joined: Vec<_> = whole
        .iter()
        .filter_map(|event| match event {
            TimelineEvent::Membership(change) => Some((change.seq, change.subject.clone())),
            TimelineEvent::Message(_) => None,
        })
        .collect();
    assert_eq!(
        joined
            .iter()
            .map(|(_, subject)| subject)
            .collect::<BTreeSet<_>>(),
        BTreeSet::from([&bob1.identity(), &bob2.identity()]),
        "{whole:#?}"
    );
    assert_eq!(
        joined[0].0, joined[1].0,
        "one commit added both: {whole:#?}"
    );
    assert_eq!(whole.len(), 3, "{whole:#?}");

    let mut paged = Vec::new();
    let mut page_sizes = Vec::new();
    let mut before = None;
    loop {
        let page = alice.client.history(&group_id, 1, before).unwrap();
        let Some(oldest) = page.first() else {
            break;
        };
        before = Some(oldest.seq());
        page_sizes.push(page.len());
        paged.splice(0..0, page);
    }
    assert_eq!(paged, whole);
    // The message alone, then both additions past the limit of one.
    assert_eq!(page_sizes, [1, 2]);
}
