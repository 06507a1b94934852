//! What a device sees of an administrator's action, with the action taken
//! as an operator takes it: `conclave-homeserver admin ...` on the server's
//! host, another process writing the same database. A suspended account's
//! calls and logins are refused with "this account is suspended" (once the
//! server's resync sees the change: another process's wake-ups reach it only
//! through Redis) and work again once it is unsuspended; a revoked device's
//! token is refused; the open Subscribe stream of a suspended device ends.

use crate::admin_cli::{admin_command, succeeded};
use crate::harness::{
    Api, authorized, channel, end_status, login_request, new_signer, start_with_api,
};
use conclave_proto::client::v1 as proto;
use conclave_proto::client::v1::delivery_service_client::DeliveryServiceClient;
use conclave_test_support::{DatabaseChoice, TestHomeserver};
use std::time::Duration;
use tonic::Code;

on_both_databases!(
    a_suspended_account_is_refused_until_it_is_unsuspended_and_a_revoked_device_for_good
);

/// Runs `conclave-homeserver admin ARGS...` against `server`'s database and
/// domain; panics unless it succeeds.
async fn admin(server: &TestHomeserver, arguments: &[&str]) {
    let config = server.config();
    succeeded(&admin_command(&config.domain, &config.database.url, arguments).await);
}

async fn who_am_i_code(api: &Api, token: &str) -> Result<(), (Code, String)> {
    api.who_am_i(token)
        .await
        .map(drop)
        .map_err(|status| (status.code(), status.message().to_owned()))
}

/// The refusal of `token`'s calls, once the server learnt of an `admin`
/// command's change: within its resync interval (1 s), waited for up to 20 s.
async fn refused_soon(api: &Api, token: &str) -> (Code, String) {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match who_am_i_code(api, token).await {
                Err(refusal) => return refusal,
                // Still served from the session cache: ask again shortly.
                Ok(()) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    })
    .await
    .expect("the server refuses the token after the admin command")
}

async fn a_suspended_account_is_refused_until_it_is_unsuspended_and_a_revoked_device_for_good(
    database: DatabaseChoice,
) {
    let (server, api) = start_with_api(database).await;
    let bob = api.register("bob").await;
    let mut delivery = DeliveryServiceClient::new(channel(&server).await);
    let mut stream = delivery
        .subscribe(authorized(&bob.token, proto::SubscribeRequest {}))
        .await
        .expect("subscribing")
        .into_inner();

    admin(&server, &["users", "suspend", "bob", "--reason", "abuse"]).await;
    let suspended = (
        Code::Unauthenticated,
        "this account is suspended".to_owned(),
    );
    // The server cached bob's session when he subscribed; it hears of the
    // other process's change at its next look at the database.
    assert_eq!(refused_soon(&api, &bob.token).await, suspended);
    let login = api.try_login(login_request("bob", &new_signer())).await;
    let login = login.expect_err("a suspended account cannot log in");
    assert_eq!((login.code(), login.message().to_owned()), suspended);
    // The server hears of it at its next resync (no Redis between the
    // two processes): the stream ends, with the same refusal.
    let ended = end_status(
        &mut stream,
        Duration::from_secs(20),
        "the suspended device's stream ends",
    )
    .await;
    assert_eq!((ended.code(), ended.message().to_owned()), suspended);

    let bob_user_id = format!("bob@{}", server.config().domain);
    admin(&server, &["users", "unsuspend", &bob_user_id]).await;
    assert_eq!(who_am_i_code(&api, &bob.token).await, Ok(()));

    admin(&server, &["devices", "revoke", "bob", &bob.device_id]).await;
    let revoked = refused_soon(&api, &bob.token).await;
    assert_eq!(revoked.0, Code::Unauthenticated, "{revoked:?}");
    assert!(revoked.1.contains("revoked"), "{revoked:?}");
}
