//! Group commit of application messages: many SendMessage calls at once, to
//! one group or to several (which the hub judges and writes in shared
//! transactions), each get their own sequence number or their own refusal,
//! retries get their first outcome, a refused message takes no other down with
//! it, and a group held by another transaction holds up no other group.

use crate::groups_harness::{Client, EVENT_TIMEOUT, start_with_clients};
use crate::harness::within_timeout;
use conclave_proto::client::v1 as proto;
use conclave_proto::client::v1::delivery_event::Event;
use conclave_test_support::{DatabaseChoice, TableLock, eventually};
use futures::future::join_all;
use std::collections::{BTreeMap, HashSet};
use tonic::Code;

on_both_databases!(
    concurrent_messages_each_get_their_own_outcome,
    messages_to_many_groups_at_once_each_get_their_own_outcome
);

/// Good messages per member, sent at once with everything else.
const MESSAGES_PER_MEMBER: usize = 20;

async fn concurrent_messages_each_get_their_own_outcome(database: DatabaseChoice) {
    let (_server, _channel, [mut alice, mut bob, carol]) =
        start_with_clients(database, ["alice", "bob", "carol"]).await;
    let group_id = alice.create_group().await;
    let added = alice.invite(&["bob@localhost"]).await;
    bob.sync().await;

    // Everything below goes to the hub at the same time.
    let mut requests: Vec<(&str, proto::SendMessageRequest)> = Vec::new();
    for index in 0..MESSAGES_PER_MEMBER {
        let message = alice.encrypt(format!("alice {index}").as_bytes());
        requests.push(("alice", alice.message_request(message)));
        let message = bob.encrypt(format!("bob {index}").as_bytes());
        requests.push(("bob", bob.message_request(message)));
    }
    let good = requests.len();
    // A retry racing its original: one message, both answered with its seq.
    let message = alice.encrypt(b"retried");
    let retried = alice.message_request(message);
    requests.push(("alice", retried.clone()));
    requests.push(("alice", retried.clone()));
    // One key for two different messages: one is accepted, the other refused.
    let message = alice.encrypt(b"first body");
    let reused = alice.message_request(message);
    let message = alice.encrypt(b"second body");
    let mut other_body = alice.message_request(message);
    other_body.idempotency_key = reused.idempotency_key.clone();
    requests.push(("alice", reused));
    requests.push(("alice", other_body));
    // The same bytes under two keys: stored once, the other is a replay.
    let replayed_bytes = bob.encrypt(b"replayed");
    requests.push(("bob", bob.message_request(replayed_bytes.clone())));
    requests.push(("bob", bob.message_request(replayed_bytes.clone())));
    // Refused alone: garbage, and a device that is not a member.
    requests.push(("bob", bob.message_request(b"not an MLS message".to_vec())));
    let copied = alice.encrypt(b"copied by a non-member");
    let not_member = proto::SendMessageRequest {
        idempotency_key: b"carol's key".to_vec(),
        group_id: group_id.clone(),
        message: copied,
    };
    requests.push(("carol", not_member));

    let answers = join_all(requests.iter().map(|(who, request)| {
        let client = match *who {
            "alice" => &alice,
            "bob" => &bob,
            _ => &carol,
        };
        client.try_send_message(request.clone())
    }))
    .await;

    let mut accepted: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    for ((_, request), answer) in requests.iter().zip(&answers).take(good) {
        let answer = answer.as_ref().expect("a good message is accepted");
        assert_eq!(answer.epoch, added.epoch);
        assert!(
            accepted
                .insert(answer.seq, request.message.clone())
                .is_none(),
            "seq {} was given twice",
            answer.seq
        );
    }
    let rest = &answers[good..];
    let retried_seq = rest[0].as_ref().expect("the retried message").seq;
    assert_eq!(rest[1].as_ref().expect("its retry").seq, retried_seq);
    accepted.insert(retried_seq, retried.message.clone());

    let reused_outcomes = [&rest[2], &rest[3]];
    let reused_winner = reused_outcomes
        .iter()
        .position(|answer| answer.is_ok())
        .expect("one body of the reused key is accepted");
    let reused_loser = reused_outcomes[1 - reused_winner]
        .as_ref()
        .expect_err("the other body is refused");
    assert_eq!(
        reused_loser.code(),
        Code::InvalidArgument,
        "{reused_loser:?}"
    );
    let winner_request = &requests[good + 2 + reused_winner].1;
    let winner_seq = reused_outcomes[reused_winner].as_ref().unwrap().seq;
    assert!(
        accepted
            .insert(winner_seq, winner_request.message.clone())
            .is_none()
    );

    let replay_outcomes = [&rest[4], &rest[5]];
    let replay_winner = replay_outcomes
        .iter()
        .position(|answer| answer.is_ok())
        .expect("one copy of the replayed bytes is accepted");
    let replay_loser = replay_outcomes[1 - replay_winner]
        .as_ref()
        .expect_err("the other copy is a replay");
    assert_eq!(replay_loser.code(), Code::AlreadyExists, "{replay_loser:?}");
    let replay_seq = replay_outcomes[replay_winner].as_ref().unwrap().seq;
    assert!(
        accepted
            .insert(replay_seq, replayed_bytes.clone())
            .is_none()
    );

    let garbage = rest[6].as_ref().expect_err("garbage is refused");
    assert_eq!(garbage.code(), Code::InvalidArgument, "{garbage:?}");
    let outsider = rest[7].as_ref().expect_err("a non-member is refused");
    assert_eq!(outsider.code(), Code::PermissionDenied, "{outsider:?}");

    // The accepted messages follow the commit without a gap, each once.
    let seqs: Vec<u64> = accepted.keys().copied().collect();
    let expected: Vec<u64> = (added.seq + 1..=added.seq + accepted.len() as u64).collect();
    assert_eq!(seqs, expected);

    // Bob reads exactly these, in this order (after the commit he joined by).
    let logged: Vec<(u64, Vec<u8>)> = bob
        .fetch(0)
        .await
        .into_iter()
        .filter_map(|event| match event.event {
            Some(Event::GroupEvent(event)) if event.seq > added.seq => {
                Some((event.seq, event.message))
            }
            _ => None,
        })
        .collect();
    assert_eq!(logged, accepted.clone().into_iter().collect::<Vec<_>>());

    // Later retries still get their first outcomes, and write nothing.
    for (index, (who, request)) in requests.iter().enumerate().take(good) {
        let client = if *who == "alice" { &alice } else { &bob };
        let again = client
            .try_send_message(request.clone())
            .await
            .expect("a retry gets its first outcome");
        assert_eq!(Some(again.seq), answers[index].as_ref().ok().map(|a| a.seq));
    }
    let distinct: HashSet<u64> = bob
        .fetch(0)
        .await
        .into_iter()
        .filter_map(|event| match event.event {
            Some(Event::GroupEvent(event)) if event.seq > added.seq => Some(event.seq),
            _ => None,
        })
        .collect();
    assert_eq!(distinct.len(), accepted.len());
}

/// The group's application messages after `after_seq` as the log holds them,
/// `(seq, message)`, read by a member.
async fn logged_messages(member: &Client, after_seq: u64) -> Vec<(u64, Vec<u8>)> {
    member
        .fetch(0)
        .await
        .into_iter()
        .filter_map(|event| match event.event {
            Some(Event::GroupEvent(event)) if event.seq > after_seq => {
                Some((event.seq, event.message))
            }
            _ => None,
        })
        .collect()
}

/// Groups of one member each, all sending at once.
const GROUPS: usize = 4;

async fn messages_to_many_groups_at_once_each_get_their_own_outcome(database: DatabaseChoice) {
    let (_server, _channel, mut members) =
        start_with_clients(database, ["m0", "m1", "m2", "m3"]).await;
    let mut group_ids = Vec::new();
    let mut created_at = Vec::new();
    for member in members.iter_mut() {
        group_ids.push(member.create_group().await);
        let logged = logged_messages(member, 0).await;
        created_at.push(logged.last().map_or(0, |(seq, _)| *seq));
    }

    // Per group: its good messages; then the odd ones, all at once.
    let mut requests: Vec<(usize, proto::SendMessageRequest)> = Vec::new();
    for index in 0..MESSAGES_PER_MEMBER {
        for (sender, member) in members.iter_mut().enumerate() {
            let message = member.encrypt(format!("{sender}: {index}").as_bytes());
            requests.push((sender, member.message_request(message)));
        }
    }
    let good = requests.len();
    // m0's message, sent to m1's group: m0 is not a member there.
    let message = members[0].encrypt(b"to the wrong group");
    let mut wrong_group = members[0].message_request(message);
    wrong_group.group_id = group_ids[1].clone();
    requests.push((0, wrong_group));
    // To a group nobody created.
    let message = members[1].encrypt(b"to no group");
    let mut no_group = members[1].message_request(message);
    no_group.group_id = b"no such group".to_vec();
    requests.push((1, no_group));
    // The same bytes twice in m2's group: the second is a replay.
    let replayed = members[2].encrypt(b"twice");
    requests.push((2, members[2].message_request(replayed.clone())));
    requests.push((2, members[2].message_request(replayed.clone())));

    let answers = join_all(
        requests
            .iter()
            .map(|(sender, request)| members[*sender].try_send_message(request.clone())),
    )
    .await;

    let mut accepted: Vec<BTreeMap<u64, Vec<u8>>> = vec![BTreeMap::new(); GROUPS];
    for ((sender, request), answer) in requests.iter().zip(&answers).take(good) {
        let answer = answer.as_ref().expect("a good message is accepted");
        assert!(
            accepted[*sender]
                .insert(answer.seq, request.message.clone())
                .is_none(),
            "seq {} was given twice in group {sender}",
            answer.seq
        );
    }
    let rest = &answers[good..];
    let outsider = rest[0].as_ref().expect_err("a non-member is refused");
    assert_eq!(outsider.code(), Code::PermissionDenied, "{outsider:?}");
    let unknown = rest[1].as_ref().expect_err("an unknown group is refused");
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
    let replay_winner = rest[2..4]
        .iter()
        .position(Result::is_ok)
        .expect("one copy is accepted");
    let replay_loser = rest[2 + (1 - replay_winner)]
        .as_ref()
        .expect_err("the other copy is a replay");
    assert_eq!(replay_loser.code(), Code::AlreadyExists, "{replay_loser:?}");
    let replay_seq = rest[2 + replay_winner].as_ref().unwrap().seq;
    assert!(accepted[2].insert(replay_seq, replayed).is_none());

    // Each group's log holds exactly its accepted messages, without a gap,
    // after its creation.
    for (group, member) in members.iter().enumerate() {
        let logged = logged_messages(member, created_at[group]).await;
        assert_eq!(
            logged,
            accepted[group].clone().into_iter().collect::<Vec<_>>(),
            "group {group}"
        );
        let seqs: Vec<u64> = accepted[group].keys().copied().collect();
        let expected: Vec<u64> =
            (created_at[group] + 1..=created_at[group] + seqs.len() as u64).collect();
        assert_eq!(seqs, expected, "group {group}");
    }
}

/// While another transaction holds one group's row (as a commit being applied
/// does), messages to other groups are answered; the held group's message
/// waits for the row and is accepted once it is free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_held_by_another_transaction_holds_up_no_other_group() {
    within_timeout(async {
        let (server, _channel, [mut held, mut free]) =
            start_with_clients(DatabaseChoice::Postgres, ["held", "free"]).await;
        let held_group = held.create_group().await;
        free.create_group().await;
        let held_request = {
            let message = held.encrypt(b"waits for the row");
            held.message_request(message)
        };
        let free_request = {
            let message = free.encrypt(b"goes ahead");
            free.message_request(message)
        };

        let hex: String = held_group
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        let lock = TableLock::rows(
            &server.config().database.url,
            &format!(
                "SELECT id FROM groups WHERE mls_group_id = decode('{hex}', 'hex') FOR UPDATE"
            ),
        )
        .await;
        let waiting_before = lock.waiters().await;
        let held_send = held.try_send_message(held_request);
        tokio::pin!(held_send);
        let free_answer = tokio::select! {
            answer = free.try_send_message(free_request) => answer,
            answer = &mut held_send => panic!("answered while its group was held: {answer:?}"),
        };
        free_answer.expect("the free group's message is accepted");

        // The held group's message waits for its row, taken alone.
        let waiting = async {
            eventually(
                EVENT_TIMEOUT,
                "the held group's message waiting for its row",
                || async { (lock.waiters().await > waiting_before).then_some(()) },
            )
            .await
        };
        tokio::select! {
            () = waiting => {}
            answer = &mut held_send => panic!("answered while its group was held: {answer:?}"),
        }
        lock.release().await;
        let answer = held_send.await.expect("accepted once the row is free");
        let logged = logged_messages(&held, 0).await;
        assert_eq!(logged.last().map(|(seq, _)| *seq), Some(answer.seq));
    })
    .await;
}
