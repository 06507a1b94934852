//! Concurrent claims: each ordinary package goes to exactly one claimer, however
//! many claims race for it, and the rest get the last-resort package; and writes
//! from many devices at once all succeed.

use crate::harness::{
    Api, TestDevice, assert_refused, key_packages, last_resort_key_package, login_request,
    new_signer, register_request, start_with_api, stock_counts,
};
use conclave_homeserver::SystemClock;
use conclave_homeserver::config::RegistrationPolicy;
use conclave_test_support::{DatabaseChoice, TestHomeserver, TestOptions};
use std::collections::HashSet;
use std::sync::Arc;
use tokio::sync::Barrier;
use tonic::{Code, Status};

on_both_databases!(
    concurrent_claims_hand_out_each_package_once,
    concurrent_uploads_and_logins_all_succeed,
    concurrent_registrations_neither_overspend_nor_duplicate,
);

const PACKAGES: usize = 50;
const CLAIMS: usize = 80;
const CLAIMERS: usize = 8;

async fn concurrent_claims_hand_out_each_package_once(database: DatabaseChoice) {
    let server = TestHomeserver::start_with(
        TestOptions::on(database).configure(|config| config.key_packages.claims_per_minute = 1000),
    )
    .await;
    let api = Api::connect(&server).await;
    let bob = api.register("bob").await;
    let uploaded: HashSet<Vec<u8>> = key_packages(&bob, PACKAGES).into_iter().collect();
    let last_resort = last_resort_key_package(&bob);
    api.upload(
        &bob,
        uploaded.iter().cloned().collect(),
        Some(last_resort.clone()),
    )
    .await
    .expect("upload");
    let mut claimers: Vec<Arc<TestDevice>> = vec![Arc::new(api.register("alice").await)];
    for _ in 1..CLAIMERS {
        claimers.push(Arc::new(api.login("alice").await));
    }

    let results = all_at_once(&server, CLAIMS, |index, api| {
        let claimer = claimers[index % CLAIMERS].clone();
        async move { api.claim(&claimer, "bob@localhost").await }
    })
    .await;

    let mut ordinary = HashSet::new();
    let mut last_resort_claims = 0;
    for claimed in results {
        assert_eq!(claimed.len(), 1, "bob has one device");
        let package = &claimed[0];
        if package.last_resort {
            assert_eq!(package.key_package, last_resort);
            last_resort_claims += 1;
        } else {
            assert!(
                uploaded.contains(&package.key_package),
                "not an uploaded package"
            );
            assert!(
                ordinary.insert(package.key_package.clone()),
                "a package was handed out twice"
            );
        }
    }
    assert_eq!(ordinary.len(), PACKAGES);
    assert_eq!(last_resort_claims, CLAIMS - PACKAGES);
    assert_eq!(stock_counts(&api.stock(&bob).await), (0, true));
}

const WRITERS: usize = 20;

/// Runs `count` copies of `work` at once, each on its own connection, all
/// starting together, and returns their results in order.
async fn all_at_once<T, F, Fut>(server: &TestHomeserver, count: usize, work: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(usize, Api) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
{
    let start_line = Arc::new(Barrier::new(count));
    let mut tasks = Vec::with_capacity(count);
    for index in 0..count {
        let api = Api::connect(server).await;
        let start_line = start_line.clone();
        let job = work(index, api);
        tasks.push(tokio::spawn(async move {
            start_line.wait().await;
            job.await
        }));
    }
    let mut results = Vec::with_capacity(count);
    for task in tasks {
        results.push(task.await.expect("a task panicked"));
    }
    results
}

async fn concurrent_uploads_and_logins_all_succeed(database: DatabaseChoice) {
    let (server, api) = start_with_api(database).await;
    let mut devices = Vec::with_capacity(WRITERS);
    for index in 0..WRITERS {
        devices.push(Arc::new(api.register(&format!("user{index}")).await));
    }

    let uploads = all_at_once(&server, WRITERS, |index, api| {
        let device = devices[index].clone();
        let packages = key_packages(&device, 1);
        async move { api.upload(&device, packages, None).await }
    })
    .await;
    for (index, upload) in uploads.into_iter().enumerate() {
        let stock = upload.unwrap_or_else(|status| panic!("upload {index} failed: {status:?}"));
        assert_eq!(stock_counts(&stock), (1, false), "upload {index}");
    }

    let logins = all_at_once(&server, WRITERS, |_, api| async move {
        api.try_login(login_request("user0", &new_signer())).await
    })
    .await;
    for (index, login) in logins.into_iter().enumerate() {
        login.unwrap_or_else(|status| panic!("login {index} failed: {status:?}"));
    }
    assert_eq!(api.device_ids(&devices[0]).await.len(), WRITERS + 1);
}

const REGISTRATIONS: usize = 5;

/// Counts successes, and checks every failure has `code` and mentions `fragment`.
fn successes<T: std::fmt::Debug>(
    results: Vec<Result<T, Status>>,
    code: Code,
    fragment: &str,
) -> usize {
    let mut succeeded = 0;
    for (index, result) in results.into_iter().enumerate() {
        match result {
            Ok(_) => succeeded += 1,
            Err(_) => {
                assert_refused(&format!("registration {index}"), result, code, fragment);
            }
        }
    }
    succeeded
}

async fn concurrent_registrations_neither_overspend_nor_duplicate(database: DatabaseChoice) {
    let server = TestHomeserver::start_with(
        TestOptions::on(database).registration(RegistrationPolicy::Token),
    )
    .await;
    let create_token = |uses| {
        let config = server.config().clone();
        async move {
            conclave_homeserver::admin::create_registration_token(
                config,
                Arc::new(SystemClock),
                uses,
                None,
            )
            .await
            .expect("creating a registration token")
            .token
        }
    };
    // REGISTRATIONS devices register at once with `token`, as one username or
    // as one username each.
    let race = |token: String, one_username: bool| {
        all_at_once(&server, REGISTRATIONS, move |index, api| {
            let username = match one_username {
                true => "same".to_owned(),
                false => format!("user{index}"),
            };
            let mut request = register_request(&username, &new_signer());
            request.registration_token = token.clone();
            async move { api.try_register(request).await }
        })
    };

    // New users race for a single-use token: one gets it.
    let single_use = create_token(1).await;
    let results = race(single_use, false).await;
    let spent = "the registration token is unknown, expired, used up or revoked";
    assert_eq!(successes(results, Code::PermissionDenied, spent), 1);

    // Devices race for one username with a token good for two: one account is
    // made, and the losers give their use of the token back.
    let two_uses = create_token(2).await;
    let results = race(two_uses.clone(), true).await;
    let taken = "username same is already taken";
    assert_eq!(successes(results, Code::AlreadyExists, taken), 1);
    let api = Api::connect(&server).await;
    let mut last = register_request("last", &new_signer());
    last.registration_token = two_uses;
    api.try_register(last)
        .await
        .expect("the token's second use is left");
}
