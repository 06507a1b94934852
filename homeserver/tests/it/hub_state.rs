//! The hub's parsed group state kept in memory between commits
//! (`service/groups/state_cache.rs`): a commit or proposal accepted through
//! another replica of the domain (same database) makes a replica read the
//! stored state again, and refused commits leave the kept state as it was.
//! Each step would be refused if a replica judged it against a state that is
//! not the stored one. A commit adding devices here stores the state with its
//! Welcome; the replicas and the joining device read it from there.

use crate::groups_harness::{Change, assert_in_sync, form_group, start_with_clients};
use crate::harness::{assert_refused, channel};
use conclave_test_support::DatabaseChoice;
use tonic::Code;

on_both_databases!(
    commits_and_proposals_through_another_replica_are_seen,
    refused_commits_leave_the_kept_state_as_it_was,
    a_state_stored_with_a_welcome_serves_the_group_and_the_joiner,
);

async fn commits_and_proposals_through_another_replica_are_seen(database: DatabaseChoice) {
    let (first, _, [mut alice, mut bob]) = start_with_clients(database, ["alice", "bob"]).await;
    form_group(&mut alice, &mut [&mut bob]).await;
    // The first replica keeps the state of epoch 2 after this.
    alice.commit(Change::SelfUpdate).await;
    let second = first.start_replica(|_| {}).await;
    bob.reconnect(&channel(&second).await);

    // Bob commits epoch 2 through the second replica; Alice then commits epoch
    // 3 through the first, whose kept state is of epoch 2.
    bob.sync().await;
    let through_second = bob.commit(Change::SelfUpdate).await;
    assert_eq!(through_second.epoch, 3);
    alice.sync().await;
    let through_first = alice.commit(Change::SelfUpdate).await;
    assert_eq!(through_first.epoch, 4);

    // Within epoch 4: Bob's proposal lands through the second replica, and
    // Alice's commit of it by reference through the first, which kept epoch 4
    // without the proposal.
    bob.sync().await;
    let proposal = bob.propose_self_update();
    let request = bob.proposal_request(proposal);
    let proposed = bob
        .try_submit_proposal(request)
        .await
        .expect("the proposal is accepted");
    assert_eq!(proposed.epoch, 4);
    alice.sync().await;
    let covered = alice.commit(Change::PendingProposals).await;
    assert_eq!(covered.epoch, 5);

    // And an application message in between is no reason to read again, but
    // the next commit is still judged right.
    alice.send("between commits").await;
    bob.sync().await;
    let after_message = bob.commit(Change::SelfUpdate).await;
    assert_eq!(after_message.epoch, 6);
    alice.sync().await;
    alice.commit(Change::SelfUpdate).await;
    bob.sync().await;
    assert_in_sync(&[&alice, &bob]).await;
    second.stop().await;
    first.stop().await;
}

/// A commit adding devices here stores the group's state once, with its
/// Welcome (`NewState::BesideWelcome`): another replica judges the next
/// commits against it, and a device that reads its Welcome after the group
/// moved on still gets the tree of the Welcome's epoch.
async fn a_state_stored_with_a_welcome_serves_the_group_and_the_joiner(database: DatabaseChoice) {
    let (first, _, [mut alice, mut bob, mut carol]) =
        start_with_clients(database, ["alice", "bob", "carol"]).await;
    form_group(&mut alice, &mut [&mut bob]).await;
    let url = first.config().database.url.clone();
    assert_eq!(
        where_the_state_is(&url).await,
        (0, Some(1)),
        "the group's row holds no copy of the state: the Welcome of commit 1 does"
    );
    let second = first.start_replica(|_| {}).await;
    bob.reconnect(&channel(&second).await);
    // The second replica never saw the group: it reads the state stored with
    // Bob's Welcome.
    let through_second = bob.commit(Change::SelfUpdate).await;
    assert_eq!(through_second.epoch, 2);
    let (row_state_bytes, welcome_seq) = where_the_state_is(&url).await;
    assert!(
        row_state_bytes > 0 && welcome_seq.is_none(),
        "a commit without a Welcome stores the state in the group's row"
    );

    alice.sync().await;
    let carol_id = carol.device.user_id.clone();
    let added = alice.invite(&[carol_id.as_str()]).await;
    assert_eq!(added.epoch, 3);
    // A proposal and a commit through the second replica before Carol reads
    // her Welcome, each moving the state on.
    bob.sync().await;
    let proposal = bob.propose_self_update();
    let request = bob.proposal_request(proposal);
    bob.try_submit_proposal(request)
        .await
        .expect("the proposal is accepted");
    let moved_on = bob.commit(Change::PendingProposals).await;
    assert_eq!(moved_on.epoch, 4);

    carol.reconnect(&channel(&second).await);
    carol.sync().await;
    assert!(carol.group.is_some(), "carol joined at epoch 3");
    alice.sync().await;
    assert_in_sync(&[&alice, &bob, &carol]).await;
    let last = carol.commit(Change::SelfUpdate).await;
    assert_eq!(last.epoch, 5);
    alice.sync().await;
    bob.sync().await;
    assert_in_sync(&[&alice, &bob, &carol]).await;
    second.stop().await;
    first.stop().await;
}

/// The length of the state in the group's row, and the commit whose Welcome
/// row holds the state instead, if any (the test's one group).
async fn where_the_state_is(url: &str) -> (i64, Option<i64>) {
    use sea_orm::{ConnectionTrait as _, Statement};
    let connection = sea_orm::Database::connect(url)
        .await
        .expect("connecting to the test database");
    let row = connection
        .query_one_raw(Statement::from_string(
            connection.get_database_backend(),
            "SELECT CAST(length(state) AS BIGINT) AS row_state_bytes, state_welcome_seq FROM groups",
        ))
        .await
        .expect("reading the group's row")
        .expect("one group");
    let found = (
        row.try_get::<i64>("", "row_state_bytes").unwrap(),
        row.try_get::<Option<i64>>("", "state_welcome_seq").unwrap(),
    );
    connection.close().await.expect("closing");
    found
}

async fn refused_commits_leave_the_kept_state_as_it_was(database: DatabaseChoice) {
    let (_server, _, [mut alice, mut bob, carol]) =
        start_with_clients(database, ["alice", "bob", "carol"]).await;
    form_group(&mut alice, &mut [&mut bob]).await;

    // Refused by the MLS checks: the GroupInfo is not the new epoch's.
    let update = alice.stage(Change::SelfUpdate);
    let mut request = alice.commit_request(&update);
    let stale_info = alice
        .try_group_info(&alice.group_id())
        .await
        .expect("reading the group info")
        .group_info;
    request.group_info = stale_info;
    let refused = alice.try_submit_commit(request).await;
    assert!(refused.is_err(), "a stale GroupInfo is refused");
    alice.discard();

    // Refused after the MLS checks, by the directory: a package never claimed.
    let unclaimed = crate::groups_harness::key_package(&carol.fresh_key_package());
    let add = alice.stage(Change::Add(vec![unclaimed]));
    let request = alice.commit_request(&add);
    assert_refused(
        "an add of an unclaimed package",
        alice.try_submit_commit(request).await,
        Code::FailedPrecondition,
        "was not claimed through the directory",
    );
    alice.discard();

    // The next commits are judged against the state both refusals left.
    let added = alice.invite(&["carol@localhost"]).await;
    assert_eq!(added.epoch, 2);
    bob.sync().await;
    let update = bob.commit(Change::SelfUpdate).await;
    assert_eq!(update.epoch, 3);
    alice.sync().await;
    assert_in_sync(&[&alice, &bob]).await;
}
