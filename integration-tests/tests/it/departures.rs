//! Departures: when a device is deleted by its homeserver (here, its user logs
//! it out, the same path an administrator's revocation takes), the group's
//! hub writes a departure notice into the group's log, and the remaining
//! members' clients commit the device's removal on their own, without anyone
//! asking them: the epoch moves on without the leaf, and what is sent after it
//! is for the remaining members only. On one domain; then with the departed
//! device on another domain than the hub, whose homeserver tells the hub
//! (AnnounceDeparture) even when the hub was down at the time.

use conclave_client::{GroupId, MembershipEvent, MembershipKind, TimelineEvent};
use conclave_core::ids::CredentialIdentity;
use conclave_test_support::{DatabaseChoice, StoredGroup, TestNetwork};

use crate::harness::{User, assert_same_state, group_of};

on_both_databases!(
    a_logged_out_member_is_removed_by_the_others,
    a_departure_on_another_domain_reaches_the_hub_even_after_an_outage,
);

async fn a_logged_out_member_is_removed_by_the_others(database: DatabaseChoice) {
    let network = TestNetwork::start(&["a.example"], database).await;
    let [alice, bob, carol] = User::register_all(
        &network,
        ["alice@a.example", "bob@a.example", "carol@a.example"],
    )
    .await;
    let group_id = group_of(&alice, "departures", &[&bob, &carol]).await;
    assert_same_state(&[&alice, &bob, &carol], &group_id, 3);
    let bobs_device = bob.identity();
    let before = network.stored_group("a.example", group_id.as_bytes()).await;

    let logged_out = bob.client.logout().await.expect("bob logs out");
    assert_eq!(logged_out.groups.len(), 1, "bob's report names the group");
    assert_eq!(logged_out.groups[0].group_id, group_id);

    assert_removed_by_the_others(
        &network,
        "a.example",
        &group_id,
        &bobs_device,
        [&alice, &carol],
    )
    .await;
    assert_notice_and_commit_only(&network, &group_id, before).await;
    assert_message_reaches(&alice, &carol, &group_id, "after bob").await;
    assert_shown_as_leaving(&[&alice, &carol], &group_id, &bobs_device);
}

async fn a_departure_on_another_domain_reaches_the_hub_even_after_an_outage(
    database: DatabaseChoice,
) {
    let mut network = TestNetwork::start(&["a.example", "b.example"], database).await;
    let [alice, carol, bob] = User::register_all(
        &network,
        ["alice@a.example", "carol@a.example", "bob@b.example"],
    )
    .await;
    let group_id = group_of(&alice, "departures", &[&carol, &bob]).await;
    assert_same_state(&[&alice, &bob, &carol], &group_id, 3);
    let bobs_device = bob.identity();
    network.outbox_drained("a.example", "b.example").await;
    let before = network.stored_group("a.example", group_id.as_bytes()).await;

    // The hub is down when bob's device goes: b.example keeps the departure
    // and tells the hub once it is back.
    network.stop("a.example").await;
    bob.client.logout().await.expect("bob logs out");
    network.start_again("a.example").await;

    assert_removed_by_the_others(
        &network,
        "a.example",
        &group_id,
        &bobs_device,
        [&alice, &carol],
    )
    .await;
    assert_notice_and_commit_only(&network, &group_id, before).await;
    // b.example's copy saw the commit that removed its last device.
    network.outbox_drained("a.example", "b.example").await;
    let copy = network.stored_group("b.example", group_id.as_bytes()).await;
    assert_eq!(copy.map(|group| group.member_devices), Some(0));
    assert_message_reaches(&alice, &carol, &group_id, "after bob").await;
    assert_shown_as_leaving(&[&alice, &carol], &group_id, &bobs_device);
}

/// Each member's history shows the departed device leaving, with the reason
/// its homeserver gave, whichever member committed the removal.
fn assert_shown_as_leaving(members: &[&User], group_id: &GroupId, departed: &CredentialIdentity) {
    for member in members {
        let history = member
            .client
            .history(group_id, usize::MAX, None)
            .expect("the history");
        let left: Vec<&MembershipEvent> = history
            .iter()
            .filter_map(|event| match event {
                TimelineEvent::Membership(change)
                    if &change.subject == departed && change.kind != MembershipKind::Joined =>
                {
                    Some(change)
                }
                _ => None,
            })
            .collect();
        assert_eq!(left.len(), 1, "{history:#?}");
        assert_eq!(left[0].kind, MembershipKind::Left);
        assert_eq!(left[0].by.as_ref(), Some(departed));
        assert_eq!(left[0].reason, "logged out");
    }
}

/// The remaining `members` commit the removal of `departed` on their own (any
/// of them; one commit wins the epoch): they end in one state, one epoch
/// later, without its leaf; the hub's epoch is theirs.
async fn assert_removed_by_the_others(
    network: &TestNetwork,
    hub: &str,
    group_id: &GroupId,
    departed: &CredentialIdentity,
    members: [&User; 2],
) {
    let epoch_before = members[0].epoch(group_id).expect("a member");
    for member in members {
        member
            .receive_until("the departed device's removal", |user| {
                user.group(group_id).member_devices == 2
            })
            .await;
    }
    // Whoever lost the race caught up; both hold the winner's epoch.
    for member in members {
        member.receive().await;
    }
    assert_same_state(&members, group_id, 2);
    assert_eq!(
        members[0].epoch(group_id),
        Some(epoch_before + 1),
        "one commit"
    );
    for member in members {
        let leaves = member.client.members(group_id).expect("the members");
        assert!(
            leaves.iter().all(|leaf| &leaf.identity != departed),
            "{departed} is gone: {leaves:?}"
        );
    }
    let stored = network.stored_group(hub, group_id.as_bytes()).await;
    assert_eq!(stored.map(|group| group.epoch), Some(epoch_before + 1));
}

/// Since `before`, the hub's log grew by two entries, the departure notice and
/// the one commit removing the device (nothing twice), and the group has two
/// member devices left.
async fn assert_notice_and_commit_only(
    network: &TestNetwork,
    group_id: &GroupId,
    before: Option<StoredGroup>,
) {
    let before = before.expect("the hub hosts the group");
    let after = network
        .stored_group("a.example", group_id.as_bytes())
        .await
        .expect("the hub hosts the group");
    assert_eq!(
        after.last_seq,
        before.last_seq + 2,
        "{before:?} -> {after:?}"
    );
    assert_eq!(after.member_devices, 2);
}

/// `sender`'s message reaches `receiver`, in the epoch without the departed
/// device.
async fn assert_message_reaches(sender: &User, receiver: &User, group_id: &GroupId, text: &str) {
    sender.send(group_id, text).await;
    let received = receiver.next_messages(group_id, 1).await;
    assert_eq!(received[0].body.text(), Some(text));
}
