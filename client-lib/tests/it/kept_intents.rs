//! Intents kept across failures: a message that lost the race for its epoch
//! stays stored until it is rebuilt, whatever fails in between (the homeserver
//! going away, a restart), and a kept message the homeserver refuses later is
//! reported, once, instead of vanishing.

use std::sync::Arc;

use conclave_client::{ClientError, FailPoint, GroupId, ReceiveReport, RefusedSubmission};
use conclave_core::ids::UserId;
use conclave_test_support::{AdjustableClock, DatabaseChoice, TestHomeserver, TestOptions};

use crate::support::{GROUP_STOCK, Reopen as _, TestDevice, register, take_all_unread, within};

fn user(id: &str) -> UserId {
    id.parse().unwrap()
}

/// A homeserver that takes application messages of the current epoch only,
/// so that any commit makes a message built before it lose its race.
async fn strict_server() -> TestHomeserver {
    conclave_test_support::init_logging();
    TestHomeserver::start_with(
        TestOptions::on(DatabaseChoice::Sqlite)
            .configure(|config| config.groups.past_epoch_window = 0),
    )
    .await
}

/// A group of the given users, created by the first, everyone joined.
async fn group_of(devices: &[&TestDevice], users: &[&str], name: &str) -> GroupId {
    let group_id = devices[0].client.create_group(name).await.unwrap().group_id;
    let users: Vec<UserId> = users.iter().map(|name| user(name)).collect();
    devices[0].client.invite(&group_id, &users).await.unwrap();
    for device in &devices[1..] {
        let report = receive(device, "joining").await;
        assert_eq!(report.joined, vec![group_id.clone()]);
    }
    group_id
}

/// A strict homeserver with Alice and Bob registered and in a group `name`
/// that Alice created.
async fn alice_and_bob_in(name: &str) -> (TestHomeserver, TestDevice, TestDevice, GroupId) {
    let server = strict_server().await;
    let (alice, _) = register(&server, "alice", GROUP_STOCK).await;
    let (bob, _) = register(&server, "bob", GROUP_STOCK).await;
    let group_id = group_of(&[&alice, &bob], &["bob@localhost"], name).await;
    (server, alice, bob, group_id)
}

/// A strict homeserver with Alice, Bob and Carol registered; Alice created
/// two groups, `with_bob` with Bob and `with_carol` with Carol.
async fn alice_with_bob_and_with_carol(
    with_bob: &str,
    with_carol: &str,
) -> (TestHomeserver, [TestDevice; 3], [GroupId; 2]) {
    let server = strict_server().await;
    let (alice, _) = register(&server, "alice", GROUP_STOCK).await;
    let (bob, _) = register(&server, "bob", GROUP_STOCK).await;
    let (carol, _) = register(&server, "carol", GROUP_STOCK).await;
    let bob_group = group_of(&[&alice, &bob], &["bob@localhost"], with_bob).await;
    let carol_group = group_of(&[&alice, &carol], &["carol@localhost"], with_carol).await;
    (server, [alice, bob, carol], [bob_group, carol_group])
}

/// `device` receives, within 60 seconds (`what` names the wait).
async fn receive(device: &TestDevice, what: &str) -> ReceiveReport {
    within(60, what, device.client.receive()).await.unwrap()
}

/// `device` receives, within 60 seconds, and is told of no refusal.
async fn receive_with_no_refusal(device: &TestDevice, what: &str) {
    let report = receive(device, what).await;
    assert!(report.refused.is_empty(), "{report:?}");
}

/// Asserts that `device` has no refusal left to take, of `group` or (`None`)
/// of any group; `why` says why there should be none.
fn assert_no_refusal_left(device: &TestDevice, group: Option<&GroupId>, why: &str) {
    assert!(
        device
            .client
            .take_refused_submissions(group)
            .unwrap()
            .is_empty(),
        "{why}"
    );
}

fn texts_of(device: &TestDevice) -> Vec<String> {
    take_all_unread(device)
        .into_iter()
        .map(|message| message.body.text().unwrap().to_owned())
        .collect()
}

fn own_history(device: &TestDevice, group_id: &GroupId) -> Vec<String> {
    device
        .client
        .messages(group_id, 20)
        .unwrap()
        .into_iter()
        .filter(|message| message.own)
        .map(|message| message.body.text().unwrap().to_owned())
        .collect()
}

fn refused_texts(refused: &[RefusedSubmission]) -> Vec<String> {
    refused
        .iter()
        .map(|refusal| refusal.text.clone().unwrap_or_default())
        .collect()
}

/// Alice's message loses its race to Bob's commit; before she can catch up,
/// her client stops (as a crash would) and the homeserver goes away, so the
/// catch-up fails, after the restart too. The message is kept: once the
/// homeserver is back it is rebuilt for the new epoch and delivered exactly
/// once, before the message she sends next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_lost_its_race_survives_the_homeserver_going_away() {
    let (server, alice, bob, group_id) = alice_and_bob_in("kept").await;
    alice.client.send(&group_id, "one").await.unwrap();
    bob.client.rotate(&group_id).await.unwrap();

    // Built for the epoch Bob's commit ended: refused as stale, rolled back.
    alice.client.set_fail_point(Some(FailPoint::AfterLostRace));
    match alice.client.send(&group_id, "two").await {
        Err(ClientError::SimulatedCrash(_)) => {}
        other => panic!("expected a simulated crash after the lost race, got {other:?}"),
    }
    let alice = alice.reopen();
    let config = server.config().clone();
    let database = server.stop().await;

    // The catch-up before the rebuild cannot reach the homeserver: nothing
    // is sent, and the line typed now is not stored (it would overtake).
    for attempt in 0..2 {
        let error = alice.client.send(&group_id, "three").await.unwrap_err();
        assert!(error.is_transient(), "attempt {attempt}: {error}");
        let error = alice.client.receive().await.unwrap_err();
        assert!(error.is_transient(), "attempt {attempt}: {error}");
    }
    assert_no_refusal_left(&alice, None, "nothing was sent to refuse");

    // On the same database and address; the clock is the system's (no offset).
    let server =
        TestHomeserver::start_on(config, database, Arc::new(AdjustableClock::default())).await;
    let sent = within(60, "sending after the homeserver is back", async {
        alice.client.send(&group_id, "three").await
    })
    .await
    .unwrap();
    assert_eq!(sent.epoch, 2, "sent in the epoch of Bob's commit");
    receive(&bob, "bob receiving").await;
    assert_eq!(texts_of(&bob), ["one", "two", "three"]);
    assert_eq!(own_history(&alice, &group_id), ["one", "two", "three"]);

    // Nothing is left to send twice, now or after another restart.
    let alice = alice.reopen();
    receive_with_no_refusal(&alice, "alice receiving").await;
    receive(&bob, "bob receiving again").await;
    assert!(texts_of(&bob).is_empty());
    assert_eq!(own_history(&alice, &group_id), ["one", "two", "three"]);
    drop(server);
}

/// A message stored but not sent (its sender stopped first) whose sender is
/// removed from the group before it goes out: it is reported as refused,
/// once, to [`Client::receive`] or, for a sender that moved on to the next
/// message, by `take_refused_submissions`; the others never see it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_kept_message_is_reported_once() {
    let (_server, [alice, bob, carol], [with_bob, with_carol]) =
        alice_with_bob_and_with_carol("with bob", "with carol").await;

    for (group_id, text) in [(&with_bob, "hello bob"), (&with_carol, "hello carol")] {
        alice.client.set_fail_point(Some(FailPoint::BeforeSend));
        match alice.client.send(group_id, text).await {
            Err(ClientError::SimulatedCrash(_)) => {}
            other => panic!("expected a simulated crash before sending, got {other:?}"),
        }
    }
    let alice = alice.reopen();
    bob.client
        .remove(&with_bob, &user("alice@localhost"))
        .await
        .unwrap();
    carol
        .client
        .remove(&with_carol, &user("alice@localhost"))
        .await
        .unwrap();

    // Sending the next message resends the kept one first, which is refused.
    let error = alice
        .client
        .send(&with_carol, "hello again")
        .await
        .unwrap_err();
    assert!(!error.is_transient(), "{error}");
    let refused = alice
        .client
        .take_refused_submissions(Some(&with_carol))
        .unwrap();
    assert_eq!(refused_texts(&refused), ["hello carol"], "{refused:?}");
    assert_eq!(refused[0].group_id, with_carol);
    assert_eq!(refused[0].group_name, "with carol");
    assert_eq!(refused[0].action, "send a message");
    assert!(!refused[0].reason.is_empty());
    assert_no_refusal_left(&alice, Some(&with_carol), "told once");

    // Receiving resends the other, refused too, and says so in its report.
    let report = receive(&alice, "alice receiving").await;
    assert_eq!(refused_texts(&report.refused), ["hello bob"], "{report:?}");
    assert_eq!(report.refused[0].group_id, with_bob);
    assert_no_refusal_left(&alice, None, "told once, by the report");
    receive_with_no_refusal(&alice, "alice receiving again").await;

    for device in [&bob, &carol] {
        receive(device, "receiving").await;
        assert!(texts_of(device).is_empty());
    }
}

/// Alice's rotation loses its race to Bob's commit removing her; catching up
/// with that commit forgets the kept submission and keeps its refusal. The
/// rotation's caller waits for the answer, so it is told by the error (why it
/// was not done), and only by it: nothing is reported again later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removal_found_while_catching_up_is_told_once() {
    let (_server, alice, bob, group_id) = alice_and_bob_in("gone").await;
    bob.client
        .remove(&group_id, &user("alice@localhost"))
        .await
        .unwrap();

    let error = within(60, "alice rotating", alice.client.rotate(&group_id))
        .await
        .unwrap_err();
    let ClientError::NotDone {
        group,
        action,
        reason,
    } = &error
    else {
        panic!("expected the kept refusal as the error, got {error:?}");
    };
    assert_eq!(group, "gone");
    assert_eq!(action, "rotate this device's keys");
    assert!(reason.contains("no longer a member"), "{reason}");
    assert_no_refusal_left(&alice, None, "told once, by the error");
    receive_with_no_refusal(&alice, "alice receiving").await;
}

/// A kept submission this version cannot carry out (its intent was stored by
/// a newer version, say) stops its own group only: receiving still fetches
/// every other group's events (and says what failed), and the group's own
/// next messages wait behind it rather than overtake it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_submission_that_keeps_failing_stops_only_its_group() {
    let (_server, [alice, bob, carol], [stuck, flowing]) =
        alice_with_bob_and_with_carol("stuck", "flowing").await;

    let state_dir = alice.close();
    let connection =
        rusqlite::Connection::open(state_dir.path().join(conclave_client::STATE_FILE_NAME))
            .unwrap();
    connection
        .execute(
            "INSERT INTO pending_submissions (group_id, kind, intent, idempotency_key, payload,
                 epoch, created_at_ms, lost_race)
             VALUES (?1, 'message', '{\"intent\":\"from_a_newer_version\"}', X'00112233',
                     X'00', 1, 0, 1)",
            [stuck.as_bytes()],
        )
        .unwrap();
    drop(connection);
    let alice = state_dir.open();

    carol.client.send(&flowing, "to alice").await.unwrap();
    let error = within(60, "alice receiving", alice.client.receive())
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("from_a_newer_version"),
        "{error}"
    );
    assert_eq!(
        texts_of(&alice),
        ["to alice"],
        "the other group's events came"
    );
    let error = within(60, "alice sending", alice.client.send(&stuck, "later"))
        .await
        .unwrap_err();
    assert!(!matches!(error, ClientError::NotSentYet { .. }), "{error}");
    receive(&bob, "bob receiving").await;
    assert!(texts_of(&bob).is_empty(), "nothing overtook the kept one");
    alice.client.send(&flowing, "from alice").await.unwrap();
    receive(&carol, "carol receiving").await;
    assert_eq!(texts_of(&carol), ["from alice"]);
}
