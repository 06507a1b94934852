//! The cluster harness at its simplest: two replicas of one domain, each a
//! process of the real binary on one PostgreSQL database and one Redis. An account
//! registered through one replica logs in through the other, and a replica
//! killed and restarted comes back on its addresses.

use conclave_test_support::{ClusterOptions, TestCluster};

use crate::harness::{User, within_timeout};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_made_on_one_replica_logs_in_on_the_other() {
    within_timeout(async {
        let cluster = TestCluster::start(ClusterOptions::replicas(2).with_redis()).await;
        let first = User::register_at(&cluster.client_url(0), "alice@localhost").await;
        let second = User::login_at(&cluster.client_url(1), "alice@localhost").await;
        assert_ne!(first.identity(), second.identity(), "two devices");
        // Each device is known to both replicas: they share the database.
        let devices = second
            .client
            .devices()
            .await
            .expect("listing devices through the second replica");
        assert_eq!(devices.len(), 2, "{devices:?}");

        cluster.kill(0).await;
        assert!(
            !cluster.is_ready(0).await,
            "a killed replica does not answer"
        );
        cluster.restart(0).await;
        let third = User::login_at(&cluster.client_url(0), "alice@localhost").await;
        let devices = third
            .client
            .devices()
            .await
            .expect("listing devices through the restarted replica");
        assert_eq!(devices.len(), 3, "{devices:?}");
    })
    .await;
}
