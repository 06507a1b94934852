//! Brute-force limits on Register and Login, over gRPC: a bucket per source
//! address, and a back-off per account and address after failed logins. Every
//! refusal is RESOURCE_EXHAUSTED with the delay in a `google.rpc.RetryInfo`.
//! Clients on 127.0.0.2 and 127.0.0.3 stand for other hosts (the server listens
//! on 127.0.0.1; Linux routes all of 127.0.0.0/8 to loopback); time moves by an
//! adjustable clock, never by sleeping.

use crate::harness::{Api, assert_status, login_request, new_signer, register_request};
use conclave_homeserver::config::Config;
use conclave_proto::client::v1 as proto;
use conclave_test_support::{AdjustableClock, DatabaseChoice, TestHomeserver, TestOptions};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::Endpoint;
use tonic::{Code, Status};
use tonic_types::StatusExt;

on_both_databases!(
    the_attempt_after_the_burst_is_refused_with_a_retry_delay,
    failed_logins_from_one_address_do_not_slow_the_account_elsewhere,
);

/// A server whose limits `limits` sets, on a clock the test moves.
async fn start(
    database: DatabaseChoice,
    limits: impl FnOnce(&mut Config) + Send + 'static,
) -> (TestHomeserver, Arc<AdjustableClock>) {
    let clock = Arc::new(AdjustableClock::default());
    let options = TestOptions::on(database)
        .clock(clock.clone())
        .configure(limits);
    (TestHomeserver::start_with(options).await, clock)
}

/// A client whose connections come from `local_address`.
async fn api_from(server: &TestHomeserver, local_address: &str) -> Api {
    let local_address: IpAddr = local_address.parse().expect("an IP address");
    let channel = Endpoint::from_shared(server.client_url())
        .expect("client_url is a valid URI")
        .local_address(Some(local_address))
        .connect()
        .await
        .unwrap_or_else(|error| panic!("cannot connect from {local_address}: {error}"));
    Api::new(channel)
}

/// Asserts a refusal by the limit whose message contains `limit`, and returns
/// the delay it asks for.
#[track_caller]
fn assert_limited<T: std::fmt::Debug>(result: Result<T, Status>, limit: &str) -> Duration {
    let status = assert_status(result, Code::ResourceExhausted, limit);
    assert!(
        status.message().contains("try again in"),
        "{:?} does not say when to retry",
        status.message()
    );
    status
        .get_details_retry_info()
        .and_then(|retry_info| retry_info.retry_delay)
        .unwrap_or_else(|| panic!("{status:?} has no RetryInfo with a delay"))
}

/// With a burst of 3 and one attempt a minute, the fourth attempt from an
/// address is refused with a delay of at most a minute, whatever it is
/// (Register or Login, any account); other addresses are not affected; the
/// refused registration created nothing, so it succeeds once the delay passed.
async fn the_attempt_after_the_burst_is_refused_with_a_retry_delay(database: DatabaseChoice) {
    let (server, clock) = start(database, |config| {
        config.limits.auth_attempts_per_minute = 1;
        config.limits.auth_attempt_burst = 3;
    })
    .await;
    let busy = api_from(&server, "127.0.0.1").await;
    busy.register("alice").await;
    busy.register("bob").await;
    busy.login("alice").await;

    let dave_signer = new_signer();
    let dave = || register_request("dave", &dave_signer);
    let from_the_address = "too many register and login attempts from this address";
    let delay = assert_limited(busy.try_register(dave()).await, from_the_address);
    assert!(
        Duration::ZERO < delay && delay <= Duration::from_secs(60),
        "retry delay {delay:?}"
    );
    let delay = assert_limited(
        busy.try_login(login_request("alice", &new_signer())).await,
        from_the_address,
    );
    assert!(delay <= Duration::from_secs(60), "retry delay {delay:?}");

    // Another address has its own bucket.
    let elsewhere = api_from(&server, "127.0.0.2").await;
    elsewhere.login("bob").await;

    // After the delay, one more attempt: the refused registration left neither
    // the username nor the signature key taken.
    clock.advance(Duration::from_secs(60));
    let session = busy.try_register(dave()).await.expect("dave registers");
    assert_eq!(session.user_id, "dave@localhost");
    assert_limited(
        busy.try_register(register_request("erin", &new_signer()))
            .await,
        from_the_address,
    );
}

/// Wrong passwords for alice from 127.0.0.2 put that address into a back-off
/// for alice (even the right password is refused there, so guessing learns
/// nothing), while alice logs in at once from 127.0.0.1 and 127.0.0.3, and the
/// attacker's address may still try other accounts.
async fn failed_logins_from_one_address_do_not_slow_the_account_elsewhere(
    database: DatabaseChoice,
) {
    let (server, clock) = start(database, |config| {
        config.limits.login_failures_before_backoff = 2;
        config.limits.login_backoff_initial_seconds = 60;
        config.limits.login_backoff_max_seconds = 600;
    })
    .await;
    let home = api_from(&server, "127.0.0.1").await;
    let attacker = api_from(&server, "127.0.0.2").await;
    home.register("alice").await;
    home.register("bob").await;

    let guess = |password: &str| proto::LoginRequest {
        password: password.to_owned(),
        ..login_request("alice", &new_signer())
    };
    for attempt in 1..=3 {
        let result = attacker.try_login(guess(&format!("guess {attempt}"))).await;
        assert_status(result, Code::Unauthenticated, "wrong username or password");
    }
    let backing_off = "too many failed logins to this account from this address";
    let delay = assert_limited(attacker.try_login(guess("guess 4")).await, backing_off);
    assert!(
        Duration::from_secs(59) < delay && delay <= Duration::from_secs(60),
        "retry delay {delay:?}"
    );
    assert_limited(
        attacker
            .try_login(login_request("alice", &new_signer()))
            .await,
        backing_off,
    );

    // Alice is not slowed anywhere else, and her success does not lift the
    // attacker's back-off.
    home.login("alice").await;
    api_from(&server, "127.0.0.3").await.login("alice").await;
    assert_limited(attacker.try_login(guess("guess 5")).await, backing_off);
    // The back-off is for alice only.
    attacker.login("bob").await;

    // After the delay the attacker's next failure doubles it.
    clock.advance(Duration::from_secs(60));
    let result = attacker.try_login(guess("guess 6")).await;
    assert_status(result, Code::Unauthenticated, "wrong username or password");
    let delay = assert_limited(attacker.try_login(guess("guess 7")).await, backing_off);
    assert!(
        Duration::from_secs(119) < delay && delay <= Duration::from_secs(120),
        "retry delay {delay:?}"
    );
}
