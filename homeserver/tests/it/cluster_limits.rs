//! Shared limits in cluster mode, in-process: two homeservers of one domain on
//! one PostgreSQL database and one Redis (a key prefix of the test's own)
//! count Register and Login attempts, failed logins, key-package claims and
//! a peer's federation requests once for both: requests spread over the two replicas meet ONE budget, not
//! twice it. (`integration-tests`' `cluster_limits` does the same with
//! replicas as processes.)

use crate::harness::{Api, assert_status, key_packages, login_request, new_signer, within_timeout};
use conclave_core::ids::CredentialIdentity;
use conclave_federation::client::{CallError, RefusalKind};
use conclave_homeserver::config::Config;
use conclave_homeserver::{Listeners, SystemClock};
use conclave_proto::client::v1 as proto;
use conclave_test_support::{DatabaseChoice, TestHomeserver, TestNetwork, TestOptions};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use tokio::sync::oneshot;
use tonic::Code;
use tonic::transport::Endpoint;

/// The Redis the tests share (`scripts/services` starts it).
const REDIS_URL: &str = "redis://127.0.0.1:6379";

/// A second replica of a test homeserver: the same configuration (database,
/// Redis and its prefix, federation certificate), its own ports; shut down
/// when dropped (dropping `_shutdown` ends the server's shutdown future).
struct Replica {
    client_url: String,
    /// Its federation listener, when federation is on.
    federation_address: Option<SocketAddr>,
    _shutdown: oneshot::Sender<()>,
}

impl Replica {
    async fn of(first: &TestHomeserver) -> Replica {
        let mut config = first.config().clone();
        let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
        config.client_api.listen = any_port;
        config.http.listen = any_port;
        // On the first replica's address (its certificate's peers trust it),
        // another port.
        config.federation.listen.set_port(0);
        let listeners = Listeners::bind(&config).await.expect("bind the replica");
        let client_url = format!("http://{}", listeners.client_api.local_addr().unwrap());
        let federation_address = listeners
            .federation
            .as_ref()
            .map(|listener| listener.local_addr().unwrap());
        let (shutdown, stop) = oneshot::channel::<()>();
        tokio::spawn(conclave_homeserver::run(
            config,
            listeners,
            Arc::new(SystemClock),
            async move {
                let _ = stop.await;
            },
        ));
        // Calls wait for the listener to be served; a replica that fails to
        // start ends the test with the harness's timeout and its log.
        Replica {
            client_url,
            federation_address,
            _shutdown: shutdown,
        }
    }
}

/// A Redis key prefix no other test uses.
fn fresh_prefix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("test-cluster-limits-{}-{nanos}", std::process::id())
}

/// The first replica, on a fresh PostgreSQL database, in cluster mode with a
/// Redis key prefix of its own; `limits` sets the limits under test.
async fn first_replica(limits: impl FnOnce(&mut Config) + Send + 'static) -> TestHomeserver {
    let prefix = fresh_prefix();
    let options = TestOptions::on(DatabaseChoice::Postgres).configure(move |config| {
        config.redis.url = Some(REDIS_URL.to_owned());
        config.redis.key_prefix = prefix;
        limits(config);
    });
    TestHomeserver::start_with(options).await
}

/// `conclave_ratelimit_rejections_total{limit}` on the replica's `/metrics`.
async fn rejections(replica: &TestHomeserver, limit: &str) -> Option<f64> {
    let text = conclave_test_support::metrics::scrape_ok(replica.http_address()).await;
    conclave_test_support::metrics::sample(
        &text,
        &format!("conclave_ratelimit_rejections_total{{limit=\"{limit}\"}}"),
    )
}

/// A client of the API at `client_url` whose connections come from `local_address`.
async fn api_at(client_url: &str, local_address: &str) -> Api {
    let local_address: IpAddr = local_address.parse().expect("an IP address");
    let channel = Endpoint::from_shared(client_url.to_owned())
        .expect("a valid URI")
        .local_address(Some(local_address))
        .connect()
        .await
        .unwrap_or_else(|error| panic!("cannot connect to {client_url}: {error}"));
    Api::new(channel)
}

/// Wrong passwords for alice from one address, spread over two replicas: the
/// free failures and the back-off are counted once for the cluster, so the
/// fourth attempt is refused (counted per replica it would be the seventh).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_failures_over_two_replicas_meet_one_back_off() {
    within_timeout(async {
        let first = first_replica(|config| {
            config.limits.login_failures_before_backoff = 2;
            config.limits.login_backoff_initial_seconds = 60;
            config.limits.login_backoff_max_seconds = 600;
        })
        .await;
        let second = Replica::of(&first).await;
        let replicas = [
            api_at(&first.client_url(), "127.0.0.2").await,
            api_at(&second.client_url, "127.0.0.2").await,
        ];
        replicas[1].register("alice").await;
        let guess = |attempt: usize| proto::LoginRequest {
            password: format!("guess {attempt}"),
            ..login_request("alice", &new_signer())
        };
        for attempt in 0..3 {
            let result = replicas[attempt % 2].try_login(guess(attempt)).await;
            assert_status(result, Code::Unauthenticated, "wrong username or password");
        }
        let backing_off = "too many failed logins to this account from this address";
        for replica in &replicas {
            assert_status(
                replica.try_login(guess(9)).await,
                Code::ResourceExhausted,
                backing_off,
            );
        }
        // Each replica counts the refusals it answered: one here.
        assert_eq!(rejections(&first, "login_backoff").await, Some(1.0));
        // From another address alice is not slowed, on either replica.
        api_at(&first.client_url(), "127.0.0.3")
            .await
            .login("alice")
            .await;
        api_at(&second.client_url, "127.0.0.3")
            .await
            .login("alice")
            .await;
    })
    .await;
}

/// One address's bucket of Register and Login attempts is one for the cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempts_over_two_replicas_share_one_bucket() {
    within_timeout(async {
        let first = first_replica(|config| {
            config.limits.auth_attempts_per_minute = 1;
            config.limits.auth_attempt_burst = 3;
        })
        .await;
        let second = Replica::of(&first).await;
        let replicas = [
            api_at(&first.client_url(), "127.0.0.4").await,
            api_at(&second.client_url, "127.0.0.4").await,
        ];
        replicas[0].register("alice").await;
        replicas[1].register("bob").await;
        replicas[0].login("alice").await;
        let from_the_address = "too many register and login attempts from this address";
        for replica in &replicas {
            let result = replica.try_login(login_request("bob", &new_signer())).await;
            assert_status(result, Code::ResourceExhausted, from_the_address);
        }
        assert_eq!(rejections(&first, "login_attempts").await, Some(1.0));
    })
    .await;
}

/// Key-package claims per claimer are one count for the cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_over_two_replicas_share_one_rate() {
    within_timeout(async {
        const PER_MINUTE: u32 = 3;
        let first = first_replica(|config| {
            config.key_packages.claims_per_minute = PER_MINUTE;
        })
        .await;
        let second = Replica::of(&first).await;
        let replicas = [
            api_at(&first.client_url(), "127.0.0.1").await,
            api_at(&second.client_url, "127.0.0.1").await,
        ];
        let alice = replicas[0].register("alice").await;
        let eager = replicas[1].register("bob").await;
        replicas[0]
            .upload(&alice, key_packages(&alice, 8), None)
            .await
            .expect("upload");
        for claim in 0..PER_MINUTE {
            let replica = &replicas[usize::try_from(claim).unwrap() % 2];
            assert_eq!(replica.claim(&eager, "alice@localhost").await.len(), 1);
        }
        for replica in &replicas {
            let result = replica.try_claim(&eager.token, "alice@localhost").await;
            assert_status(
                result,
                Code::ResourceExhausted,
                "too many key-package claims: at most 3 per minute",
            );
        }
        assert_eq!(replicas[1].stock(&alice).await.available, 5);
    })
    .await;
}

/// A peer's federation requests, spread over two replicas of b.example, meet
/// one rate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_requests_over_two_replicas_share_one_rate() {
    within_timeout(async {
        let prefix = fresh_prefix();
        let network = TestNetwork::builder(&["a.example", "b.example"], DatabaseChoice::Postgres)
            .configure_domain("b.example", move |config| {
                config.federation.peer_requests_per_minute = 3;
                config.redis.url = Some(REDIS_URL.to_owned());
                config.redis.key_prefix = prefix.clone();
            })
            .start()
            .await;
        let first = network.server("b.example");
        let second = Replica::of(first).await;
        let bob = Api::connect(first).await.register("bob").await;
        let identity: CredentialIdentity = bob.identity.parse().expect("an identity");
        let key = bob.signer.to_public_vec();
        let second_endpoint = format!("https://{}", second.federation_address.unwrap());
        let replicas = [
            network.federation_client_as("a.example", &["b.example"]),
            network.pki().federation_client(
                network.certificate("a.example"),
                &[("b.example", second_endpoint)],
            ),
        ];
        for call in 0..3 {
            let verified = replicas[call % 2].verify_credential(&identity, &key).await;
            assert!(verified.expect("verify"), "call {call}");
        }
        for replica in &replicas {
            match replica.verify_credential(&identity, &key).await {
                Err(CallError::Refused { kind, message, .. }) => {
                    assert_eq!(kind, RefusalKind::ResourceExhausted, "{message}");
                    assert!(
                        message
                            .contains("a.example sent more than 3 federation requests per minute"),
                        "{message}"
                    );
                }
                other => panic!("expected a refusal, got {other:?}"),
            }
        }
        // replicas[0] called the first replica: its refusal counted there.
        assert_eq!(
            rejections(first, "federation_peer_requests").await,
            Some(1.0)
        );
    })
    .await;
}
