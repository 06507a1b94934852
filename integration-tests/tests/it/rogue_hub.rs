//! A configured peer acting as a hub it is not: c.example, with its own valid
//! certificate, delivers to b.example (with a raw federation client) groups it
//! made up with openmls, adding bob's device. b.example refuses each with a
//! precise status and stores nothing, and bob's device sees nothing of it:
//!
//! - (a) garbage for commit, Welcome and tree: INVALID_ARGUMENT;
//! - (b) a well-formed commit and Welcome for a key package of bob's device
//!   that b.example's directory never handed out (made up by c): INVALID_ARGUMENT;
//! - (c) the same for a real key package of bob's that the directory handed to
//!   a.example, not to c.example: INVALID_ARGUMENT;
//! - (d) well-formed events of a group whose hub is a.example, or of a group
//!   b.example hosts itself: FAILED_PRECONDITION;
//! - (e) a commit adding a device b.example does not have: FAILED_PRECONDITION;
//! - (f) a departure notice for bob's device, which b.example did not delete:
//!   INVALID_ARGUMENT (members' clients would remove it on the notice's word).
//!
//! The control: the same made-up group, adding a key package of bob's that
//! b.example handed to c.example, is accepted (c may host a group and invite
//! bob, as any peer may). And a real group of a.example keeps working.

use conclave_client::GroupId;
use conclave_core::ids::CredentialIdentity;
use conclave_core::mls::CIPHERSUITE;
use conclave_proto::federation::v1 as proto;
use conclave_test_support::{DatabaseChoice, IssuedCertificate, TestNetwork};
use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
use openmls::prelude::{
    BasicCredential, CredentialWithKey, KeyPackage, KeyPackageIn,
    MIXED_PLAINTEXT_WIRE_FORMAT_POLICY, MlsGroup, MlsGroupCreateConfig, OpenMlsProvider as _,
    ProtocolVersion,
};
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::OpenMlsRustCrypto;
use tonic::Code;

use crate::harness::{THREE_DOMAINS, User, assert_refused, call, deliver, group_of};

on_both_databases!(a_peer_cannot_invent_groups_at_a_follower);

/// The device c.example's made-up groups are created by.
const EVE: &str = "eve@c.example/00000000000000e1";
/// A device id no device of b.example has.
const UNKNOWN_BOB_DEVICE: &str = "bob@b.example/ffffffffffffffff";

async fn a_peer_cannot_invent_groups_at_a_follower(database: DatabaseChoice) {
    let network = TestNetwork::start(&THREE_DOMAINS, database).await;
    let [alice, bob] = User::register_all(&network, ["alice@a.example", "bob@b.example"]).await;
    // A group a.example hosts and b.example follows, and one b.example hosts.
    let hosted_by_a = group_of(&alice, "hosted by a", &[&bob]).await;
    let hosted_by_b = bob.create_group("hosted by b").await;
    network.outbox_drained("a.example", "b.example").await;
    alice.receive().await;
    bob.receive().await;
    let bob_groups = bob.client.groups().expect("bob's groups").len();
    let copy_of_a = network
        .stored_group("b.example", hosted_by_a.as_bytes())
        .await;
    let own_of_b = network
        .stored_group("b.example", hosted_by_b.as_bytes())
        .await;

    let c = network.pki().issue("c.example");
    let a = network.pki().issue("a.example");
    let bob_identity = bob.identity();
    // Real key packages of bob's device, handed by b.example's directory to c
    // and to a.
    let claimed_by_c = claim_key_package(&network, &c, "carol@c.example/00000000000000c1").await;
    let claimed_by_a = claim_key_package(&network, &a, "alice@a.example/00000000000000a9").await;
    let eve = Device::new(EVE);
    // Made up by c: bob's identity, c's key. b.example never saw it.
    let made_up = Device::new(&bob_identity.to_string()).key_package();
    let unknown_device = Device::new(UNKNOWN_BOB_DEVICE).key_package();

    let new_group = |name: &str| GroupId::from_bytes(format!("made up by c: {name}").into_bytes());
    let garbage = b"garbage".to_vec();
    let garbage_batch = proto::FederatedEvent {
        seq: 1,
        kind: proto::EventKind::Commit as i32,
        epoch: 0,
        sender: EVE.to_owned(),
        message: garbage.clone(),
        added: vec![bob_identity.to_string()],
        welcome: garbage.clone(),
        ratchet_tree: garbage,
        ..Default::default()
    };
    let cases = [
        (
            "(a) garbage commit, Welcome and tree",
            new_group("a"),
            garbage_batch,
            Code::InvalidArgument,
            "event 1: message: it is not an MLSMessage".to_owned(),
        ),
        (
            "(b) a Welcome for a key package the directory never handed out",
            new_group("b"),
            eve.group_adding(&new_group("b"), &made_up, &bob_identity),
            Code::InvalidArgument,
            unclaimed(&bob_identity),
        ),
        (
            "(c) a Welcome for a key package handed to a.example",
            new_group("c"),
            eve.group_adding(&new_group("c"), &claimed_by_a, &bob_identity),
            Code::InvalidArgument,
            unclaimed(&bob_identity),
        ),
        (
            "(d) events of a group a.example hosts",
            hosted_by_a.clone(),
            eve.group_adding(&hosted_by_a, &claimed_by_c, &bob_identity),
            Code::FailedPrecondition,
            "is hosted by a.example, not by c.example".to_owned(),
        ),
        (
            "(d) events of a group b.example hosts",
            hosted_by_b.clone(),
            eve.group_adding(&hosted_by_b, &claimed_by_c, &bob_identity),
            Code::FailedPrecondition,
            "is hosted by b.example, not by c.example".to_owned(),
        ),
        (
            "(e) a commit adding a device b.example does not have",
            new_group("e"),
            eve.group_adding(
                &new_group("e"),
                &unknown_device,
                &UNKNOWN_BOB_DEVICE.parse().unwrap(),
            ),
            Code::FailedPrecondition,
            "has no member devices on b.example".to_owned(),
        ),
    ];
    for (case, group_id, event, code, fragment) in cases {
        let result = deliver(&network, "b.example", Some(&c), delivery(&group_id, event)).await;
        assert_refused(case, result, code, &fragment);
        if group_id != hosted_by_a && group_id != hosted_by_b {
            assert_eq!(
                network.stored_group("b.example", group_id.as_bytes()).await,
                None,
                "{case}"
            );
        }
    }

    // Nothing was stored, and bob's device sees nothing new.
    assert_eq!(
        network
            .stored_group("b.example", hosted_by_a.as_bytes())
            .await,
        copy_of_a
    );
    assert_eq!(
        network
            .stored_group("b.example", hosted_by_b.as_bytes())
            .await,
        own_of_b
    );
    assert_eq!(bob.receive().await.events, 0);
    assert_eq!(bob.client.groups().expect("bob's groups").len(), bob_groups);
    // The honest path: a.example's group goes on.
    let sent = alice.send(&hosted_by_a, "after the attempts").await;
    let received = bob.next_messages(&hosted_by_a, 1).await;
    assert_eq!(received[0].seq, sent.seq);
    assert_eq!(received[0].body.text(), Some("after the attempts"));

    // The control: a package the directory handed to c.example is c's to use
    // in a group c hosts (not read by bob's client, which would reject a group
    // without Conclave's metadata).
    let controlled = new_group("control");
    let event = eve.group_adding(&controlled, &claimed_by_c, &bob_identity);
    let answer = deliver(
        &network,
        "b.example",
        Some(&c),
        delivery(&controlled, event),
    )
    .await
    .expect("a Welcome for a package claimed by c.example is accepted");
    assert_eq!(answer.last_seq, 1);
    let stored = network
        .stored_group("b.example", controlled.as_bytes())
        .await
        .expect("the group c.example hosts");
    assert_eq!(stored.hub_domain.as_deref(), Some("c.example"));

    // (f) A hub cannot have bob's live device removed by its members' clients:
    // a departure notice for a device of b.example that b.example did not
    // delete is refused, and nothing is stored.
    let lying_notice = proto::FederatedEvent {
        seq: 2,
        kind: proto::EventKind::Departure as i32,
        epoch: 1,
        sender: bob_identity.to_string(),
        message: b"revoked by an administrator".to_vec(),
        ..Default::default()
    };
    assert_refused(
        "(f) a departure notice for a live device",
        deliver(
            &network,
            "b.example",
            Some(&c),
            delivery(&controlled, lying_notice),
        )
        .await,
        Code::InvalidArgument,
        &format!(
            "event 2: a departure notice for {bob_identity}, a device of this domain that has not departed"
        ),
    );
    let after = network
        .stored_group("b.example", controlled.as_bytes())
        .await
        .expect("the group c.example hosts");
    assert_eq!(after.last_seq, stored.last_seq, "nothing stored");
}

fn unclaimed(device: &CredentialIdentity) -> String {
    format!(
        "event 1: the Welcome for {device} is not addressed to a key package of that device that this directory handed to c.example"
    )
}

fn delivery(group_id: &GroupId, event: proto::FederatedEvent) -> proto::DeliverEventsRequest {
    proto::DeliverEventsRequest {
        hub_domain: "c.example".to_owned(),
        group_id: group_id.as_bytes().to_vec(),
        events: vec![event],
        member_count: 2,
    }
}

/// Claims a key package of bob's one device from b.example, as the domain of
/// `certificate`, for `requester`.
async fn claim_key_package(
    network: &TestNetwork,
    certificate: &IssuedCertificate,
    requester: &str,
) -> KeyPackage {
    let request = proto::ClaimKeyPackagesRequest {
        requester: requester.to_owned(),
        user_id: "bob@b.example".to_owned(),
        cipher_suite: 0,
    };
    let claimed = call(
        network,
        "b.example",
        Some(certificate),
        |mut client| async move { client.claim_key_packages(request).await },
    )
    .await
    .expect("a claim of bob's key packages");
    let [package] = claimed.key_packages.as_slice() else {
        panic!("bob has one device: {claimed:?}");
    };
    KeyPackageIn::tls_deserialize_exact(&package.key_package)
        .expect("a key package")
        .validate(
            OpenMlsRustCrypto::default().crypto(),
            ProtocolVersion::Mls10,
        )
        .expect("a valid key package")
}

/// An MLS device of the test's own making, whose credential names whatever
/// identity it is given.
struct Device {
    credential_with_key: CredentialWithKey,
    signer: SignatureKeyPair,
    provider: OpenMlsRustCrypto,
}

impl Device {
    fn new(identity: &str) -> Device {
        let identity: CredentialIdentity = identity.parse().expect("an identity");
        let signer = SignatureKeyPair::new(CIPHERSUITE.signature_algorithm()).expect("a key pair");
        Device {
            credential_with_key: CredentialWithKey {
                credential: BasicCredential::new(identity.to_bytes()).into(),
                signature_key: signer.public().into(),
            },
            signer,
            provider: OpenMlsRustCrypto::default(),
        }
    }

    fn key_package(&self) -> KeyPackage {
        KeyPackage::builder()
            .build(
                CIPHERSUITE,
                &self.provider,
                &self.signer,
                self.credential_with_key.clone(),
            )
            .expect("a key package")
            .key_package()
            .clone()
    }

    /// A new group `group_id` of this device's, and the event of its first
    /// commit, adding `key_package` (of `added`) with a Welcome, as a hub would
    /// deliver it.
    fn group_adding(
        &self,
        group_id: &GroupId,
        key_package: &KeyPackage,
        added: &CredentialIdentity,
    ) -> proto::FederatedEvent {
        let config = MlsGroupCreateConfig::builder()
            .ciphersuite(CIPHERSUITE)
            .wire_format_policy(MIXED_PLAINTEXT_WIRE_FORMAT_POLICY)
            .build();
        let mut group = MlsGroup::new_with_group_id(
            &self.provider,
            &self.signer,
            &config,
            openmls::prelude::GroupId::from_slice(group_id.as_bytes()),
            self.credential_with_key.clone(),
        )
        .expect("a group");
        let (commit, welcome, _) = group
            .add_members(
                &self.provider,
                &self.signer,
                std::slice::from_ref(key_package),
            )
            .expect("a commit adding the package");
        group
            .merge_pending_commit(&self.provider)
            .expect("the commit merged");
        proto::FederatedEvent {
            seq: 1,
            kind: proto::EventKind::Commit as i32,
            epoch: 0,
            sender: EVE.to_owned(),
            message: commit.to_bytes().expect("the commit's bytes"),
            added: vec![added.to_string()],
            welcome: welcome.to_bytes().expect("the Welcome's bytes"),
            ratchet_tree: group
                .export_ratchet_tree()
                .tls_serialize_detached()
                .expect("the tree's bytes"),
            ..Default::default()
        }
    }
}
