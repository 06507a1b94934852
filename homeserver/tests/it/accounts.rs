//! Accounts and devices: what Register, Login, WhoAmI, ListDevices, RemoveDevice
//! and Logout do when they succeed.

use crate::harness::{Api, assert_status, key_packages, start_with_api};
use conclave_test_support::{AdjustableClock, DatabaseChoice, TestHomeserver, TestOptions};
use std::sync::Arc;
use std::time::Duration;
use tonic::Code;

on_both_databases!(
    register_login_and_whoami,
    list_devices_reports_each_device,
    last_seen_follows_activity_at_minute_granularity,
    removing_a_device_revokes_it,
    removing_another_users_device_is_not_found,
    logout_revokes_the_session,
);

fn is_device_id(text: &str) -> bool {
    text.len() == 16 && text.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f'))
}

async fn register_login_and_whoami(database: DatabaseChoice) {
    let (_server, api) = start_with_api(database).await;

    let first = api.register("alice").await;
    assert_eq!(first.user_id, "alice@localhost");
    assert!(
        is_device_id(&first.device_id),
        "device id {:?}",
        first.device_id
    );
    assert_eq!(
        first.identity,
        format!("alice@localhost/{}", first.device_id)
    );

    // Both spellings of the user log in, each as a new device of the same account.
    let second = api.login("alice").await;
    let third = api.login("alice@localhost").await;
    for device in [&second, &third] {
        assert_eq!(device.user_id, "alice@localhost");
        assert!(
            is_device_id(&device.device_id),
            "device id {:?}",
            device.device_id
        );
        assert_eq!(
            device.identity,
            format!("alice@localhost/{}", device.device_id)
        );
    }
    let mut ids = vec![&first.device_id, &second.device_id, &third.device_id];
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "every enrolment is a new device");
    let tokens = [&first.token, &second.token, &third.token];
    assert!(tokens[0] != tokens[1] && tokens[1] != tokens[2] && tokens[0] != tokens[2]);

    for device in [&first, &second, &third] {
        let who = api.who_am_i(&device.token).await.expect("whoami");
        assert_eq!(who.user_id, "alice@localhost");
        assert_eq!(who.device_id, device.device_id);
        assert_eq!(who.credential_identity, device.identity);
    }
}

async fn list_devices_reports_each_device(database: DatabaseChoice) {
    let (_server, api) = start_with_api(database).await;
    let first = api.register("alice").await;
    let second = api.login("alice").await;
    let other_user = api.register("bob").await;
    api.stock_up(&first, 2).await;

    for caller in [&first, &second] {
        let devices = api.list_devices(caller).await;
        let listed: Vec<_> = devices
            .iter()
            .map(|device| {
                (
                    device.device_id.as_str(),
                    device.current,
                    device.key_packages_available,
                    device.signature_public_key.clone(),
                )
            })
            .collect();
        assert_eq!(
            listed,
            [
                (
                    first.device_id.as_str(),
                    caller.device_id == first.device_id,
                    2,
                    first.signer.to_public_vec()
                ),
                (
                    second.device_id.as_str(),
                    caller.device_id == second.device_id,
                    0,
                    second.signer.to_public_vec()
                ),
            ],
            "oldest first, current flag on the caller, last resort not counted"
        );
        for device in &devices {
            assert_eq!(device.display_name, "test device");
            assert!(device.created_at.is_some() && device.last_seen_at.is_some());
        }
    }
    assert_eq!(
        api.device_ids(&other_user).await,
        [other_user.device_id.as_str()]
    );
}

async fn last_seen_follows_activity_at_minute_granularity(database: DatabaseChoice) {
    let clock = Arc::new(AdjustableClock::default());
    let server = TestHomeserver::start_with(TestOptions::on(database).clock(clock.clone())).await;
    let api = Api::connect(&server).await;
    let active = api.register("alice").await;
    let _idle = api.login("alice").await; // never makes a request of its own
    // (created_at, last_seen_at) of each device, in seconds.
    let times = || async {
        let devices = api.list_devices(&active).await;
        let seconds = |timestamp: Option<prost_types::Timestamp>| timestamp.unwrap().seconds;
        devices
            .into_iter()
            .map(|device| (seconds(device.created_at), seconds(device.last_seen_at)))
            .collect::<Vec<_>>()
    };
    let [(active_created, active_seen), (idle_created, idle_seen)] = times().await[..] else {
        panic!("alice has two devices");
    };
    assert!(active_seen - active_created <= 1 && idle_seen - idle_created <= 1);

    // Within a minute of the last write, activity is not recorded again.
    clock.advance(Duration::from_secs(30));
    api.who_am_i(&active.token).await.expect("whoami");
    assert_eq!(
        times().await,
        [(active_created, active_seen), (idle_created, idle_seen)]
    );

    // Later it is, for the device that was active only.
    clock.advance(Duration::from_secs(90));
    api.who_am_i(&active.token).await.expect("whoami");
    let [(created, seen), idle_now] = times().await[..] else {
        panic!("alice has two devices");
    };
    assert_eq!(created, active_created);
    assert!(
        seen >= active_seen + 120,
        "last_seen_at {seen} did not move past {active_seen}"
    );
    assert_eq!(idle_now, (idle_created, idle_seen));
}

async fn removing_a_device_revokes_it(database: DatabaseChoice) {
    let (_server, api) = start_with_api(database).await;
    let removed = api.register("alice").await;
    let remover = api.login("alice").await;
    let claimer = api.register("bob").await;
    api.stock_up(&removed, 2).await;
    api.upload(&remover, key_packages(&remover, 1), None)
        .await
        .expect("upload");

    api.remove_device(&remover, &removed.device_id)
        .await
        .expect("removing one's own device");

    let revoked = "the access token is invalid or was revoked";
    assert_status(
        api.who_am_i(&removed.token).await,
        Code::Unauthenticated,
        revoked,
    );
    assert_status(
        api.try_stock(&removed.token).await,
        Code::Unauthenticated,
        revoked,
    );
    assert_eq!(api.device_ids(&remover).await, [remover.device_id.as_str()]);
    // Neither its ordinary packages nor its last-resort package is handed out.
    let claimed = api.claim(&claimer, "alice@localhost").await;
    let devices: Vec<_> = claimed.iter().map(|c| c.device_id.as_str()).collect();
    assert_eq!(devices, [remover.device_id.as_str()]);
    assert!(api.claim(&claimer, "alice@localhost").await.is_empty());

    // A device may remove itself too; then the account has no device left.
    api.remove_device(&remover, &remover.device_id)
        .await
        .expect("removing the calling device");
    assert_status(
        api.who_am_i(&remover.token).await,
        Code::Unauthenticated,
        revoked,
    );
}

async fn removing_another_users_device_is_not_found(database: DatabaseChoice) {
    let (_server, api) = start_with_api(database).await;
    let alice = api.register("alice").await;
    let bob = api.register("bob").await;
    api.upload(&bob, key_packages(&bob, 2), None)
        .await
        .expect("upload");

    for (device_id, code, message) in [
        (
            bob.device_id.clone(),
            Code::NotFound,
            format!("you have no device {}", bob.device_id),
        ),
        (
            "00000000000000ff".to_owned(),
            Code::NotFound,
            "you have no device 00000000000000ff".to_owned(),
        ),
        (
            String::new(),
            Code::InvalidArgument,
            "device_id is required".to_owned(),
        ),
    ] {
        assert_status(api.remove_device(&alice, &device_id).await, code, &message);
        // Nothing changed for either user.
        assert!(api.who_am_i(&bob.token).await.is_ok());
        assert_eq!(api.device_ids(&bob).await, [bob.device_id.as_str()]);
        assert_eq!(api.stock(&bob).await.available, 2);
        assert_eq!(api.device_ids(&alice).await, [alice.device_id.as_str()]);
    }
}

async fn logout_revokes_the_session(database: DatabaseChoice) {
    let (_server, api) = start_with_api(database).await;
    let leaving = api.register("alice").await;
    let staying = api.login("alice").await;
    let claimer = api.register("bob").await;
    api.stock_up(&leaving, 1).await;

    api.logout(&leaving.token).await.expect("logout");

    let revoked = "the access token is invalid or was revoked";
    assert_status(
        api.who_am_i(&leaving.token).await,
        Code::Unauthenticated,
        revoked,
    );
    assert_status(
        api.upload(&leaving, key_packages(&leaving, 1), None).await,
        Code::Unauthenticated,
        revoked,
    );
    assert_status(
        api.logout(&leaving.token).await,
        Code::Unauthenticated,
        revoked,
    );
    // The account's other device is untouched; the logged-out one is gone with
    // its packages.
    assert!(api.who_am_i(&staying.token).await.is_ok());
    assert_eq!(api.device_ids(&staying).await, [staying.device_id.as_str()]);
    assert!(api.claim(&claimer, "alice@localhost").await.is_empty());
}
