//! Shared limits across replica processes: wrong passwords for one account
//! from one address, spread over three replicas (each a process of the real
//! binary, on one database and one Redis), meet ONE back-off, not one per
//! replica; and when Redis is stopped, each replica falls back to its own.

use conclave_client::{Client, ClientError, ServerUrl};
use conclave_test_support::{ClusterOptions, PASSWORD, TestCluster};
use tonic::Code;

use crate::harness::{User, parse_url, within_timeout};

/// Two free failures per (account, address), then a minute's wait: the
/// cluster allows three failures in all before it refuses, on every replica.
const LIMITS: &str = "[limits]
login_failures_before_backoff = 2
login_backoff_initial_seconds = 60
login_backoff_max_seconds = 600";

/// A login to `alice@localhost` with `password` through `server`, by a device
/// that holds no session (so it may try again after a refusal).
async fn try_login(
    guesser: &Client,
    server: &ServerUrl,
    password: &str,
) -> Result<(), ClientError> {
    guesser
        .login(server, "alice@localhost", password, "guesser")
        .await
        .map(|_| ())
}

#[track_caller]
fn assert_code(result: Result<(), ClientError>, code: Code, fragment: &str, case: &str) {
    match result {
        Err(ClientError::Rpc(error)) => {
            assert_eq!(error.code, code, "{case}: {}", error.message);
            assert!(
                error.message.contains(fragment),
                "{case}: {:?} does not mention {fragment:?}",
                error.message
            );
        }
        other => panic!("{case}: expected {code:?}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_failures_spread_over_replicas_hit_one_shared_limit() {
    within_timeout(async {
        let mut cluster =
            TestCluster::start(ClusterOptions::replicas(3).with_redis().config(LIMITS)).await;
        let replicas: Vec<ServerUrl> = (0..3)
            .map(|index| parse_url(&cluster.client_url(index)))
            .collect();
        User::register_at(&cluster.client_url(0), "alice@localhost").await;
        let state = tempfile::tempdir().expect("a temporary directory");
        let guesser = Client::open(state.path()).expect("a client state");

        // Each replica sees one failure: three in all, the last the cluster allows.
        for (index, replica) in replicas.iter().enumerate() {
            let result = try_login(&guesser, replica, &format!("guess {index}")).await;
            let case = format!("guess {index} on replica {index}");
            assert_code(
                result,
                Code::Unauthenticated,
                "wrong username or password",
                &case,
            );
        }
        // Counted per replica, each would allow two more; shared, none does,
        // not even the right password (guessing learns nothing).
        let backing_off = "too many failed logins to this account from this address";
        for (index, replica) in replicas.iter().enumerate() {
            let result = try_login(&guesser, replica, "guess again").await;
            let case = format!("a fourth guess on replica {index}");
            assert_code(result, Code::ResourceExhausted, backing_off, &case);
            let result = try_login(&guesser, replica, PASSWORD).await;
            let case = format!("the right password on replica {index}");
            assert_code(result, Code::ResourceExhausted, backing_off, &case);
        }

        // Without Redis each replica counts on its own, from nothing: replica
        // 1 allows its own three failures, then backs off by itself, while
        // replica 2 has counted none.
        cluster.redis().stop();
        for guess in 0..3 {
            let result = try_login(&guesser, &replicas[1], &format!("local guess {guess}")).await;
            let case = format!("guess {guess} on replica 1 without Redis");
            assert_code(
                result,
                Code::Unauthenticated,
                "wrong username or password",
                &case,
            );
        }
        let result = try_login(&guesser, &replicas[1], "one too many").await;
        let case = "a fourth guess on replica 1 without Redis";
        assert_code(result, Code::ResourceExhausted, backing_off, case);
        let result = try_login(&guesser, &replicas[2], "elsewhere").await;
        let case = "a guess on replica 2 without Redis";
        assert_code(
            result,
            Code::Unauthenticated,
            "wrong username or password",
            case,
        );
    })
    .await;
}
