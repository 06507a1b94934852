//! Group commit of application messages: many SendMessage calls to one group at
//! once (which the hub judges and writes in shared transactions) each get their
//! own sequence number or their own refusal, retries get their first outcome,
//! and a refused message takes no other down with it.

use crate::groups_harness::start_with_clients;
use conclave_proto::client::v1 as proto;
use conclave_proto::client::v1::delivery_event::Event;
use conclave_test_support::DatabaseChoice;
use futures::future::join_all;
use std::collections::{BTreeMap, HashSet};
use tonic::Code;

on_both_databases!(concurrent_messages_each_get_their_own_outcome);

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
