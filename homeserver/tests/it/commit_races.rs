//! One commit per epoch: the first valid commit wins; a loser learns from ABORTED's
//! `CommitConflict` where the winner is, merges it and retries; and however many
//! submissions race for one epoch, the database lets exactly one through.

use crate::groups_harness::{
    Change, assert_in_sync, commit_conflict, form_group, start_with_clients, texts,
};
use crate::harness::assert_refused;
use conclave_test_support::DatabaseChoice;
use std::sync::Arc;
use tokio::sync::Barrier;
use tonic::Code;

on_both_databases!(
    the_loser_of_a_race_merges_the_winner_and_retries,
    concurrent_commits_for_one_epoch_let_exactly_one_through,
    concurrent_retries_of_one_submission_land_once,
);

/// How many commits race for one epoch, and how many copies of one submission
/// race each other.
const RACERS: usize = 10;

async fn the_loser_of_a_race_merges_the_winner_and_retries(database: DatabaseChoice) {
    let (_server, _, [mut alice, mut bob, mut carol]) =
        start_with_clients(database, ["alice", "bob", "carol"]).await;
    form_group(&mut alice, &mut [&mut bob, &mut carol]).await;

    // Both commit in epoch 1; Alice's arrives first.
    let alice_commit = alice.stage(Change::SelfUpdate);
    let bob_commit = bob.stage(Change::SelfUpdate);
    let request = alice.commit_request(&alice_commit);
    let won = alice
        .try_submit_commit(request)
        .await
        .expect("the first commit wins");
    alice.merge();
    assert_eq!((won.seq, won.epoch), (2, 2));

    let request = bob.commit_request(&bob_commit);
    let status = assert_refused(
        "the second commit of epoch 1",
        bob.try_submit_commit(request).await,
        Code::Aborted,
        "commit is for epoch 1 but the group is at epoch 2: the commit at sequence number 2 won",
    );
    let conflict = commit_conflict(&status);
    assert_eq!(
        (conflict.current_epoch, conflict.winning_commit_seq),
        (2, 2)
    );
    assert_eq!(
        (alice.summary().await.epoch, alice.summary().await.last_seq),
        (2, 2)
    );

    // Bob drops his commit, fetches the winner, merges it and tries again.
    bob.discard();
    bob.sync().await;
    assert_eq!(
        bob.log.last().map(|event| event.seq),
        Some(conflict.winning_commit_seq)
    );
    assert_eq!(bob.log.last().unwrap().message, alice_commit.commit);
    let retried = bob.commit(Change::SelfUpdate).await;
    assert_eq!((retried.seq, retried.epoch), (3, 3));

    alice.sync().await;
    carol.sync().await;
    assert_in_sync(&[&alice, &bob, &carol]).await;
    carol.send("all caught up").await;
    alice.sync().await;
    bob.sync().await;
    for client in [&alice, &bob] {
        assert_eq!(
            client.received.last().map(|m| m.plaintext.as_slice()),
            Some(&b"all caught up"[..])
        );
    }
}

async fn concurrent_commits_for_one_epoch_let_exactly_one_through(database: DatabaseChoice) {
    let (_server, _, [mut alice, mut bob]) = start_with_clients(database, ["alice", "bob"]).await;
    form_group(&mut alice, &mut [&mut bob]).await;

    // Alice builds many different valid commits for epoch 1 (each with new path
    // secrets), and they all race to the hub at once.
    let mut requests = Vec::new();
    for _ in 0..RACERS {
        let commit = alice.stage(Change::SelfUpdate);
        alice.discard();
        requests.push(alice.commit_request(&commit));
    }
    let mut winners = Vec::new();
    let mut conflicts = Vec::new();
    let answers = alice.sender().race_commits(requests.clone()).await;
    for (index, answer) in answers.into_iter().enumerate() {
        match answer {
            Ok(response) => winners.push((index, response)),
            Err(status) => conflicts.push(commit_conflict(&status)),
        }
    }
    let [(winner, accepted)] = winners.as_slice() else {
        panic!("expected exactly one accepted commit, got {winners:?}");
    };
    assert_eq!((accepted.seq, accepted.epoch), (2, 2));
    assert_eq!(conflicts.len(), RACERS - 1);
    for conflict in conflicts {
        assert_eq!(
            (conflict.current_epoch, conflict.winning_commit_seq),
            (2, 2)
        );
    }
    let summary = alice.summary().await;
    assert_eq!((summary.epoch, summary.last_seq), (2, 2));

    // The log holds the winner alone, and a member can merge it.
    bob.sync().await;
    let commits: Vec<_> = bob.log.iter().map(|event| event.seq).collect();
    assert_eq!(commits, [2]);
    assert_eq!(bob.log[0].message, requests[*winner].commit);
    assert_eq!(bob.epoch(), 2);
    let info = bob
        .try_group_info(&bob.group_id())
        .await
        .expect("group info");
    assert_eq!(info.epoch, 2);
}

/// Runs `RACERS` copies of one call at once and returns their results.
async fn all_at_once<T, F>(call: impl Fn() -> F) -> Vec<Result<T, tonic::Status>>
where
    T: Send + 'static,
    F: std::future::Future<Output = Result<T, tonic::Status>> + Send + 'static,
{
    let barrier = Arc::new(Barrier::new(RACERS));
    let tasks: Vec<_> = (0..RACERS)
        .map(|_| {
            let (barrier, call) = (barrier.clone(), call());
            tokio::spawn(async move {
                barrier.wait().await;
                call.await
            })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.expect("the task ran"));
    }
    results
}

/// A client that timed out and retried may have its retries in flight beside the
/// original: they must all get the original's result, and it must land once.
async fn concurrent_retries_of_one_submission_land_once(database: DatabaseChoice) {
    let (_server, _, [mut alice, mut bob, mut erin]) =
        start_with_clients(database, ["alice", "bob", "erin"]).await;
    form_group(&mut alice, &mut [&mut bob]).await;
    let sender = alice.sender();

    let message = alice.encrypt(b"once");
    let request = alice.message_request(message);
    let results = all_at_once(|| {
        let (sender, request) = (sender.clone(), request.clone());
        async move { sender.send(request.idempotency_key, request.message).await }
    })
    .await;
    let seqs: Vec<_> = results
        .into_iter()
        .map(|result| {
            result
                .expect("every copy of the message is acknowledged")
                .seq
        })
        .collect();
    assert_eq!(seqs, [2; RACERS]);
    assert_eq!(alice.summary().await.last_seq, 2);
    assert_eq!(texts(&bob.sync().await), ["once"]);

    let commit = alice.stage(Change::SelfUpdate);
    let request = alice.commit_request(&commit);
    let results = all_at_once(|| {
        let (sender, request) = (sender.clone(), request.clone());
        async move { sender.submit_commit(request).await }
    })
    .await;
    let responses: Vec<_> = results
        .into_iter()
        .map(|result| {
            let response = result.expect("every copy of the commit is accepted");
            (response.seq, response.epoch)
        })
        .collect();
    assert_eq!(responses, [(3, 2); RACERS]);
    alice.merge();
    bob.sync().await;
    assert_in_sync(&[&alice, &bob]).await;
    assert_eq!(alice.summary().await.last_seq, 3);

    let request = erin.new_group();
    let group_id = erin.group_id();
    let erin = Arc::new(erin);
    let results = all_at_once(|| {
        let (erin, request) = (erin.clone(), request.clone());
        async move { erin.try_create_group(request).await }
    })
    .await;
    for result in results {
        let response = result.expect("every copy of the creation is answered with the group");
        assert_eq!(response.group_id, group_id);
    }
}
