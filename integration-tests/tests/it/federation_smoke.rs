//! Federation without groups, through the client library: a user's claim for
//! a user of another domain, forwarded by the claimer's homeserver and answered
//! from the other domain's directory, in every direction between three domains;
//! and a domain whose homeserver restarts is reached again, by its peers and by
//! its own clients.

use std::collections::BTreeSet;

use conclave_test_support::{DatabaseChoice, TestNetwork};
use tonic::Code;

use crate::harness::{ALICE_BOB_AND_CAROL, THREE_DOMAINS, User};

on_both_databases!(
    key_packages_are_claimed_across_domains,
    a_restarted_domain_is_reached_again,
);

async fn key_packages_are_claimed_across_domains(database: DatabaseChoice) {
    let network = TestNetwork::start(&THREE_DOMAINS, database).await;
    let [alice, bob, carol] = User::register_all(&network, ALICE_BOB_AND_CAROL).await;
    let everyone = [&alice, &bob, &carol];
    let initial_stock = bob.stock().await.available;

    // Each user claims each other one: the claimer's homeserver forwards the
    // claim, and the package comes from the claimed user's own directory.
    let mut handed_out = BTreeSet::new();
    for claimed_user in everyone {
        for claimer in everyone {
            if claimer.user_id() == claimed_user.user_id() {
                continue;
            }
            let before = claimed_user.stock().await.available;
            let claimed = claimer.claim(claimed_user).await;
            let case = format!("{} claims {}", claimer.user_id(), claimed_user.user_id());
            assert_eq!(claimed.len(), 1, "{case}: one package per device");
            let package = &claimed[0];
            assert_eq!(
                package.credential_identity,
                claimed_user.identity(),
                "{case}"
            );
            assert_eq!(package.device_id, *claimed_user.identity().device_id());
            assert!(!package.last_resort, "{case}: the stock is not empty");
            assert!(
                handed_out.insert(package.hash_ref.clone()),
                "{case}: a package handed out twice"
            );
            let after = claimed_user.stock().await.available;
            assert_eq!(after, before - 1, "{case}: taken from the owner's stock");
        }
    }
    assert_eq!(bob.stock().await.available, initial_stock - 2);
}

async fn a_restarted_domain_is_reached_again(database: DatabaseChoice) {
    let mut network = TestNetwork::start(&["a.example", "b.example"], database).await;
    let [alice, bob] = User::register_all(&network, ["alice@a.example", "bob@b.example"]).await;
    let federation_address = network.federation_address("b.example");
    let initial_stock = bob.stock().await.available;

    // b.example is down: a.example finds nobody at its endpoint, bob's client
    // finds nobody at its server, and nothing is consumed.
    network.stop("b.example").await;
    let error = alice
        .client
        .claim_key_packages(bob.user_id())
        .await
        .expect_err("b.example is down");
    assert_eq!(error.rpc_code(), Some(Code::Unavailable), "{error}");
    assert!(
        error.to_string().contains("b.example is unreachable"),
        "{error}"
    );
    let error = bob
        .client
        .key_package_status()
        .await
        .expect_err("bob's homeserver is down");
    assert_eq!(error.rpc_code(), Some(Code::Unavailable), "{error}");

    // b.example comes back on its database and federation address; a.example
    // reconnects by itself, and bob's client at the URL it registered with.
    network.start_again("b.example").await;
    assert_eq!(network.federation_address("b.example"), federation_address);
    assert_eq!(bob.stock().await.available, initial_stock);
    let claimed = alice.claim(&bob).await;
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].credential_identity, bob.identity());
    assert_eq!(bob.stock().await.available, initial_stock - 1);

    // A restart in one go, with the claim in the other direction.
    network.restart("b.example").await;
    assert_eq!(bob.claim(&alice).await.len(), 1);
    assert_eq!(alice.claim(&bob).await.len(), 1);
    assert_eq!(bob.stock().await.available, initial_stock - 2);
}
