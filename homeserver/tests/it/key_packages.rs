//! The key-package directory: stock, one package per device per claim, each
//! ordinary package handed out once, the last-resort package after that, and the
//! claim rate limit.

use crate::harness::{
    Api, assert_refused, key_packages, last_resort_key_package, not_after, start_with_api,
    stock_counts,
};
use conclave_proto::client::v1 as proto;
use conclave_test_support::{DatabaseChoice, TestHomeserver, TestOptions};
use std::collections::HashSet;
use tonic::Code;

on_both_databases!(
    upload_reports_the_stock,
    claims_hand_out_each_package_once_then_the_last_resort,
    a_new_last_resort_package_replaces_the_old,
    claims_are_rate_limited_per_device,
);

/// Seconds since the epoch of a stock's earliest expiry.
fn earliest_expiry(stock: &proto::KeyPackageStock) -> Option<i64> {
    stock.earliest_expiry.map(|timestamp| timestamp.seconds)
}

async fn upload_reports_the_stock(database: DatabaseChoice) {
    let (_server, api) = start_with_api(database).await;
    let alice = api.register("alice").await;
    let other_device = api.login("alice").await;
    let empty = api.stock(&alice).await;
    assert_eq!(
        (stock_counts(&empty), earliest_expiry(&empty)),
        ((0, false), None)
    );

    let ordinary = key_packages(&alice, 3);
    let last_resort = last_resort_key_package(&alice);
    let earliest = ordinary
        .iter()
        .chain([&last_resort])
        .map(|bytes| not_after(bytes))
        .min()
        .map(|seconds| i64::try_from(seconds).unwrap());
    let uploaded = api
        .upload(&alice, ordinary, Some(last_resort))
        .await
        .expect("upload");
    assert_eq!(stock_counts(&uploaded), (3, true));
    assert_eq!(earliest_expiry(&uploaded), earliest);
    assert_eq!(api.stock(&alice).await, uploaded);

    let more = api
        .upload(&alice, key_packages(&alice, 2), None)
        .await
        .expect("upload");
    assert_eq!(stock_counts(&more), (5, true), "uploads add up");
    assert_eq!(earliest_expiry(&more), earliest);
    // The stock is the device's own: another device of the account has none.
    assert_eq!(stock_counts(&api.stock(&other_device).await), (0, false));
}

async fn claims_hand_out_each_package_once_then_the_last_resort(database: DatabaseChoice) {
    let (_server, api) = start_with_api(database).await;
    let claimer = api.register("alice").await;
    let with_last_resort = api.register("bob").await;
    let without_last_resort = api.login("bob").await;
    let with_nothing = api.login("bob").await;
    let first_batch = key_packages(&with_last_resort, 2);
    let last_resort = last_resort_key_package(&with_last_resort);
    let second_batch = key_packages(&without_last_resort, 1);
    api.upload(
        &with_last_resort,
        first_batch.clone(),
        Some(last_resort.clone()),
    )
    .await
    .expect("upload");
    api.upload(&without_last_resort, second_batch.clone(), None)
        .await
        .expect("upload");

    let mut uploaded: HashSet<Vec<u8>> = first_batch.into_iter().chain(second_batch).collect();
    let mut expected_devices = vec![
        with_last_resort.device_id.clone(),
        without_last_resort.device_id.clone(),
    ];
    expected_devices.sort();
    // Claim after claim: (devices that answer, whether with last resort).
    let rounds = [
        (expected_devices.clone(), false),
        (vec![with_last_resort.device_id.clone()], false),
        (vec![with_last_resort.device_id.clone()], true),
        (vec![with_last_resort.device_id.clone()], true),
    ];
    for (round, (devices, is_last_resort)) in rounds.into_iter().enumerate() {
        let claimed = api.claim(&claimer, "bob@localhost").await;
        let claimed_devices: Vec<_> = claimed.iter().map(|c| c.device_id.clone()).collect();
        assert_eq!(
            claimed_devices, devices,
            "round {round}: one entry per device, by id"
        );
        for package in &claimed {
            assert_eq!(
                package.credential_identity,
                format!("bob@localhost/{}", package.device_id),
                "round {round}"
            );
            assert_eq!(package.last_resort, is_last_resort, "round {round}");
            if is_last_resort {
                assert_eq!(package.key_package, last_resort, "round {round}");
            } else {
                assert!(
                    uploaded.remove(&package.key_package),
                    "round {round}: a package that was not uploaded, or handed out twice"
                );
            }
        }
        // The last-resort package is never used up.
        let stock = api.stock(&with_last_resort).await;
        let expected_available = u32::from(round == 0);
        assert_eq!(
            stock_counts(&stock),
            (expected_available, true),
            "round {round}"
        );
    }
    assert!(uploaded.is_empty(), "every ordinary package was handed out");
    for device in [&without_last_resort, &with_nothing] {
        assert_eq!(stock_counts(&api.stock(device).await), (0, false));
    }
    let listed: Vec<_> = api
        .list_devices(&with_nothing)
        .await
        .into_iter()
        .map(|device| device.key_packages_available)
        .collect();
    assert_eq!(listed, [0, 0, 0]);
}

async fn a_new_last_resort_package_replaces_the_old(database: DatabaseChoice) {
    let (_server, api) = start_with_api(database).await;
    let alice = api.register("alice").await;
    let bob = api.register("bob").await;
    let first = last_resort_key_package(&bob);
    let second = last_resort_key_package(&bob);

    for last_resort in [&first, &second] {
        let stock = api
            .upload(&bob, vec![], Some(last_resort.clone()))
            .await
            .expect("upload");
        assert_eq!(stock_counts(&stock), (0, true));
        let expiry = i64::try_from(not_after(last_resort)).unwrap();
        assert_eq!(earliest_expiry(&stock), Some(expiry));
        for _ in 0..2 {
            let claimed = api.claim(&alice, "bob@localhost").await;
            let packages: Vec<_> = claimed
                .iter()
                .map(|c| (&c.device_id, &c.key_package, c.last_resort))
                .collect();
            assert_eq!(packages, [(&bob.device_id, last_resort, true)]);
        }
    }
}

async fn claims_are_rate_limited_per_device(database: DatabaseChoice) {
    const PER_MINUTE: u32 = 3;
    let server = TestHomeserver::start_with(
        TestOptions::on(database)
            .configure(|config| config.key_packages.claims_per_minute = PER_MINUTE),
    )
    .await;
    let api = Api::connect(&server).await;
    let alice = api.register("alice").await;
    let eager = api.register("bob").await;
    let other_claimer = api.login("bob").await;
    api.upload(&alice, key_packages(&alice, 5), None)
        .await
        .expect("upload");

    for _ in 0..PER_MINUTE {
        assert_eq!(api.claim(&eager, "alice@localhost").await.len(), 1);
    }
    let result = api.try_claim(&eager.token, "alice@localhost").await;
    assert_refused(
        "claim over the limit",
        result,
        Code::ResourceExhausted,
        "too many key-package claims: at most 3 per minute",
    );
    assert_eq!(
        api.stock(&alice).await.available,
        2,
        "the refused claim took nothing"
    );
    // The limit is per claiming device, even of the same account.
    assert_eq!(api.claim(&other_claimer, "alice@localhost").await.len(), 1);
    assert_eq!(api.stock(&alice).await.available, 1);
}
