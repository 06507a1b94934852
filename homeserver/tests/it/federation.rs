//! Federation between homeservers of different domains, all in this process
//! (`conclave_test_support::TestNetwork`): a development CA and certificates
//! made at test time, a homeserver per domain (a.example on 127.0.0.1,
//! b.example on 127.0.0.2, c.example on 127.0.0.3) with a database of its own,
//! mutual TLS between them.
//!
//! What is proved: a client's claim for a user of another domain is forwarded by
//! its homeserver and answered from that domain's directory (each package once,
//! the last-resort one after that, rate-limited per requester); VerifyCredential
//! answers for the domain's devices; and every way of acting for a domain one is
//! not certified for, or of calling without a trusted certificate, is refused
//! with nothing consumed.

use crate::groups_harness::{Change, Client, EVENT_TIMEOUT};
use crate::harness::{
    Api, TestDevice, assert_refused, channel, key_packages, last_resort_key_package, stock_counts,
    within_timeout,
};
use conclave_core::ids::{CredentialIdentity, Domain};
use conclave_federation::client::{CallError, RefusalKind};
use conclave_homeserver::config::Config;
use conclave_proto::client::v1 as client_proto;
use conclave_proto::federation::v1 as proto;
use conclave_proto::federation::v1::federation_service_client::FederationServiceClient;
use conclave_test_support::{
    Backoff, DatabaseChoice, IssuedCertificate, RawFailure, TestNetwork, TestPki, within,
};
use std::collections::BTreeMap;
use std::sync::Arc;
use tonic::Code;
use tonic::transport::Channel;

on_both_databases!(claims_are_forwarded_to_the_users_homeserver);

fn domain(name: &str) -> Domain {
    name.parse().expect("a valid domain")
}

/// Bob on b.example with two devices: the first with two ordinary packages, the
/// second with one, both with a last-resort package.
struct Bob {
    first: TestDevice,
    second: TestDevice,
    first_ordinary: Vec<Vec<u8>>,
    second_ordinary: Vec<Vec<u8>>,
    first_last_resort: Vec<u8>,
    second_last_resort: Vec<u8>,
}

impl Bob {
    async fn register(api: &Api) -> Bob {
        let first = api.register("bob").await;
        let second = api.login("bob").await;
        let first_ordinary = key_packages(&first, 2);
        let second_ordinary = key_packages(&second, 1);
        let first_last_resort = last_resort_key_package(&first);
        let second_last_resort = last_resort_key_package(&second);
        for (device, ordinary, last_resort) in [
            (&first, &first_ordinary, &first_last_resort),
            (&second, &second_ordinary, &second_last_resort),
        ] {
            api.upload(device, ordinary.clone(), Some(last_resort.clone()))
                .await
                .expect("bob's upload");
        }
        Bob {
            first,
            second,
            first_ordinary,
            second_ordinary,
            first_last_resort,
            second_last_resort,
        }
    }

    /// Both devices' stocks, as b.example reports them.
    async fn stocks(&self, api: &Api) -> [(u32, bool); 2] {
        [
            stock_counts(&api.stock(&self.first).await),
            stock_counts(&api.stock(&self.second).await),
        ]
    }
}

/// Alice on a.example and [`Bob`] on b.example, each with a client of their
/// homeserver: `(a, alice, b, bob)`.
async fn alice_and_bob(network: &TestNetwork) -> (Api, TestDevice, Api, Bob) {
    let a = Api::connect(network.server("a.example")).await;
    let b = Api::connect(network.server("b.example")).await;
    let alice = a.register("alice").await;
    let bob = Bob::register(&b).await;
    (a, alice, b, bob)
}

/// Asserts that a federation call failed with a refusal of `kind` whose message
/// contains `fragment`.
#[track_caller]
fn assert_call_refused<T: std::fmt::Debug>(
    case: &str,
    result: Result<T, CallError>,
    kind: RefusalKind,
    fragment: &str,
) {
    match result {
        Err(CallError::Refused {
            kind: refused,
            message,
            ..
        }) => {
            assert_eq!(refused, kind, "{case}: {message}");
            assert!(
                message.contains(fragment),
                "{case}: {message:?} does not mention {fragment:?}"
            );
        }
        other => panic!("{case}: expected a {kind:?} refusal, got {other:?}"),
    }
}

async fn claims_are_forwarded_to_the_users_homeserver(database: DatabaseChoice) {
    let network = TestNetwork::start(&["a.example", "b.example"], database).await;
    let (a, alice, b, bob) = alice_and_bob(&network).await;
    assert_eq!(bob.stocks(&b).await, [(2, true), (1, true)]);

    // One package per device, ordinary ones first, each handed out once.
    let first_claim = a.claim(&alice, "bob@b.example").await;
    let mut by_device: BTreeMap<String, client_proto::ClaimedKeyPackage> = first_claim
        .into_iter()
        .map(|claimed| (claimed.credential_identity.clone(), claimed))
        .collect();
    assert_eq!(by_device.len(), 2, "one package per device of bob");
    let first = by_device
        .remove(&bob.first.identity)
        .expect("bob's first device");
    let second = by_device
        .remove(&bob.second.identity)
        .expect("bob's second device");
    for (claimed, device, ordinary) in [
        (&first, &bob.first, &bob.first_ordinary),
        (&second, &bob.second, &bob.second_ordinary),
    ] {
        assert_eq!(claimed.device_id, device.device_id);
        assert_eq!(claimed.signature_public_key, device.signer.to_public_vec());
        assert!(!claimed.last_resort);
        assert!(
            ordinary.contains(&claimed.key_package),
            "an uploaded package"
        );
    }
    assert_eq!(bob.stocks(&b).await, [(1, true), (0, true)]);

    // The second claim takes the first device's other package and the second
    // device's last-resort one; the third gets last-resort packages only.
    let second_claim = a.claim(&alice, "bob@b.example").await;
    let handed_out: Vec<(&str, &[u8], bool)> = second_claim
        .iter()
        .map(|claimed| {
            (
                claimed.credential_identity.as_str(),
                claimed.key_package.as_slice(),
                claimed.last_resort,
            )
        })
        .collect();
    let other_first = bob
        .first_ordinary
        .iter()
        .find(|package| **package != first.key_package)
        .expect("bob's first device has two packages");
    let mut expected = vec![
        (bob.first.identity.as_str(), other_first.as_slice(), false),
        (
            bob.second.identity.as_str(),
            bob.second_last_resort.as_slice(),
            true,
        ),
    ];
    expected.sort_by_key(|(identity, _, _)| identity.rsplit('/').next().map(str::to_owned));
    assert_eq!(handed_out, expected, "ordered by device id");
    assert_eq!(bob.stocks(&b).await, [(0, true), (0, true)]);

    let third_claim = a.claim(&alice, "bob@b.example").await;
    let last_resort: Vec<(&[u8], bool)> = third_claim
        .iter()
        .map(|claimed| (claimed.key_package.as_slice(), claimed.last_resort))
        .collect();
    let mut expected_last_resort = [
        (&bob.first, bob.first_last_resort.as_slice()),
        (&bob.second, bob.second_last_resort.as_slice()),
    ];
    expected_last_resort.sort_by(|x, y| x.0.device_id.cmp(&y.0.device_id));
    assert_eq!(
        last_resort,
        expected_last_resort.map(|(_, package)| (package, true))
    );
    assert_eq!(bob.stocks(&b).await, [(0, true), (0, true)]);

    // Claims of local users still go to the local directory.
    let alice_device = a.login("alice").await;
    a.upload(&alice_device, key_packages(&alice_device, 1), None)
        .await
        .expect("alice's upload");
    let local = a.claim(&alice, "alice@a.example").await;
    assert_eq!(local.len(), 1);
    assert_eq!(local[0].credential_identity, alice_device.identity);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_verified_by_their_domain() {
    within_timeout(async {
        let network = TestNetwork::start(&["a.example", "b.example"], DatabaseChoice::Sqlite).await;
        let b = Api::connect(network.server("b.example")).await;
        let bob = b.register("bob").await;
        let bob_logged_out = b.login("bob").await;
        b.logout(&bob_logged_out.token).await.expect("logout");
        let a_calls = network.federation_client_as("a.example", &["b.example"]);
        let identity = |text: &str| -> CredentialIdentity { text.parse().expect("an identity") };
        let bob_key = bob.signer.to_public_vec();
        let other_key = crate::harness::new_signer().to_public_vec();
        for (case, credential, key, expected) in [
            ("bob's device and key", bob.identity.clone(), &bob_key, true),
            (
                "bob's device, another key",
                bob.identity.clone(),
                &other_key,
                false,
            ),
            (
                "an unknown device of bob",
                "bob@b.example/00000000000000ff".to_owned(),
                &bob_key,
                false,
            ),
            (
                "an unknown user",
                format!("nobody@b.example/{}", bob.device_id),
                &bob_key,
                false,
            ),
            (
                "a logged-out device",
                bob_logged_out.identity.clone(),
                &bob_logged_out.signer.to_public_vec(),
                false,
            ),
        ] {
            let answer = a_calls
                .verify_credential(&identity(&credential), key)
                .await
                .unwrap_or_else(|error| panic!("{case}: {error}"));
            assert_eq!(answer, expected, "{case}");
        }

        // b answers for b.example only, and wants a key.
        let mut raw = a_calls
            .peer_client(&domain("b.example"))
            .expect("b is a peer");
        for (case, credential, key, fragment) in [
            (
                "an identity of another domain",
                format!("carol@c.example/{}", bob.device_id),
                bob_key.clone(),
                "this homeserver answers for b.example only",
            ),
            (
                "no key",
                bob.identity.clone(),
                vec![],
                "signature_public_key is required",
            ),
            ("malformed", "bob".to_owned(), bob_key.clone(), "is invalid"),
        ] {
            let result = raw
                .verify_credential(proto::VerifyCredentialRequest {
                    asking_domain: "a.example".to_owned(),
                    credential_identity: credential,
                    signature_public_key: key,
                    key_package_ref: Vec::new(),
                })
                .await;
            assert_refused(case, result, Code::InvalidArgument, fragment);
        }
    })
    .await;
}

/// A claim of bob's packages on b, made directly over a channel of the test's own.
fn claim_request(requester: &str) -> proto::ClaimKeyPackagesRequest {
    proto::ClaimKeyPackagesRequest {
        requester: requester.to_owned(),
        user_id: "bob@b.example".to_owned(),
        cipher_suite: 0,
    }
}

/// Calls b's ClaimKeyPackages over a channel made by tonic's own TLS, trusting
/// the network's CA and presenting `identity` if any. Returns the answer, or how
/// the attempt failed.
async fn claim_with_tonic_tls(
    network: &TestNetwork,
    identity: Option<&IssuedCertificate>,
) -> Result<proto::ClaimKeyPackagesResponse, RawFailure> {
    network
        .raw_federation_client("b.example", identity)
        .await?
        .claim_key_packages(claim_request("mallory@a.example/0000000000000001"))
        .await
        .map(tonic::Response::into_inner)
        .map_err(RawFailure::Call)
}

/// The attempt was refused during the TLS handshake, before any handler ran. In
/// TLS 1.3 the server checks the client certificate after the client considers
/// the handshake done, so the refusal reaches the client either while connecting
/// or on its first call, as the server's alert or as a closed connection (which
/// of these is a race, and so is the status code tonic makes of it). What counts
/// is that the failure is the transport's: a status sent by a handler carries no
/// transport error.
#[track_caller]
fn assert_refused_at_tls(case: &str, result: Result<proto::ClaimKeyPackagesResponse, RawFailure>) {
    match result {
        Err(RawFailure::Connect(error)) => eprintln!("{case}: refused while connecting: {error}"),
        Err(RawFailure::Call(status))
            if std::error::Error::source(&status)
                .is_some_and(|source| source.is::<tonic::transport::Error>()) => {}
        other => panic!("{case}: expected a refusal at the TLS layer, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_cannot_act_for_other_domains() {
    within_timeout(async {
        let network = TestNetwork::start(
            &["a.example", "b.example", "c.example"],
            DatabaseChoice::Sqlite,
        )
        .await;
        let b = Api::connect(network.server("b.example")).await;
        let bob = Bob::register(&b).await;
        let b_endpoint = network.endpoint("b.example");
        let mut c_calls = network
            .federation_client_as("c.example", &["b.example"])
            .peer_client(&domain("b.example"))
            .expect("b is a peer of c");
        let d = network.pki().issue("d.example");
        let mut d_calls = network
            .pki()
            .federation_client(&d, &[("b.example", b_endpoint.clone())])
            .peer_client(&domain("b.example"))
            .expect("b is a peer of d");

        // c holds a valid certificate for c.example, and tries to act for others.
        for (case, requester, code, fragment) in [
            (
                "c claims for a device of a.example",
                "alice@a.example/0000000000000001",
                Code::PermissionDenied,
                r#"the client certificate is valid for ["c.example"], not for a.example"#,
            ),
            (
                "c claims for a device of b.example",
                "bob@b.example/0000000000000001",
                Code::PermissionDenied,
                r#"the client certificate is valid for ["c.example"], not for b.example"#,
            ),
            (
                "c claims with a malformed requester",
                "carol",
                Code::InvalidArgument,
                "requester:",
            ),
        ] {
            let result = c_calls.claim_key_packages(claim_request(requester)).await;
            assert_refused(case, result, code, fragment);
            assert_eq!(bob.stocks(&b).await, [(2, true), (1, true)], "{case}");
        }
        let result = c_calls
            .verify_credential(proto::VerifyCredentialRequest {
                asking_domain: "a.example".to_owned(),
                credential_identity: bob.first.identity.clone(),
                signature_public_key: bob.first.signer.to_public_vec(),
                key_package_ref: Vec::new(),
            })
            .await;
        assert_refused(
            "c verifies a credential for a.example",
            result,
            Code::PermissionDenied,
            "not for a.example",
        );

        // d is certified by the same CA, but is no peer of b.
        let result = d_calls
            .claim_key_packages(claim_request("dave@d.example/0000000000000001"))
            .await;
        assert_refused(
            "d is not a peer",
            result,
            Code::PermissionDenied,
            "d.example is not a federation peer of this homeserver",
        );

        // c may act for c.example, but b answers for b.example's users only and
        // never relays to a third domain.
        let result = c_calls
            .claim_key_packages(proto::ClaimKeyPackagesRequest {
                requester: "carol@c.example/0000000000000001".to_owned(),
                user_id: "alice@a.example".to_owned(),
                cipher_suite: 0,
            })
            .await;
        assert_refused(
            "c claims a user of a.example from b",
            result,
            Code::FailedPrecondition,
            "this homeserver serves only b.example",
        );

        // Without a trusted client certificate, the handshake fails.
        let untrusted = TestPki::new().issue("a.example");
        for (case, identity) in [
            ("no client certificate", None),
            ("a client certificate of another CA", Some(&untrusted)),
        ] {
            let result = claim_with_tonic_tls(&network, identity).await;
            assert_refused_at_tls(case, result);
            assert_eq!(bob.stocks(&b).await, [(2, true), (1, true)], "{case}");
        }
        // The control: the same tonic client with a's real certificate gets through,
        // and its claim for a device of a.example (which that certificate speaks
        // for) succeeds.
        let a_certificate = network.certificate("a.example");
        let claimed = claim_with_tonic_tls(&network, Some(a_certificate))
            .await
            .expect("a's certificate speaks for a.example");
        assert_eq!(claimed.key_packages.len(), 2);
        assert_eq!(bob.stocks(&b).await, [(1, true), (0, true)]);

        // Plaintext HTTP/2 to the federation port gets nowhere.
        let plaintext = Channel::from_shared(b_endpoint.replace("https://", "http://"))
            .expect("a valid URL")
            .connect()
            .await;
        if let Ok(channel) = plaintext {
            let result = FederationServiceClient::new(channel)
                .claim_key_packages(claim_request("mallory@a.example/0000000000000001"))
                .await;
            assert!(result.is_err(), "a plaintext claim succeeded: {result:?}");
        }
        assert_eq!(bob.stocks(&b).await, [(1, true), (0, true)]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_certificates_must_match() {
    within_timeout(async {
        // b pins a to another certificate of a.example, also from the trusted CA.
        let pki = TestPki::new();
        let other_a_pin = pki.issue("a.example").pin.to_string();
        let network = TestNetwork::builder(&["a.example", "b.example"], DatabaseChoice::Sqlite)
            .pki(pki)
            .configure(move |name, certificates, config| match name {
                // a pins b correctly: a's side of the handshake succeeds.
                "a.example" => {
                    pin(config, "b.example", &certificates["b.example"].pin.to_string());
                }
                _ => pin(config, "a.example", &other_a_pin),
            })
            .start()
            .await;
        let (a, alice, b, bob) = alice_and_bob(&network).await;
        let result = a.try_claim(&alice.token, "bob@b.example").await;
        assert_refused(
            "b pins another certificate of a",
            result,
            Code::FailedPrecondition,
            &format!(
                "b.example refused the request: the client certificate (SHA-256 {}) is not the one pinned for a.example",
                network.certificate("a.example").pin
            ),
        );
        assert_eq!(bob.stocks(&b).await, [(2, true), (1, true)]);

        // a pins b to another certificate of b.example: a refuses b's server
        // certificate before anything is sent.
        let pki = TestPki::new();
        let other_b_pin = pki.issue("b.example").pin.to_string();
        let network = TestNetwork::builder(&["a.example", "b.example"], DatabaseChoice::Sqlite)
            .pki(pki)
            .configure_domain("a.example", move |config| {
                pin(config, "b.example", &other_b_pin);
            })
            .start()
            .await;
        let (a, alice, b, bob) = alice_and_bob(&network).await;
        let result = a.try_claim(&alice.token, "bob@b.example").await;
        assert_refused(
            "a pins another certificate of b",
            result,
            Code::Unavailable,
            "is not the one pinned for this peer",
        );
        assert_eq!(bob.stocks(&b).await, [(2, true), (1, true)]);

        // Both pins right: the claim goes through.
        let network = TestNetwork::builder(&["a.example", "b.example"], DatabaseChoice::Sqlite)
            .configure(|name, certificates, config| {
                let peer = if name == "a.example" { "b.example" } else { "a.example" };
                pin(config, peer, &certificates[peer].pin.to_string());
            })
            .start()
            .await;
        let (a, alice, b, bob) = alice_and_bob(&network).await;
        assert_eq!(a.claim(&alice, "bob@b.example").await.len(), 2);
        assert_eq!(bob.stocks(&b).await, [(1, true), (0, true)]);
    })
    .await;
}

/// Pins `peer` in `config` to `sha256`.
fn pin(config: &mut Config, peer: &str, sha256: &str) {
    config
        .federation
        .peers
        .get_mut(peer)
        .expect("a configured peer")
        .pinned_sha256 = Some(sha256.to_owned());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_unreachable_peers() {
    within_timeout(async {
        let mut network =
            TestNetwork::start(&["a.example", "b.example"], DatabaseChoice::Sqlite).await;
        let (a, alice, _, bob) = alice_and_bob(&network).await;

        let result = a.try_claim(&alice.token, "dave@d.example").await;
        assert_refused(
            "a domain that is not a peer",
            result,
            Code::FailedPrecondition,
            "domain d.example is not a federation peer of this homeserver",
        );

        // b stops: a's claim finds nobody there, and consumes nothing.
        network.stop("b.example").await;
        let result = a.try_claim(&alice.token, "bob@b.example").await;
        assert_refused(
            "b is down",
            result,
            Code::Unavailable,
            "b.example is unreachable",
        );

        // b comes back on its database and address: a reconnects by itself.
        network.start_again("b.example").await;
        let b = Api::connect(network.server("b.example")).await;
        assert_eq!(bob.stocks(&b).await, [(2, true), (1, true)]);
        assert_eq!(a.claim(&alice, "bob@b.example").await.len(), 2);
        assert_eq!(bob.stocks(&b).await, [(1, true), (0, true)]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_are_rate_limited_per_requester() {
    within_timeout(async {
        let network = TestNetwork::builder(&["a.example", "b.example"], DatabaseChoice::Sqlite)
            .configure_domain("b.example", |config| {
                config.key_packages.claims_per_minute = 2;
            })
            .start()
            .await;
        let (a, alice, b, bob) = alice_and_bob(&network).await;
        let carol = a.register("carol").await;
        a.claim(&alice, "bob@b.example").await;
        a.claim(&alice, "bob@b.example").await;
        assert_eq!(bob.stocks(&b).await, [(0, true), (0, true)]);
        // Stock of ordinary packages is gone; refill, so a refused claim would show.
        b.upload(&bob.first, key_packages(&bob.first, 1), None)
            .await
            .expect("bob's upload");
        let result = a.try_claim(&alice.token, "bob@b.example").await;
        assert_refused(
            "alice's third claim in a minute",
            result,
            Code::ResourceExhausted,
            "b.example refused the request: too many key-package claims: at most 2 per minute",
        );
        assert_eq!(bob.stocks(&b).await, [(1, true), (0, true)]);
        // The limit is per requester: carol, on the same peer, still may.
        assert_eq!(a.claim(&carol, "bob@b.example").await.len(), 2);
        assert_eq!(bob.stocks(&b).await, [(0, true), (0, true)]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_requests_are_limited_in_rate_and_size() {
    within_timeout(async {
        let network = TestNetwork::builder(
            &["a.example", "b.example", "c.example"],
            DatabaseChoice::Sqlite,
        )
        .configure_domain("b.example", |config| {
            config.federation.peer_requests_per_minute = 3;
            config.federation.max_message_bytes = 1024;
        })
        .start()
        .await;
        let b = Api::connect(network.server("b.example")).await;
        let bob = b.register("bob").await;
        let identity: CredentialIdentity = bob.identity.parse().expect("an identity");
        let key = bob.signer.to_public_vec();
        let a_calls = network.federation_client_as("a.example", &["b.example"]);
        let c_calls = network.federation_client_as("c.example", &["b.example"]);
        for _ in 0..3 {
            assert!(
                a_calls
                    .verify_credential(&identity, &key)
                    .await
                    .expect("verify")
            );
        }
        let result = a_calls.verify_credential(&identity, &key).await;
        assert_call_refused(
            "a's fourth request in a minute",
            result,
            RefusalKind::ResourceExhausted,
            "a.example sent more than 3 federation requests per minute",
        );
        let text =
            conclave_test_support::metrics::scrape_ok(network.server("b.example").http_address())
                .await;
        let refused_for_rate =
            "conclave_ratelimit_rejections_total{limit=\"federation_peer_requests\"}";
        assert_eq!(
            conclave_test_support::metrics::sample(&text, refused_for_rate),
            Some(1.0),
            "{text}"
        );
        // Each peer has a count of its own.
        assert!(
            c_calls
                .verify_credential(&identity, &key)
                .await
                .expect("verify")
        );

        let result = c_calls.verify_credential(&identity, &vec![7; 4096]).await;
        assert_call_refused(
            "a request over the size limit",
            result,
            RefusalKind::ResourceExhausted,
            "larger than the limit of 1024 bytes",
        );
    })
    .await;
}

on_both_databases!(a_group_spans_domains_through_the_hub);

/// Syncs `client` until `done` holds for it, for at most [`EVENT_TIMEOUT`]:
/// events from another domain arrive through the hub's outbox, asynchronously,
/// and Fetch offers no wait.
async fn sync_until(client: &mut Client, done: impl Fn(&Client) -> bool) {
    let what = format!("{}'s expected events", client.identity());
    within(EVENT_TIMEOUT, &what, async {
        let mut backoff = Backoff::new();
        loop {
            client.sync().await;
            if done(client) {
                return;
            }
            backoff.pause().await;
        }
    })
    .await;
}

/// The hub path with members on three domains, at the RPC level: a hub (a)
/// accepts members of b and c after asking their homeservers, delivers Welcomes
/// and events through its outbox, and judges submissions its followers relay;
/// followers deliver to their devices through the same Fetch as local groups.
async fn a_group_spans_domains_through_the_hub(choice: DatabaseChoice) {
    within_timeout(async {
        let network = TestNetwork::start(&["a.example", "b.example", "c.example"], choice).await;
        let mut alice =
            Client::register(&channel(network.server("a.example")).await, "alice").await;
        let mut bob = Client::register(&channel(network.server("b.example")).await, "bob").await;
        let mut carol =
            Client::register(&channel(network.server("c.example")).await, "carol").await;
        alice.create_group().await;
        let invited = alice.invite(&["bob@b.example", "carol@c.example"]).await;
        assert_eq!(invited.epoch, 1);

        sync_until(&mut bob, |bob| bob.group.is_some()).await;
        sync_until(&mut carol, |carol| carol.group.is_some()).await;
        assert_eq!(bob.epoch(), 1);
        assert_eq!(bob.group_id(), alice.group_id());

        // A follower's device submits through its own homeserver, which relays to
        // the hub and returns the hub's sequence number.
        let sent = bob.send("hello from b").await;
        assert_eq!(sent.seq, invited.seq + 1);
        let sent = carol.send("hello from c").await;
        assert_eq!(sent.seq, invited.seq + 2);
        sync_until(&mut alice, |alice| alice.received.len() == 2).await;
        sync_until(&mut bob, |bob| bob.received.len() == 1).await;
        sync_until(&mut carol, |carol| carol.received.len() == 1).await;
        let texts = |client: &Client| -> Vec<String> {
            client
                .received
                .iter()
                .map(|received| String::from_utf8_lossy(&received.plaintext).into_owned())
                .collect()
        };
        assert_eq!(texts(&alice), ["hello from b", "hello from c"]);
        assert_eq!(texts(&bob), ["hello from c"]);
        assert_eq!(texts(&carol), ["hello from b"]);
        // Each follower's copy has the hub's sequence numbers.
        assert_eq!(bob.summary().await.last_seq, sent.seq);
        assert_eq!(bob.summary().await.member_count, 3);

        // A follower's member commits (removing carol); the hub orders it and
        // everyone, carol included, sees it.
        let carol_identity = carol.identity().to_owned();
        let too_late = carol.encrypt(b"still here?");
        let leaf = bob.leaf_of(&carol_identity);
        let removal = bob.commit(Change::Remove(vec![leaf])).await;
        sync_until(&mut alice, |alice| alice.epoch() == removal.epoch).await;
        sync_until(&mut carol, |carol| carol.group_seq == removal.seq).await;
        let request = carol.message_request(too_late);
        let result = carol.try_send_message(request).await;
        assert_refused(
            "a removed member of c sends",
            result,
            Code::PermissionDenied,
            "not a member",
        );
        // The removed domain receives nothing after its removal: once the hub's
        // outbox has nothing left for b or c (so whatever the hub was to send c
        // has been confirmed by c), carol has nothing new.
        alice.send("after carol left").await;
        sync_until(&mut bob, |bob| bob.received.len() == 2).await;
        network.outbox_drained("a.example", "b.example").await;
        network.outbox_drained("a.example", "c.example").await;
        assert!(
            carol.fetch(0).await.is_empty(),
            "c got events after its removal"
        );
    })
    .await;
}
/// Spans seen, as (name, rpc.method, trace_id), once their trace id is recorded.
type SeenSpans = Arc<std::sync::Mutex<Vec<(String, String, String)>>>;

thread_local! {
    /// Where the spans made on this thread go, while a trace test records them.
    static RECORDING: std::cell::RefCell<Option<SeenSpans>> = const { std::cell::RefCell::new(None) };
}

/// Whether spans made on this thread are being recorded.
fn recording_here() -> bool {
    RECORDING.with(|recording| recording.borrow().is_some())
}

/// Records the spans of the threads that [`record_spans`] names, with their
/// OpenTelemetry trace ids.
struct SpanRecorder {
    /// Spans made on a recording thread, by id: (name, rpc.method).
    pending: std::sync::Mutex<BTreeMap<u64, (String, String)>>,
}

#[derive(Default)]
struct Fields {
    method: String,
    trace_id: String,
}

impl tracing::field::Visit for Fields {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "rpc.method" {
            self.method = value.to_owned();
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "trace_id" {
            self.trace_id = format!("{value:?}");
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for SpanRecorder {
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        self.pending.lock().unwrap().insert(
            id.into_u64(),
            (attrs.metadata().name().to_owned(), fields.method),
        );
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut fields = Fields::default();
        values.record(&mut fields);
        if fields.trace_id.is_empty() {
            return;
        }
        let Some((name, method)) = self.pending.lock().unwrap().get(&id.into_u64()).cloned() else {
            return;
        };
        RECORDING.with(|recording| {
            if let Some(seen) = recording.borrow().as_ref() {
                seen.lock().unwrap().push((name, method, fields.trace_id));
            }
        });
    }
}

/// Stops recording this thread's spans when dropped.
struct RecordingGuard;

impl Drop for RecordingGuard {
    fn drop(&mut self) {
        RECORDING.with(|recording| recording.borrow_mut().take());
    }
}

/// Records the spans made on this thread (with OpenTelemetry trace ids) until
/// the guard is dropped. A trace test runs on a current-thread runtime, so
/// every span of its homeservers is made on its thread.
///
/// The recorder is the process's global subscriber, installed once, and picks
/// the recording threads itself; spans of other threads are disabled for it.
/// A subscriber set as one thread's default (`set_default`) would miss spans:
/// while it is the only scoped subscriber, `tracing` caches each callsite's
/// interest as the default subscriber of whichever thread reaches the callsite
/// first says, so a callsite first reached by a concurrent test (with no
/// subscriber) stays disabled for the recording thread too.
fn record_spans() -> (SeenSpans, RecordingGuard) {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        use opentelemetry::trace::TracerProvider as _;
        use tracing_subscriber::Layer as _;
        use tracing_subscriber::layer::SubscriberExt as _;
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let layers = SpanRecorder {
            pending: Default::default(),
        }
        .and_then(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")))
        // A dynamic filter: asked at every span, on the thread that makes it
        // (a plain `filter_fn` is asked once per callsite, on whichever thread
        // reaches it first, and its answer kept).
        .with_filter(tracing_subscriber::filter::dynamic_filter_fn(|_, _| {
            recording_here()
        }));
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layers))
            .expect("no other global subscriber in the homeserver's tests");
        // Again, now that the recorder is the global default: for a callsite
        // that another thread was registering while the recorder was set.
        tracing::callsite::rebuild_interest_cache();
    });
    let seen = SeenSpans::default();
    RECORDING.with(|recording| *recording.borrow_mut() = Some(seen.clone()));
    (seen, RecordingGuard)
}

#[tokio::test(flavor = "current_thread")]
async fn a_forwarded_claim_is_one_trace_across_domains() {
    let (seen, _default) = record_spans();

    let network = TestNetwork::start(&["a.example", "b.example"], DatabaseChoice::Sqlite).await;
    let (a, alice, _, _bob) = alice_and_bob(&network).await;
    seen.lock().unwrap().clear();
    let claimed = a.claim(&alice, "bob@b.example").await;
    assert_eq!(claimed.len(), 2);

    let seen = seen.lock().unwrap().clone();
    eprintln!("{seen:#?}");
    let client_claims: Vec<_> = seen
        .iter()
        .filter(|(name, method, _)| name == "client_request" && method == "ClaimKeyPackages")
        .collect();
    let federation_claims: Vec<_> = seen
        .iter()
        .filter(|(name, method, _)| name == "federation_request" && method == "ClaimKeyPackages")
        .collect();
    assert_eq!(client_claims.len(), 1, "{seen:?}");
    assert_eq!(federation_claims.len(), 1, "{seen:?}");
    assert_eq!(client_claims[0].2, federation_claims[0].2);
    assert_eq!(client_claims[0].2.len(), 32);
}

/// One trace follows a message from a follower's device to the hub and back out
/// through the hub's outbox: the device's SendMessage at b.example, the relay to
/// a.example (SubmitToHub), the outbox's delivery (which continues the trace the
/// event was submitted in) and b.example's DeliverEvents.
#[tokio::test(flavor = "current_thread")]
async fn a_relayed_message_and_its_delivery_are_one_trace() {
    let (seen, _default) = record_spans();

    let network = TestNetwork::start(&["a.example", "b.example"], DatabaseChoice::Sqlite).await;
    let mut alice = Client::register(&channel(network.server("a.example")).await, "alice").await;
    let mut bob = Client::register(&channel(network.server("b.example")).await, "bob").await;
    alice.create_group().await;
    alice.invite(&["bob@b.example"]).await;
    sync_until(&mut bob, |bob| bob.group.is_some()).await;

    seen.lock().unwrap().clear();
    let sent = bob.send("traced").await;
    sync_until(&mut alice, |alice| alice.received.len() == 1).await;
    sync_until(&mut bob, |bob| bob.group_seq == sent.seq).await;

    let seen = seen.lock().unwrap().clone();
    // An empty `rpc_method` matches spans of any (or no) method.
    let trace_of = |name: &str, rpc_method: &str| -> Vec<String> {
        seen.iter()
            .filter(|(span, method, _)| {
                span == name && (rpc_method.is_empty() || method == rpc_method)
            })
            .map(|(_, _, trace_id)| trace_id.clone())
            .collect()
    };
    let sends = trace_of("client_request", "SendMessage");
    assert_eq!(sends.len(), 1, "{seen:#?}");
    let trace = &sends[0];
    assert_eq!(trace.len(), 32, "{seen:#?}");
    assert_eq!(
        trace_of("federation_request", "SubmitToHub"),
        std::slice::from_ref(trace),
        "{seen:#?}"
    );
    assert!(
        trace_of("federation_delivery", "").contains(trace),
        "the outbox's delivery continues the trace: {seen:#?}"
    );
    assert!(
        trace_of("federation_request", "DeliverEvents").contains(trace),
        "b.example's DeliverEvents is in the trace: {seen:#?}"
    );
}

/// A client's `traceparent`: the homeserver's `client_request` continues the
/// client's trace (its trace id; the sampling decision stays the server's, as
/// `telemetry::client_context`'s tests show), unless `[telemetry]
/// trust_client_trace_context` is off, when it starts a trace of its own.
#[tokio::test(flavor = "current_thread")]
async fn a_client_request_continues_the_client_s_trace_unless_told_not_to() {
    const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    let (seen, _default) = record_spans();
    for trust in [true, false] {
        let server =
            conclave_test_support::TestHomeserver::start_with(conclave_test_support::TestOptions {
                configure: Box::new(move |config: &mut Config| {
                    config.telemetry.trust_client_trace_context = trust;
                }),
                ..conclave_test_support::TestOptions::default()
            })
            .await;
        seen.lock().unwrap().clear();
        let mut accounts =
            client_proto::account_service_client::AccountServiceClient::new(channel(&server).await);
        let mut request = tonic::Request::new(client_proto::BeginEnrolmentRequest {});
        let traceparent = format!("00-{CLIENT_TRACE}-00f067aa0ba902b7-00");
        request
            .metadata_mut()
            .insert("traceparent", traceparent.parse().expect("ASCII"));
        accounts
            .begin_enrolment(request)
            .await
            .expect("an enrolment challenge");
        let traces: Vec<String> = seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(name, method, _)| name == "client_request" && method == "BeginEnrolment")
            .map(|(_, _, trace_id)| trace_id.clone())
            .collect();
        assert_eq!(traces.len(), 1, "trust {trust}: {traces:?}");
        assert_eq!(traces[0].len(), 32);
        assert_eq!(
            traces[0] == CLIENT_TRACE,
            trust,
            "trust {trust}: {traces:?}"
        );
        server.stop().await;
    }
}

/// Events that reach a follower in one batch each keep the trace they were
/// sent in: the follower's `stream_delivery` of each continues that event's
/// own trace (carried per event in `FederatedEvent.traceparent`), not the
/// trace of the batch's first event or of the follower's catch-up.
#[tokio::test(flavor = "current_thread")]
async fn events_of_one_batch_keep_their_own_traces_on_the_follower() {
    let (seen, _default) = record_spans();

    let mut network = TestNetwork::start(&["a.example", "b.example"], DatabaseChoice::Sqlite).await;
    let mut alice = Client::register(&channel(network.server("a.example")).await, "alice").await;
    let mut bob = Client::register(&channel(network.server("b.example")).await, "bob").await;
    alice.create_group().await;
    alice.invite(&["bob@b.example"]).await;
    sync_until(&mut bob, |bob| bob.group.is_some()).await;
    network.outbox_drained("a.example", "b.example").await;

    // While b is down, two messages, in two requests (two traces), wait in the
    // hub's outbox; they reach b in one batch when it is back.
    network.stop("b.example").await;
    seen.lock().unwrap().clear();
    let first = alice.send("first").await;
    let second = alice.send("second").await;
    network.start_again("b.example").await;
    bob.reconnect(&channel(network.server("b.example")).await);
    let mut stream = bob.subscribe().await;
    within(EVENT_TIMEOUT, "both messages on bob's stream", async {
        while stream.next_group_event().await.seq < second.seq {}
    })
    .await;

    let seen = seen.lock().unwrap().clone();
    let traces_of = |name: &str, rpc_method: &str| -> Vec<String> {
        seen.iter()
            .filter(|(span, method, _)| span == name && method == rpc_method)
            .map(|(_, _, trace_id)| trace_id.clone())
            .collect()
    };
    let sends = traces_of("client_request", "SendMessage");
    assert_eq!(sends.len(), 2, "{seen:#?}");
    assert_ne!(sends[0], sends[1], "two requests, two traces");
    assert_eq!(second.seq, first.seq + 1);
    // One batch, whichever way it came: b's catch-up on start (FetchEvents)
    // or the hub's outbox (DeliverEvents, in the first message's trace). A
    // DeliverEvents in the second message's trace would mean a batch of its own.
    let deliveries = traces_of("federation_request", "DeliverEvents");
    assert!(
        !deliveries.contains(&sends[1]),
        "the messages came in one batch: {seen:#?}"
    );
    let streamed = traces_of("stream_delivery", "");
    for (message, trace) in sends.iter().enumerate() {
        assert!(
            streamed.contains(trace),
            "message {message}'s trace does not reach bob's stream: {seen:#?}"
        );
    }
}
