//! Commit races across replicas: two devices, each talking to its own replica
//! of one domain (separate processes of the real binary on one PostgreSQL
//! database), commit in the same epoch, round after round. The database
//! decides: exactly one commit wins each epoch, whichever replica it came
//! through; the loser gets ABORTED with the winner's position, catches up and
//! lands its commit on the next epoch. After every round both hold the same
//! epoch, epoch authenticator and tree; at the end so does a third member
//! that only watched.

use std::time::{Duration, Instant};

use conclave_test_support::{ClusterOptions, TestCluster};

use crate::commit_races::{assert_one_winner, raced};
use crate::harness::{User, assert_same_state};

/// Rounds of two commits racing for one epoch.
const ROUNDS: u64 = 500;

/// Longest the whole test may take (a few minutes on two busy cores).
const TEST_TIMEOUT: Duration = Duration::from_secs(900);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_racing_through_two_replicas_have_one_winner_per_epoch() {
    conclave_test_support::init_logging();
    conclave_test_support::within(TEST_TIMEOUT, "the commit races", async {
        let cluster = TestCluster::start(ClusterOptions::replicas(2).with_redis()).await;
        let alice = User::register_at(&cluster.client_url(0), "alice@localhost").await;
        let bob = User::register_at(&cluster.client_url(1), "bob@localhost").await;
        let carol = User::register_at(&cluster.client_url(1), "carol@localhost").await;
        let group_id = alice.create_group("races across replicas").await;
        alice.invite(&group_id, &[&bob, &carol]).await;
        for member in [&bob, &carol] {
            member
                .receive_until("the Welcome", |user| user.epoch(&group_id) == Some(1))
                .await;
        }

        let started = Instant::now();
        let mut epoch = 1;
        let mut won_by_alice = 0;
        for _ in 0..ROUNDS {
            let (by_alice, by_bob) =
                tokio::join!(alice.rotate(&group_id), bob.rotate(&group_id));
            if by_alice.lost_races == 0 {
                won_by_alice += 1;
            }
            assert_one_winner(epoch, &[raced(by_alice), raced(by_bob)]);
            epoch += 2;
            // The loser is there already (it merged its own commit after the
            // winner's); the winner fetches the loser's.
            for member in [&alice, &bob] {
                member
                    .receive_until(&format!("epoch {epoch}"), |user| {
                        user.epoch(&group_id) == Some(epoch)
                    })
                    .await;
            }
            assert_same_state(&[&alice, &bob], &group_id, 3);
        }
        eprintln!(
            "{ROUNDS} rounds in {:.1} s; the commit through replica 0 won {won_by_alice}, through replica 1 {}",
            started.elapsed().as_secs_f64(),
            ROUNDS - won_by_alice
        );

        carol
            .receive_until(&format!("epoch {epoch}"), |user| {
                user.epoch(&group_id) == Some(epoch)
            })
            .await;
        assert_same_state(&[&alice, &bob, &carol], &group_id, 3);
        assert_eq!(epoch, 1 + 2 * ROUNDS);
    })
    .await;
}
