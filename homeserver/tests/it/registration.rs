//! Registration policies: closed refuses everyone; token needs a valid, unspent
//! token, and only a registration that succeeds spends it.

use crate::harness::{
    Api, assert_refused, assert_status, login_request, new_signer, register_request,
};
use conclave_homeserver::SystemClock;
use conclave_homeserver::config::RegistrationPolicy;
use conclave_proto::client::v1 as proto;
use conclave_test_support::{AdjustableClock, DatabaseChoice, TestHomeserver, TestOptions};
use std::sync::Arc;
use std::time::Duration;
use tonic::Code;

on_both_databases!(
    closed_registration_refuses_everyone,
    token_registration_spends_tokens_only_on_success,
);

/// Asserts that `username` has no account: logging in says the credentials are wrong.
async fn assert_no_account(api: &Api, username: &str) {
    let result = api.try_login(login_request(username, &new_signer())).await;
    assert_status(result, Code::Unauthenticated, "wrong username or password");
}

/// A Register request for `username`, with a fresh key, carrying `registration_token`.
fn request_with_token(username: &str, registration_token: &str) -> proto::RegisterRequest {
    let mut request = register_request(username, &new_signer());
    request.registration_token = registration_token.to_owned();
    request
}

async fn create_token(server: &TestHomeserver, uses: u32, valid_for_days: Option<u32>) -> String {
    conclave_homeserver::admin::create_registration_token(
        server.config().clone(),
        Arc::new(SystemClock),
        uses,
        valid_for_days,
    )
    .await
    .expect("creating a registration token")
    .token
}

async fn closed_registration_refuses_everyone(database: DatabaseChoice) {
    let server = TestHomeserver::start_with(
        TestOptions::on(database).registration(RegistrationPolicy::Closed),
    )
    .await;
    let api = Api::connect(&server).await;
    let token = create_token(&server, 1, None).await;

    for registration_token in [String::new(), token] {
        let request = request_with_token("alice", &registration_token);
        let result = api.try_register(request).await;
        assert_status(result, Code::PermissionDenied, "registration is closed");
        assert_no_account(&api, "alice").await;
    }
}

async fn token_registration_spends_tokens_only_on_success(database: DatabaseChoice) {
    let clock = Arc::new(AdjustableClock::default());
    let server = TestHomeserver::start_with(
        TestOptions::on(database)
            .registration(RegistrationPolicy::Token)
            .clock(clock.clone()),
    )
    .await;
    let api = Api::connect(&server).await;
    let single_use = create_token(&server, 1, None).await;

    let missing = "this homeserver requires a registration token";
    let rejected = "the registration token is unknown, expired, used up or revoked";
    for (case, token, message) in [
        ("missing token", String::new(), missing),
        ("unknown token", "not-a-token".to_owned(), rejected),
    ] {
        let result = api.try_register(request_with_token("bob", &token)).await;
        assert_refused(case, result, Code::PermissionDenied, message);
        assert_no_account(&api, "bob").await;
    }

    // A single-use token works once.
    let alice_signer = new_signer();
    let mut request = register_request("alice", &alice_signer);
    request.registration_token = single_use.clone();
    api.try_register(request)
        .await
        .expect("registering with a token");
    let result = api
        .try_register(request_with_token("bob", &single_use))
        .await;
    assert_status(result, Code::PermissionDenied, rejected);
    assert_no_account(&api, "bob").await;

    // Registrations that fail leave the token unspent: the username is taken
    // (refused before the token is looked at), or the signature key is bound
    // already (refused inside the transaction that spent the token).
    let second = create_token(&server, 1, None).await;
    let result = api.try_register(request_with_token("alice", &second)).await;
    assert_status(
        result,
        Code::AlreadyExists,
        "username alice is already taken",
    );
    let mut reused_key = register_request("bob", &alice_signer);
    reused_key.registration_token = second.clone();
    let result = api.try_register(reused_key).await;
    assert_status(
        result,
        Code::AlreadyExists,
        "already bound to another device",
    );
    assert_no_account(&api, "bob").await;
    api.try_register(request_with_token("bob", &second))
        .await
        .expect("the token survived the failed registrations");
    let result = api.try_register(request_with_token("carol", &second)).await;
    assert_status(result, Code::PermissionDenied, rejected);

    // An expired token is refused and stays refused.
    let expiring = create_token(&server, 5, Some(1)).await;
    clock.advance(Duration::from_secs(2 * 24 * 3600));
    let result = api
        .try_register(request_with_token("carol", &expiring))
        .await;
    assert_status(result, Code::PermissionDenied, rejected);
    assert_no_account(&api, "carol").await;
}
