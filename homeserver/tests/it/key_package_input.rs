//! Uploads and claims the server must refuse, each with the right code, a message
//! that names the problem, and nothing stored or handed out.

use crate::harness::{
    Api, KeyPackageBuilder, TestDevice, assert_refused, key_packages, last_resort_key_package,
    new_signer, stock_counts,
};
use conclave_test_support::{AdjustableClock, DatabaseChoice, TestHomeserver, TestOptions};
use std::sync::Arc;
use std::time::Duration;
use tonic::Code;

on_both_databases!(
    bad_uploads_store_nothing,
    expired_key_packages_are_refused_and_never_handed_out,
    bad_claims_hand_out_nothing,
);

const MAX_PER_UPLOAD: usize = 4;
const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// A server with small limits, so every limit can be hit cheaply.
async fn start_with_small_limits(database: DatabaseChoice) -> TestHomeserver {
    TestHomeserver::start_with(TestOptions::on(database).configure(|config| {
        config.key_packages.max_per_upload = MAX_PER_UPLOAD;
        config.key_packages.max_lifetime_days = 1;
        config.client_api.max_message_bytes = MAX_MESSAGE_BYTES;
    }))
    .await
}

/// Asserts that each device's stock is what it was.
async fn assert_stock(case: &str, api: &Api, expected: &[(&TestDevice, (u32, bool))]) {
    for (device, counts) in expected {
        let stock = api.stock(device).await;
        assert_eq!(
            stock_counts(&stock),
            *counts,
            "{case}: stock of {}",
            device.identity
        );
    }
}

async fn bad_uploads_store_nothing(database: DatabaseChoice) {
    let server = start_with_small_limits(database).await;
    let api = Api::connect(&server).await;
    let alice = api.register("alice").await;
    let other_device = api.login("alice").await;
    let good = key_packages(&alice, MAX_PER_UPLOAD + 1);
    let last_resort = last_resort_key_package(&alice);
    let garbage = b"not a key package".to_vec();
    let truncated = good[0][..good[0].len() - 10].to_vec();
    let names_other_device = KeyPackageBuilder::new(&alice)
        .identity(&other_device.identity)
        .build();
    let stranger = new_signer();
    let signed_by_stranger = KeyPackageBuilder::new(&alice).signer(&stranger).build();
    let too_long = KeyPackageBuilder::new(&alice)
        .lifetime_seconds(2 * 24 * 3600)
        .build();
    let no_group_metadata = KeyPackageBuilder::new(&alice)
        .without_group_metadata()
        .build();
    let (g0, g1, g2) = (good[0].clone(), good[1].clone(), good[2].clone());

    let invalid = Code::InvalidArgument;
    let mismatch = format!(
        "key_packages[1] was rejected: key package credential names {} but the expected device is {}",
        other_device.identity, alice.identity
    );
    for (case, ordinary, last, code, message) in [
        (
            "empty upload",
            vec![],
            None,
            invalid,
            "the upload contains no key packages".to_owned(),
        ),
        (
            "garbage",
            vec![garbage.clone()],
            None,
            invalid,
            "key_packages[0] was rejected: key package does not decode".to_owned(),
        ),
        (
            "truncated package",
            vec![truncated],
            None,
            invalid,
            "key_packages[0] was rejected: key package does not decode".to_owned(),
        ),
        (
            "one bad package in a batch",
            vec![g0.clone(), g1.clone(), garbage.clone(), g2.clone()],
            None,
            invalid,
            "key_packages[2] was rejected: key package does not decode".to_owned(),
        ),
        (
            "credential names another device",
            vec![g0.clone(), names_other_device],
            None,
            invalid,
            mismatch,
        ),
        (
            "signed by another key pair",
            vec![signed_by_stranger],
            None,
            invalid,
            "key_packages[0] was rejected: key package signature key".to_owned(),
        ),
        (
            "lifetime longer than the maximum",
            vec![too_long],
            None,
            invalid,
            "key_packages[0] was rejected: key package lifetime spans".to_owned(),
        ),
        (
            "leaf without the group metadata capability",
            vec![g0.clone(), no_group_metadata],
            None,
            invalid,
            "key_packages[1] was rejected: key package leaf capabilities lack extension type 0xf0c1 (group metadata), which every conclave group requires".to_owned(),
        ),
        (
            "ordinary package as last resort",
            vec![g0.clone()],
            Some(g1.clone()),
            invalid,
            "last_resort_key_package lacks the last_resort_key_package extension".to_owned(),
        ),
        (
            "garbage as last resort",
            vec![g0.clone()],
            Some(garbage.clone()),
            invalid,
            "last_resort_key_package was rejected: key package does not decode".to_owned(),
        ),
        (
            "same package twice",
            vec![g0.clone(), g0.clone()],
            None,
            Code::AlreadyExists,
            "key_packages[1] was already uploaded".to_owned(),
        ),
        (
            "more than max_per_upload",
            good.clone(),
            None,
            Code::InvalidArgument,
            format!(
                "key_packages has {} entries, more than the limit of {MAX_PER_UPLOAD}",
                MAX_PER_UPLOAD + 1
            ),
        ),
        (
            "larger than max_message_bytes",
            vec![vec![0; 2 * MAX_MESSAGE_BYTES]],
            None,
            Code::ResourceExhausted,
            format!("larger than the limit of {MAX_MESSAGE_BYTES} bytes"),
        ),
    ] {
        let result = api.upload(&alice, ordinary, last).await;
        assert_refused(case, result, code, &message);
        assert_stock(
            case,
            &api,
            &[(&alice, (0, false)), (&other_device, (0, false))],
        )
        .await;
    }

    // None of the good packages refused above was stored: they upload now.
    let stock = api
        .upload(&alice, vec![g0, g1.clone()], Some(last_resort.clone()))
        .await
        .expect("the good packages upload");
    assert_eq!(stock_counts(&stock), (2, true));

    for (case, ordinary, last, message) in [
        (
            "a stored package again",
            vec![g2, g1],
            None,
            "key_packages[1] was already uploaded",
        ),
        (
            "the stored last resort again",
            vec![],
            Some(last_resort),
            "last_resort_key_package was already uploaded",
        ),
    ] {
        let result = api.upload(&alice, ordinary, last).await;
        assert_refused(case, result, Code::AlreadyExists, message);
        assert_stock(
            case,
            &api,
            &[(&alice, (2, true)), (&other_device, (0, false))],
        )
        .await;
    }
}

async fn expired_key_packages_are_refused_and_never_handed_out(database: DatabaseChoice) {
    let clock = Arc::new(AdjustableClock::default());
    let server = TestHomeserver::start_with(TestOptions::on(database).clock(clock.clone())).await;
    let api = Api::connect(&server).await;
    let alice = api.register("alice").await;
    let bob = api.register("bob").await;
    let hour = 3600;
    let day = 24 * hour;
    let long_lived = || {
        KeyPackageBuilder::new(&alice)
            .lifetime_seconds(30 * day)
            .build()
    };
    let short_lived = || KeyPackageBuilder::new(&alice).lifetime_seconds(hour);
    let (kept, dropped) = (long_lived(), short_lived().build());
    let stock = api
        .upload(
            &alice,
            vec![dropped, kept.clone()],
            Some(short_lived().last_resort().build()),
        )
        .await
        .expect("upload");
    assert_eq!(stock_counts(&stock), (2, true));
    let not_yet_uploaded = long_lived();
    let expiring = short_lived().build();

    clock.advance(Duration::from_secs(2 * day));

    // The expired packages no longer count, and are never handed out, not even the
    // last-resort one.
    assert_eq!(stock_counts(&api.stock(&alice).await), (1, false));
    let claimed = api.claim(&bob, "alice@localhost").await;
    let packages: Vec<_> = claimed
        .iter()
        .map(|c| (&c.key_package, c.last_resort))
        .collect();
    assert_eq!(packages, [(&kept, false)]);
    assert!(api.claim(&bob, "alice@localhost").await.is_empty());

    // One expired package refuses the whole batch.
    let result = api
        .upload(&alice, vec![not_yet_uploaded.clone(), expiring], None)
        .await;
    assert_refused(
        "expired package",
        result,
        Code::InvalidArgument,
        "key_packages[1] was rejected: key package expired at",
    );
    assert_eq!(stock_counts(&api.stock(&alice).await), (0, false));
    let stock = api
        .upload(&alice, vec![not_yet_uploaded], None)
        .await
        .expect("the unexpired package alone uploads");
    assert_eq!(stock_counts(&stock), (1, false));
}

async fn bad_claims_hand_out_nothing(database: DatabaseChoice) {
    let server = start_with_small_limits(database).await;
    let api = Api::connect(&server).await;
    let alice = api.register("alice").await;
    let claimer = api.register("bob").await;
    api.stock_up(&alice, 2).await;

    for (case, user_id, code, message) in [
        (
            "unknown user",
            "nobody@localhost",
            Code::NotFound,
            "user nobody@localhost does not exist",
        ),
        (
            "no domain",
            "alice",
            Code::InvalidArgument,
            r#"user id "alice" is invalid"#,
        ),
        (
            "uppercase",
            "Alice@localhost",
            Code::InvalidArgument,
            r#"user id "Alice@localhost" is invalid"#,
        ),
        ("empty", "", Code::InvalidArgument, "user_id is required"),
        (
            "user of another domain",
            "alice@elsewhere.example",
            Code::FailedPrecondition,
            "this homeserver serves only localhost",
        ),
    ] {
        let result = api.try_claim(&claimer.token, user_id).await;
        assert_refused(case, result, code, message);
        assert_stock(case, &api, &[(&alice, (2, true))]).await;
    }
}
