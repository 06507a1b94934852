//! Proof of possession at enrolment: Register and Login enrol a signature key
//! only for a device that signs, with that key, a transcript binding this
//! domain, the user, a live challenge of this homeserver used once, the key and
//! the display name. Every refusal changes nothing.

use crate::harness::{
    Api, assert_refused, device, login_request, new_signer, register_request, start_with_api,
};
use conclave_core::enrolment::EnrolmentTranscript;
use conclave_core::ids::{Domain, Username};
use conclave_proto::client::v1 as proto;
use conclave_test_support::{AdjustableClock, DatabaseChoice, TestHomeserver, TestOptions};
use openmls_basic_credential::SignatureKeyPair;
use std::sync::Arc;
use std::time::Duration;
use tonic::Code;

on_both_databases!(
    enrolment_with_a_proof_succeeds,
    someone_elses_key_cannot_be_enrolled,
    a_proof_for_another_user_or_domain_is_refused,
    expired_and_used_challenges_are_stale,
    forged_challenges_are_refused,
    a_restarted_server_accepts_the_challenges_it_issued_before,
);

const BAD_SIGNATURE: &str =
    "device.possession_signature is not a signature by device.signature_public_key";
const NOT_ISSUED_HERE: &str = "device.challenge was not issued by this homeserver";

/// What a device signs, and signs it with `signer`, for `key` (the key it claims).
struct Proof<'a> {
    domain: &'a str,
    username: &'a str,
    challenge: &'a [u8],
    key: &'a [u8],
    display_name: &'a str,
}

impl Proof<'_> {
    fn signed_by(&self, signer: &SignatureKeyPair) -> Vec<u8> {
        let domain: Domain = self.domain.parse().expect("a domain");
        let username: Username = self.username.parse().expect("a username");
        EnrolmentTranscript {
            domain: &domain,
            username: &username,
            challenge: self.challenge,
            signature_public_key: self.key,
            display_name: self.display_name,
        }
        .sign(signer)
        .expect("signing")
    }
}

/// A device of `signer`'s key with a fresh challenge and the signature `sign`
/// makes over it.
async fn proved_device(
    api: &Api,
    signer: &SignatureKeyPair,
    sign: impl FnOnce(&proto::EnrolmentChallenge, &[u8]) -> Vec<u8>,
) -> proto::DeviceEnrolment {
    let challenge = api.begin_enrolment().await;
    let key = signer.to_public_vec();
    proto::DeviceEnrolment {
        possession_signature: sign(&challenge, &key),
        challenge: challenge.challenge,
        ..device(signer, "test device")
    }
}

/// A device of `signer`'s key, properly proved for `username` of `domain`.
async fn device_for(
    api: &Api,
    signer: &SignatureKeyPair,
    domain: &str,
    username: &str,
) -> proto::DeviceEnrolment {
    proved_device(api, signer, |challenge, key| {
        Proof {
            domain,
            username,
            challenge: &challenge.challenge,
            key,
            display_name: "test device",
        }
        .signed_by(signer)
    })
    .await
}

fn registration(username: &str, device: proto::DeviceEnrolment) -> proto::RegisterRequest {
    proto::RegisterRequest {
        device: Some(device),
        ..register_request(username, &new_signer())
    }
}

fn login(username: &str, device: proto::DeviceEnrolment) -> proto::LoginRequest {
    proto::LoginRequest {
        device: Some(device),
        ..login_request(username, &new_signer())
    }
}

/// The user cannot log in: no account was made.
async fn assert_no_account(case: &str, api: &Api, username: &str) {
    let result = api.try_login(login_request(username, &new_signer())).await;
    assert_refused(
        case,
        result,
        Code::Unauthenticated,
        "wrong username or password",
    );
}

async fn enrolment_with_a_proof_succeeds(database: DatabaseChoice) {
    let (server, api) = start_with_api(database).await;
    let before_ms = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    let challenge = api.begin_enrolment().await;
    assert_eq!(challenge.domain, server.config().domain);
    let expires_at = challenge.expires_at.expect("an expiry");
    let expires_at_ms = expires_at.seconds * 1000 + i64::from(expires_at.nanos / 1_000_000);
    let lifetime_ms = expires_at_ms - before_ms;
    assert!(
        (5 * 60 * 1000 - 60_000..=5 * 60 * 1000 + 60_000).contains(&lifetime_ms),
        "a challenge lives five minutes, not {lifetime_ms} ms"
    );
    assert_ne!(
        api.begin_enrolment().await.challenge,
        challenge.challenge,
        "each challenge is fresh"
    );

    let signer = new_signer();
    let device = device_for(&api, &signer, "localhost", "alice").await;
    let session = api
        .try_register_as_is(registration("alice", device))
        .await
        .expect("a proved registration");
    assert_eq!(session.user_id, "alice@localhost");

    // Login names the user in full; the transcript holds the local part.
    let laptop = new_signer();
    let device = device_for(&api, &laptop, "localhost", "alice").await;
    let session = api
        .try_login_as_is(login("alice@localhost", device))
        .await
        .expect("a proved login");
    let devices = api.try_list_devices(&session.access_token).await.unwrap();
    assert_eq!(devices.len(), 2);
    assert!(
        devices
            .iter()
            .any(|device| device.signature_public_key == laptop.to_public_vec())
    );
}

/// Key squatting: mallory knows alice's public key, not its private key.
async fn someone_elses_key_cannot_be_enrolled(database: DatabaseChoice) {
    let (_server, api) = start_with_api(database).await;
    api.register("mallory").await;
    let alice_key = new_signer();
    let mallory_key = new_signer();
    let squat = |signature: Vec<u8>, challenge: Vec<u8>| proto::DeviceEnrolment {
        challenge,
        possession_signature: signature,
        ..device(&alice_key, "test device")
    };

    let signed_by_mallory = proved_device(&api, &alice_key, |challenge, key| {
        Proof {
            domain: "localhost",
            username: "mallory",
            challenge: &challenge.challenge,
            key,
            display_name: "test device",
        }
        .signed_by(&mallory_key)
    })
    .await;
    let fresh = api.begin_enrolment().await.challenge;
    for (case, device, message) in [
        ("signed by another key", signed_by_mallory, BAD_SIGNATURE),
        (
            "a signature of the wrong length",
            squat(vec![1; 64], fresh.clone()),
            BAD_SIGNATURE,
        ),
        (
            "no signature",
            squat(Vec::new(), fresh.clone()),
            "device.possession_signature is required",
        ),
        (
            "no challenge",
            squat(vec![1; 64], Vec::new()),
            "device.challenge is required",
        ),
    ] {
        let result = api
            .try_register_as_is(registration("mallory2", device.clone()))
            .await;
        assert_refused(case, result, Code::InvalidArgument, message);
        assert_no_account(case, &api, "mallory2").await;
        let result = api.try_login_as_is(login("mallory", device)).await;
        assert_refused(case, result, Code::InvalidArgument, message);
    }
    let mallory_phone = api.login("mallory").await;
    assert_eq!(
        api.list_devices(&mallory_phone).await.len(),
        2,
        "mallory's refused logins enrolled nothing"
    );

    // The key is still free for its owner, who can sign.
    api.try_register(register_request("alice", &alice_key))
        .await
        .expect("alice enrols her own key");
}

async fn a_proof_for_another_user_or_domain_is_refused(database: DatabaseChoice) {
    let (_server, api) = start_with_api(database).await;
    api.register("alice").await;
    let signer = new_signer();
    let for_bob = device_for(&api, &signer, "localhost", "bob").await;
    let other_domain = device_for(&api, &signer, "elsewhere.example", "carol").await;
    let renamed = {
        let mut device = device_for(&api, &signer, "localhost", "carol").await;
        device.display_name = "renamed".to_owned();
        device
    };
    for (case, username, device) in [
        ("a proof for bob", "carol", for_bob.clone()),
        ("a proof for another domain", "carol", other_domain.clone()),
        ("another display name than signed", "carol", renamed),
    ] {
        let result = api.try_register_as_is(registration(username, device)).await;
        assert_refused(case, result, Code::InvalidArgument, BAD_SIGNATURE);
        assert_no_account(case, &api, username).await;
    }
    // bob's proof does not log in as alice either, password or not.
    let result = api.try_login_as_is(login("alice", for_bob.clone())).await;
    assert_refused("login", result, Code::InvalidArgument, BAD_SIGNATURE);
    // The proof is checked before the password: a wrong password with a bad
    // proof is answered for the proof.
    let result = api
        .try_login_as_is(proto::LoginRequest {
            password: "not the password".to_owned(),
            ..login("alice", other_domain)
        })
        .await;
    assert_refused(
        "a bad proof and a wrong password",
        result,
        Code::InvalidArgument,
        BAD_SIGNATURE,
    );
    // The right one for bob still works: refusals used nothing up.
    api.try_register_as_is(registration("bob", for_bob))
        .await
        .expect("bob's own proof");
}

async fn expired_and_used_challenges_are_stale(database: DatabaseChoice) {
    let clock = Arc::new(AdjustableClock::default());
    let server = TestHomeserver::start_with(TestOptions::on(database).clock(clock.clone())).await;
    let api = Api::connect(&server).await;

    let signer = new_signer();
    let stale = device_for(&api, &signer, "localhost", "alice").await;
    clock.advance(Duration::from_secs(5 * 60));
    let result = api.try_register_as_is(registration("alice", stale)).await;
    assert_refused(
        "expired",
        result,
        Code::FailedPrecondition,
        "device.challenge expired",
    );
    assert_no_account("expired", &api, "alice").await;

    // A fresh challenge works, once.
    let fresh = device_for(&api, &signer, "localhost", "alice").await;
    let session = api
        .try_register_as_is(registration("alice", fresh.clone()))
        .await
        .expect("a fresh challenge");
    let used = "device.challenge was already used by an enrolment";
    // The same request again, even with the key freed by a logout.
    api.logout(&session.access_token).await.expect("logout");
    let result = api.try_login_as_is(login("alice", fresh.clone())).await;
    assert_refused("replayed", result, Code::FailedPrecondition, used);
    // The challenge, signed afresh for another user and key.
    let other = new_signer();
    let reused = proto::DeviceEnrolment {
        possession_signature: Proof {
            domain: "localhost",
            username: "bob",
            challenge: &fresh.challenge,
            key: &other.to_public_vec(),
            display_name: "test device",
        }
        .signed_by(&other),
        challenge: fresh.challenge.clone(),
        ..device(&other, "test device")
    };
    let result = api.try_register_as_is(registration("bob", reused)).await;
    assert_refused("reused for bob", result, Code::FailedPrecondition, used);
    assert_no_account("reused for bob", &api, "bob").await;
}

async fn forged_challenges_are_refused(database: DatabaseChoice) {
    let (_server, api) = start_with_api(database).await;
    // Another homeserver of the same domain name, with its own secret.
    let (_elsewhere, elsewhere_api) = start_with_api(database).await;
    let signer = new_signer();
    let genuine = api.begin_enrolment().await.challenge;
    let mut moved_in_time = genuine.clone();
    moved_in_time[7] ^= 0x01;
    let mut altered_mac = genuine.clone();
    let last = altered_mac.len() - 1;
    altered_mac[last] ^= 0x01;
    let foreign = elsewhere_api.begin_enrolment().await.challenge;
    let made_up = vec![7; genuine.len()];
    for (case, challenge, message) in [
        ("issue time altered", moved_in_time, NOT_ISSUED_HERE),
        ("MAC altered", altered_mac, NOT_ISSUED_HERE),
        ("another server's", foreign, NOT_ISSUED_HERE),
        ("made up", made_up, NOT_ISSUED_HERE),
        (
            "cut short",
            genuine[..20].to_vec(),
            "expected 56 bytes, got 20",
        ),
    ] {
        let signature = Proof {
            domain: "localhost",
            username: "alice",
            challenge: &challenge,
            key: &signer.to_public_vec(),
            display_name: "test device",
        }
        .signed_by(&signer);
        let device = proto::DeviceEnrolment {
            challenge,
            possession_signature: signature,
            ..device(&signer, "test device")
        };
        let result = api.try_register_as_is(registration("alice", device)).await;
        assert_refused(case, result, Code::InvalidArgument, message);
        assert_no_account(case, &api, "alice").await;
    }
}

/// The challenge secret is the domain's, kept in the database: a challenge
/// issued before a restart (or by another replica) is accepted after it.
async fn a_restarted_server_accepts_the_challenges_it_issued_before(database: DatabaseChoice) {
    let clock: Arc<AdjustableClock> = Arc::new(AdjustableClock::default());
    let server = TestHomeserver::start_with(TestOptions::on(database).clock(clock.clone())).await;
    let api = Api::connect(&server).await;
    let signer = new_signer();
    let device = device_for(&api, &signer, "localhost", "alice").await;
    let config = server.config().clone();
    let database = server.stop().await;

    let server = TestHomeserver::start_on(config, database, clock).await;
    let api = Api::connect(&server).await;
    api.try_register_as_is(registration("alice", device))
        .await
        .expect("the earlier challenge is accepted");
}
