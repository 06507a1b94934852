//! The `Client` API against a real homeserver.

use std::collections::{HashMap, HashSet};

use conclave_client::{ClientError, ReplenishPolicy};
use conclave_core::ids::{DeviceId, UserId};
use conclave_test_support::{TestHomeserver, TestOptions};
use tonic::Code;

use crate::support::{PASSWORD, SMALL_STOCK, TestDevice, login, register, server_url};

#[tokio::test]
async fn registration_publishes_a_full_stock() {
    let server = TestHomeserver::start().await;
    let (alice, enrolment) = register(&server, "alice", ReplenishPolicy::default()).await;

    let session = &enrolment.session;
    assert_eq!(session.user_id().to_string(), "alice@localhost");
    assert_eq!(
        session.credential_identity.to_string(),
        format!("alice@localhost/{}", session.device_id())
    );
    assert_eq!(enrolment.key_packages.published, 50);
    assert!(enrolment.key_packages.published_last_resort);
    assert_eq!(enrolment.key_packages.stock.available, 50);
    assert!(enrolment.key_packages.stock.has_last_resort);
    assert!(enrolment.key_packages.stock.earliest_expiry.is_some());

    // The stock is full, so replenishing costs a request and publishes nothing.
    let outcome = alice.client.replenish_key_packages().await.unwrap();
    assert_eq!(outcome.published, 0);
    assert!(!outcome.published_last_resort);
    assert_eq!(outcome.stock.available, 50);

    let outcome = alice.client.publish_key_packages(3).await.unwrap();
    assert_eq!(outcome.published, 3);
    assert_eq!(outcome.stock.available, 53);
    assert_eq!(
        alice.client.key_package_status().await.unwrap().available,
        53
    );
}

#[tokio::test]
async fn claims_hand_out_each_package_once_then_the_last_resort() {
    let server = TestHomeserver::start().await;
    let (alice, _) = register(&server, "alice", ReplenishPolicy::default()).await;
    // Bob has two devices with two packages each, and the first publishes one more.
    let (bob_laptop, laptop) = register(&server, "bob", SMALL_STOCK).await;
    let (bob_phone, phone) = login(&server, "bob@localhost", SMALL_STOCK).await;
    assert_eq!(laptop.key_packages.stock.available, 2);
    assert_eq!(phone.key_packages.stock.available, 2);
    let published = bob_laptop.client.publish_key_packages(1).await.unwrap();
    assert_eq!(published.stock.available, 3);

    let laptop_id = laptop.session.device_id().clone();
    let phone_id = phone.session.device_id().clone();
    let ordinary_stock = HashMap::from([(laptop_id.clone(), 3), (phone_id.clone(), 2)]);
    let bob: UserId = "bob@localhost".parse().unwrap();

    let mut handed_out: HashSet<Vec<u8>> = HashSet::new();
    let mut ordinary_claimed: HashMap<DeviceId, usize> = HashMap::new();
    let mut last_resort: HashMap<DeviceId, Vec<u8>> = HashMap::new();
    // Four claims use up the laptop's three packages and the phone's two; the
    // fifth must yield both last-resort packages again.
    for round in 0..5 {
        let claimed = alice.client.claim_key_packages(&bob).await.unwrap();
        let devices: Vec<&DeviceId> = claimed.iter().map(|package| &package.device_id).collect();
        let mut expected = vec![&laptop_id, &phone_id];
        expected.sort();
        assert_eq!(
            devices, expected,
            "round {round}: one package per device, by device id"
        );
        for package in claimed {
            assert_eq!(package.credential_identity.user_id(), &bob);
            assert_eq!(package.credential_identity.device_id(), &package.device_id);
            assert!(!package.key_package_bytes.is_empty());
            if package.last_resort {
                assert!(package.key_package.last_resort());
                // The last-resort package is reused, never used up.
                let first = last_resort
                    .entry(package.device_id.clone())
                    .or_insert_with(|| package.hash_ref.clone());
                assert_eq!(first, &package.hash_ref, "round {round}");
            } else {
                assert!(
                    !last_resort.contains_key(&package.device_id),
                    "round {round}: an ordinary package after the last-resort one"
                );
                assert!(
                    handed_out.insert(package.hash_ref.clone()),
                    "round {round}: a package was handed out twice"
                );
                *ordinary_claimed.entry(package.device_id).or_default() += 1;
            }
        }
    }
    assert_eq!(ordinary_claimed, ordinary_stock);
    assert_eq!(last_resort.len(), 2);

    let stock = bob_phone.client.key_package_status().await.unwrap();
    assert_eq!(stock.available, 0);
    assert!(stock.has_last_resort);

    // Running low triggers replenishment up to the target.
    let outcome = bob_phone.client.replenish_key_packages().await.unwrap();
    assert_eq!(outcome.published, 2);
    assert_eq!(outcome.stock.available, 2);
    let claimed = alice.client.claim_key_packages(&bob).await.unwrap();
    let phone_package = claimed
        .iter()
        .find(|package| package.device_id == phone_id)
        .unwrap();
    assert!(!phone_package.last_resort);
    assert!(handed_out.insert(phone_package.hash_ref.clone()));
}

#[tokio::test]
async fn state_survives_reopening_the_client() {
    let server = TestHomeserver::start().await;
    let (alice, enrolment) = register(&server, "alice", SMALL_STOCK).await;

    let alice = alice.reopen();
    let session = alice
        .client
        .session()
        .unwrap()
        .expect("the session was kept");
    assert_eq!(session, enrolment.session);
    assert_eq!(
        alice.client.remembered_server_url().unwrap(),
        Some(server_url(&server))
    );
    // The stored token and signature key still work: the server accepts both.
    let whoami = alice.client.whoami().await.unwrap();
    assert_eq!(whoami.credential_identity, session.credential_identity);
    let outcome = alice.client.publish_key_packages(2).await.unwrap();
    assert_eq!(outcome.stock.available, 4);

    let devices = alice.client.devices().await.unwrap();
    assert_eq!(devices.len(), 1);
    assert!(devices[0].current);
    assert_eq!(&devices[0].device_id, session.device_id());
    assert_eq!(
        devices[0].signature_public_key,
        session.signature_public_key
    );
    assert_eq!(devices[0].display_name, "test device");
    assert_eq!(devices[0].key_packages_available, 4);
}

#[tokio::test]
async fn logout_forgets_the_device_and_later_calls_fail_cleanly() {
    let server = TestHomeserver::start().await;
    let (bob_laptop, _) = register(&server, "bob", SMALL_STOCK).await;
    let (bob_phone, phone) = login(&server, "bob", SMALL_STOCK).await;
    assert_eq!(bob_laptop.client.devices().await.unwrap().len(), 2);

    let ended = bob_phone.client.logout().await.unwrap();
    assert_eq!(ended.session, phone.session);
    assert_eq!(ended.groups, [], "in no group");
    let bob_phone = bob_phone.reopen();
    assert_eq!(bob_phone.client.session().unwrap(), None);
    assert_eq!(stored_key_packages(&bob_phone), 0, "private keys deleted");
    let error = bob_phone.client.whoami().await.unwrap_err();
    assert!(matches!(error, ClientError::NotLoggedIn), "{error}");
    assert_eq!(error.to_string(), "not logged in: register or log in first");
    assert!(matches!(
        bob_phone.client.key_package_status().await.unwrap_err(),
        ClientError::NotLoggedIn
    ));

    // The server removed the device with its packages.
    let devices = bob_laptop.client.devices().await.unwrap();
    assert_eq!(devices.len(), 1);
    let bob: UserId = "bob@localhost".parse().unwrap();
    let claimed = bob_laptop.client.claim_key_packages(&bob).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_ne!(&claimed[0].device_id, phone.session.device_id());

    // The server URL is remembered, and the same state can log in again.
    let remembered = bob_phone.client.remembered_server_url().unwrap().unwrap();
    bob_phone
        .client
        .login(&remembered, "bob", PASSWORD, "phone again")
        .await
        .unwrap();
    assert_eq!(bob_laptop.client.devices().await.unwrap().len(), 2);
}

#[tokio::test]
async fn removing_another_device_ends_its_session() {
    let server = TestHomeserver::start().await;
    let (bob_laptop, laptop) = register(&server, "bob", SMALL_STOCK).await;
    let (bob_phone, phone) = login(&server, "bob", SMALL_STOCK).await;

    let error = bob_laptop
        .client
        .remove_device(laptop.session.device_id())
        .await
        .unwrap_err();
    assert!(
        matches!(error, ClientError::RemoveCurrentDevice(_)),
        "{error}"
    );

    bob_laptop
        .client
        .remove_device(phone.session.device_id())
        .await
        .unwrap();
    let error = bob_phone.client.whoami().await.unwrap_err();
    assert_eq!(error.rpc_code(), Some(Code::Unauthenticated), "{error}");
    // Logging out a device the server already forgot still clears it locally.
    bob_phone.client.logout().await.unwrap();
    assert_eq!(bob_phone.client.session().unwrap(), None);

    let unknown: DeviceId = "0000000000000000".parse().unwrap();
    let error = bob_laptop.client.remove_device(&unknown).await.unwrap_err();
    assert_eq!(error.rpc_code(), Some(Code::NotFound), "{error}");
}

#[tokio::test]
async fn refusals_are_one_clear_line() {
    let server = TestHomeserver::start().await;
    let (alice, _) = register(&server, "alice", SMALL_STOCK).await;
    let url = server_url(&server);

    // One state holds one device.
    let error = alice
        .client
        .login(&url, "alice", PASSWORD, "again")
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "already logged in as alice@localhost; log out first"
    );

    // The server's message comes through, on one line, with the code in words.
    let carol = TestDevice::new(SMALL_STOCK);
    let error = carol
        .client
        .register(&url, "alice", PASSWORD, None, "")
        .await
        .unwrap_err();
    assert_eq!(error.rpc_code(), Some(Code::AlreadyExists), "{error}");
    let message = error.to_string();
    assert!(message.starts_with("register failed: "), "{message}");
    assert!(message.ends_with("(already exists)"), "{message}");
    assert!(!message.contains('\n'), "{message}");
    assert_eq!(carol.client.session().unwrap(), None);

    let error = carol
        .client
        .login(&url, "alice", "wrong password", "")
        .await
        .unwrap_err();
    assert_eq!(error.rpc_code(), Some(Code::Unauthenticated), "{error}");

    // A login naming a user of another domain signs nothing for this server
    // and sends it no password.
    let error = carol
        .client
        .login(&url, "alice@elsewhere.example", PASSWORD, "")
        .await
        .unwrap_err();
    assert!(
        matches!(error, ClientError::InvalidResponse { .. }),
        "{error}"
    );
    let message = error.to_string();
    assert!(
        message.contains("the server is the homeserver of localhost, not of elsewhere.example"),
        "{message}"
    );
    assert_eq!(carol.client.session().unwrap(), None);

    // Malformed input is refused before any request.
    let error = carol
        .client
        .register(&url, "Carol!", PASSWORD, None, "")
        .await
        .unwrap_err();
    assert!(matches!(error, ClientError::InvalidId(_)), "{error}");

    let nobody: UserId = "nobody@localhost".parse().unwrap();
    let error = alice.client.claim_key_packages(&nobody).await.unwrap_err();
    assert_eq!(error.rpc_code(), Some(Code::NotFound), "{error}");
}

/// Rows in openmls's key-package table of a device's state file.
fn stored_key_packages(device: &TestDevice) -> i64 {
    let path = device
        .state_dir
        .path()
        .join(conclave_client::STATE_FILE_NAME);
    let connection = rusqlite::Connection::open(path).unwrap();
    connection
        .query_row("SELECT COUNT(*) FROM openmls_key_packages", [], |row| {
            row.get(0)
        })
        .unwrap()
}

#[tokio::test]
async fn a_refused_upload_leaves_no_keys_behind() {
    let server = TestHomeserver::start_with(
        TestOptions::default().configure(|config| config.key_packages.max_per_upload = 10),
    )
    .await;
    let (alice, _) = register(&server, "alice", SMALL_STOCK).await;
    // Two ordinary packages and the last-resort one, in each of the two
    // cipher suites the homeserver offers.
    assert_eq!(stored_key_packages(&alice), 6);

    let error = alice.client.publish_key_packages(20).await.unwrap_err();
    assert_eq!(error.rpc_code(), Some(Code::InvalidArgument), "{error}");
    assert!(
        error
            .to_string()
            .contains("key_packages has 20 entries, more than the limit of 10"),
        "{error}"
    );
    assert_eq!(stored_key_packages(&alice), 6);
    assert_eq!(
        alice.client.key_package_status().await.unwrap().available,
        2
    );

    // Five more classic ones and a new last-resort one.
    alice.client.publish_key_packages(5).await.unwrap();
    assert_eq!(stored_key_packages(&alice), 12);
}

/// A login refused by the homeserver's brute-force limits carries the delay to
/// wait, for the CLI to show.
#[tokio::test]
async fn a_limited_login_says_when_to_try_again() {
    let server = TestHomeserver::start_with(TestOptions::default().configure(|config| {
        config.limits.auth_attempts_per_minute = 1;
        config.limits.auth_attempt_burst = 1;
    }))
    .await;
    register(&server, "alice", SMALL_STOCK).await;

    let second = TestDevice::new(SMALL_STOCK);
    let error = second
        .client
        .login(&server_url(&server), "alice", PASSWORD, "second device")
        .await
        .unwrap_err();
    assert_eq!(error.rpc_code(), Some(Code::ResourceExhausted), "{error}");
    let retry_after = error.retry_after().expect("a retry delay");
    assert!(
        !retry_after.is_zero() && retry_after <= std::time::Duration::from_secs(60),
        "{retry_after:?}"
    );
    assert!(error.to_string().contains("try again in"), "{error}");
    assert_eq!(second.client.session().unwrap(), None);
}
