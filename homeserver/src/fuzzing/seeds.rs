//! The seed corpora of the homeserver's fuzz targets and the fixture group they
//! fit (`hub_group.bin`), made by real openmls clients (the hub tests'
//! `GroupFixture`): a few valid inputs per target, and the checks each must
//! pass, so a seed is known to reach the code behind every check.
//!
//! The test here makes them afresh and checks them on every run; with
//! `CONCLAVE_WRITE_FUZZ_SEEDS=1` it also writes them, replacing the corpora in
//! `fuzz/corpus/` and the fixture (`scripts/fuzz seeds` does this). Write them
//! together or not at all: the hub seeds verify only against their fixture.

use super::client_api::{judge_client_request, judge_hub_handshake, judge_key_package_upload};
use super::config_text::judge_config;
use super::federation_api::{judge_federation_request, judge_follower_batch};
use super::fixture::{CHALLENGE_KEY, Fixture, OWN_DOMAIN};
use crate::rules::enrolment::{ChallengeKey, issue_challenge};
use crate::rules::hub::tests::fixture::{
    ALICE, Change, DAVE, Device, GroupFixture, bytes, create_config,
};
use conclave_core::enrolment::EnrolmentTranscript;
use conclave_core::ids::{Domain, Username};
use conclave_core::mls::{CIPHERSUITE, GROUP_METADATA_EXTENSION_TYPE};
use conclave_proto::client::v1 as client;
use conclave_proto::federation::v1 as federation;
use openmls::prelude::OpenMlsProvider as _;
use openmls::prelude::tls_codec::Serialize as _;
use openmls::prelude::{
    BasicCredential, Capabilities, CredentialType, CredentialWithKey, ExtensionType, KeyPackage,
    Lifetime, MlsGroup,
};
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::OpenMlsRustCrypto;
use prost::Message;
use std::path::{Path, PathBuf};

/// One seed: its target, its file name, its bytes, and whether it must pass
/// every check (the hub's and the directory's seeds) or may be refused (a seed
/// that is refused deliberately, or by a check that needs the database).
struct Seed {
    target: &'static str,
    name: &'static str,
    data: Vec<u8>,
    passes: bool,
}

struct Seeds {
    /// `hub_group.bin`'s contents.
    fixture: Vec<u8>,
    seeds: Vec<Seed>,
}

/// The selector byte of client requests (see `client_api`): RPC and caller.
fn client_selector(rpc: u8, member: u8) -> u8 {
    rpc + 11 * member
}

/// The selector byte of hub inputs: kind and caller.
fn hub_selector(kind: u8, member: u8) -> u8 {
    kind + 4 * member
}

fn with_selector(selector: u8, message: &impl Message) -> Vec<u8> {
    let mut data = vec![selector];
    data.extend(message.encode_to_vec());
    data
}

/// A key package of `device` as Conclave's client makes them: the leaf lists
/// the group metadata extension, and last resort if it is one.
fn key_package(device: &Device, last_resort: bool) -> Vec<u8> {
    let capabilities = Capabilities::builder()
        .extensions(vec![
            ExtensionType::LastResort,
            ExtensionType::Unknown(GROUP_METADATA_EXTENSION_TYPE),
        ])
        .credentials(vec![CredentialType::Basic])
        .build();
    let mut builder = KeyPackage::builder()
        .key_package_lifetime(Lifetime::new(28 * 24 * 60 * 60))
        .leaf_node_capabilities(capabilities);
    if last_resort {
        builder = builder.mark_as_last_resort();
    }
    let credential_with_key = CredentialWithKey {
        credential: BasicCredential::new(device.identity.to_bytes()).into(),
        signature_key: device.signer.to_public_vec().into(),
    };
    builder
        .build(
            CIPHERSUITE,
            &OpenMlsRustCrypto::default(),
            &device.signer,
            credential_with_key,
        )
        .unwrap()
        .key_package()
        .tls_serialize_detached()
        .unwrap()
}

fn make_seeds() -> Seeds {
    let made_at_ms = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    let mut group = GroupFixture::with_members(3);
    let group_id = group.hub.group_id();
    let mut fixture = made_at_ms.to_le_bytes().to_vec();
    fixture.extend(group.hub.to_state());

    // Messages before commits: a member with a commit pending makes nothing else.
    let message = {
        let member = &mut group.members[0];
        let provider = &member.device.provider;
        bytes(
            &member
                .group
                .create_message(provider, &member.device.signer, b"seed")
                .unwrap(),
        )
    };
    let proposal = group.propose_self_update(2);
    let self_update = group.commit(0, Change::SelfUpdate);
    let dave = Device::new(DAVE);
    let dave_package = group.invite(dave);
    let add = group.commit(1, Change::Add(vec![dave_package]));

    // A new group of alice's, as she registers it.
    let creator = Device::new(ALICE);
    let new_group = MlsGroup::new(
        &creator.provider,
        &creator.signer,
        &create_config(),
        creator.credential_with_key(),
    )
    .unwrap();
    let create = client::CreateGroupRequest {
        idempotency_key: vec![1; 16],
        group_info: bytes(
            &new_group
                .export_group_info(creator.provider.crypto(), &creator.signer, false)
                .unwrap(),
        ),
        ratchet_tree: new_group
            .export_ratchet_tree()
            .tls_serialize_detached()
            .unwrap(),
    };

    let commit_request =
        |submitted: &crate::rules::hub::tests::fixture::Submitted| client::SubmitCommitRequest {
            idempotency_key: vec![2; 16],
            group_id: group_id.clone(),
            commit: submitted.commit.clone(),
            welcome: submitted.welcome.clone(),
            group_info: submitted.group_info.clone(),
        };
    let proposal_request = client::SubmitProposalRequest {
        idempotency_key: vec![3; 16],
        group_id: group_id.clone(),
        proposal: proposal.clone(),
    };
    let message_request = client::SendMessageRequest {
        idempotency_key: vec![4; 16],
        group_id: group_id.clone(),
        message: message.clone(),
    };
    let alice = &group.members[0].device;
    let upload = client::UploadKeyPackagesRequest {
        key_packages: vec![key_package(alice, false), key_package(alice, false)],
        last_resort_key_package: Some(key_package(alice, true)),
    };
    let bob_identity = group.members[1].device.identity.to_string();
    let bob_key = group.members[1].device.signer.to_public_vec();

    let deliver = federation::DeliverEventsRequest {
        hub_domain: "a.example".to_owned(),
        group_id: group_id.clone(),
        events: vec![
            federation::FederatedEvent {
                seq: 1,
                kind: federation::EventKind::Commit.into(),
                epoch: 1,
                sender: "alice@a.example/00000000000000a1".to_owned(),
                message: add.commit.clone(),
                created_at_ms: made_at_ms,
                added: vec!["dave@localhost/00000000000000d1".to_owned()],
                removed: Vec::new(),
                welcome: add.welcome.clone().unwrap(),
                ratchet_tree: group.hub.ratchet_tree(),
                traceparent: None,
            },
            federation::FederatedEvent {
                seq: 2,
                kind: federation::EventKind::Application.into(),
                // Written before the commit (a member with a commit pending
                // sends nothing), so of the epoch before it.
                epoch: 1,
                sender: "alice@a.example/00000000000000a1".to_owned(),
                message: message.clone(),
                created_at_ms: made_at_ms,
                ..Default::default()
            },
        ],
        member_count: 4,
    };
    let relayed = federation::SubmitToHubRequest {
        sender: "dave@b.example/00000000000000d1".to_owned(),
        idempotency_key: vec![5; 16],
        group_id: group_id.clone(),
        submission: Some(
            federation::submit_to_hub_request::Submission::ApplicationMessage(message.clone()),
        ),
    };

    // A device with a valid proof of possession for `username`, under the
    // fixture's challenge key and clock.
    let device_key = SignatureKeyPair::new(CIPHERSUITE.signature_algorithm()).unwrap();
    let challenge_key = ChallengeKey::from_bytes(&CHALLENGE_KEY).unwrap();
    let device = |username: &str| {
        let challenge = issue_challenge(&challenge_key, made_at_ms, [3; 16]).bytes;
        let display_name = "Erin's laptop";
        let domain: Domain = OWN_DOMAIN.parse().unwrap();
        let username: Username = username.parse().unwrap();
        let transcript = EnrolmentTranscript {
            domain: &domain,
            username: &username,
            challenge: &challenge,
            signature_public_key: device_key.public(),
            display_name,
        };
        Some(client::DeviceEnrolment {
            signature_public_key: device_key.public().to_vec(),
            display_name: display_name.to_owned(),
            possession_signature: transcript.sign(&device_key).unwrap(),
            challenge,
        })
    };
    let example_config = std::fs::read(repository().join("conclave-homeserver.example.toml"))
        .expect("the example configuration");
    let federated_config = b"domain = \"a.example\"\n\
        [federation]\n\
        listen = \"127.0.0.1:8448\"\n\
        outbox_batch_size = 100\n\
        [federation.peers.\"b.example\"]\n\
        endpoint = \"https://b.example:8448\"\n\
        pinned_sha256 = \"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\"\n"
        .to_vec();

    let seed = |target, name, data, passes| Seed {
        target,
        name,
        data,
        passes,
    };
    let seeds = vec![
        seed(
            "hub_handshake",
            "commit-self-update",
            with_selector(hub_selector(0, 0), &commit_request(&self_update)),
            true,
        ),
        seed(
            "hub_handshake",
            "commit-add",
            with_selector(hub_selector(0, 1), &commit_request(&add)),
            true,
        ),
        seed(
            "hub_handshake",
            "proposal-self-update",
            with_selector(hub_selector(1, 2), &proposal_request),
            true,
        ),
        seed(
            "hub_handshake",
            "application-message",
            with_selector(hub_selector(2, 0), &message_request),
            true,
        ),
        seed(
            "hub_handshake",
            "create-group",
            with_selector(hub_selector(3, 0), &create),
            true,
        ),
        seed(
            "key_package_upload",
            "three-packages",
            with_selector(0, &upload),
            true,
        ),
        seed(
            "key_package_upload",
            "last-resort-only",
            with_selector(
                0,
                &client::UploadKeyPackagesRequest {
                    key_packages: Vec::new(),
                    last_resort_key_package: upload.last_resort_key_package.clone(),
                },
            ),
            true,
        ),
        seed(
            "client_request",
            "register",
            with_selector(
                client_selector(0, 0),
                &client::RegisterRequest {
                    username: "erin".to_owned(),
                    password: "correct horse battery staple".to_owned(),
                    registration_token: String::new(),
                    device: device("erin"),
                },
            ),
            true,
        ),
        seed(
            "client_request",
            "login",
            with_selector(
                client_selector(1, 0),
                &client::LoginRequest {
                    username: "erin@localhost".to_owned(),
                    password: "correct horse battery staple".to_owned(),
                    device: device("erin"),
                },
            ),
            true,
        ),
        seed(
            "client_request",
            "upload",
            with_selector(client_selector(2, 0), &upload),
            true,
        ),
        seed(
            "client_request",
            "claim",
            with_selector(
                client_selector(3, 0),
                &client::ClaimKeyPackagesRequest {
                    user_id: "bob@localhost".to_owned(),
                    cipher_suite: 0,
                },
            ),
            true,
        ),
        seed(
            "client_request",
            "create-group",
            with_selector(client_selector(4, 0), &create),
            true,
        ),
        seed(
            "client_request",
            "commit",
            with_selector(client_selector(5, 1), &commit_request(&add)),
            true,
        ),
        seed(
            "client_request",
            "proposal",
            with_selector(client_selector(6, 2), &proposal_request),
            true,
        ),
        seed(
            "client_request",
            "message",
            with_selector(client_selector(7, 0), &message_request),
            true,
        ),
        seed(
            "client_request",
            "group-info",
            with_selector(
                client_selector(8, 0),
                &client::GetGroupInfoRequest {
                    group_id: group_id.clone(),
                },
            ),
            true,
        ),
        seed(
            "client_request",
            "ack",
            with_selector(
                client_selector(9, 0),
                &client::AckRequest {
                    groups: vec![client::GroupAck {
                        group_id: group_id.clone(),
                        seq: 2,
                    }],
                    inbox_seq: 0,
                },
            ),
            true,
        ),
        seed(
            "client_request",
            "remove-device",
            with_selector(
                client_selector(10, 0),
                &client::RemoveDeviceRequest {
                    device_id: "00000000000000a2".to_owned(),
                },
            ),
            true,
        ),
        seed(
            "federation_request",
            "claim",
            with_selector(
                0,
                &federation::ClaimKeyPackagesRequest {
                    requester: "dave@b.example/00000000000000d1".to_owned(),
                    user_id: "bob@localhost".to_owned(),
                    cipher_suite: 0x004f,
                },
            ),
            true,
        ),
        seed(
            "federation_request",
            "verify-credential",
            with_selector(
                1,
                &federation::VerifyCredentialRequest {
                    asking_domain: "b.example".to_owned(),
                    credential_identity: bob_identity,
                    signature_public_key: bob_key,
                    key_package_ref: Vec::new(),
                },
            ),
            true,
        ),
        // Dave is no member, but membership is the database's to say.
        seed(
            "federation_request",
            "submit-to-hub",
            with_selector(2, &relayed),
            true,
        ),
        seed(
            "federation_request",
            "deliver-events",
            with_selector(3, &deliver),
            true,
        ),
        seed(
            "federation_request",
            "fetch-events",
            with_selector(
                4,
                &federation::FetchEventsRequest {
                    follower_domain: "b.example".to_owned(),
                    group_id: group_id.clone(),
                    after_seq: 0,
                    limit: 10,
                },
            ),
            true,
        ),
        seed(
            "federation_request",
            "fetch-group-info",
            with_selector(
                5,
                &federation::FetchGroupInfoRequest {
                    requester: "dave@b.example/00000000000000d1".to_owned(),
                    group_id: group_id.clone(),
                },
            ),
            true,
        ),
        seed(
            "federation_request",
            "get-server-info",
            with_selector(
                6,
                &federation::GetServerInfoRequest {
                    asking_domain: "b.example".to_owned(),
                },
            ),
            true,
        ),
        seed(
            "follower_batch",
            "commit-and-message",
            deliver.encode_to_vec(),
            true,
        ),
        seed("config", "example", example_config, true),
        seed("config", "federation-peers", federated_config, true),
    ];
    Seeds { fixture, seeds }
}

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every seed passes (or is refused) as it should against the group it was
/// made with: the fuzz targets reach the code behind all their checks.
#[test]
fn seeds_reach_every_check() {
    let Seeds { fixture, seeds } = make_seeds();
    let fixture_bytes: &'static [u8] = Box::leak(fixture.clone().into_boxed_slice());
    let group = Fixture::from_bytes(fixture_bytes);
    for seed in &seeds {
        let result = match seed.target {
            "client_request" => judge_client_request(&group, &seed.data),
            "federation_request" => judge_federation_request(&group, &seed.data),
            "key_package_upload" => judge_key_package_upload(&group, &seed.data),
            "hub_handshake" => judge_hub_handshake(&group, &seed.data),
            "follower_batch" => judge_follower_batch(&group, &seed.data),
            "config" => judge_config(&seed.data)
                .map_err(|message| crate::grpc::StatusParts { code: -1, message }),
            other => panic!("no target {other}"),
        };
        assert_eq!(
            result.is_ok(),
            seed.passes,
            "{}/{}: {result:?}",
            seed.target,
            seed.name
        );
    }
    if std::env::var_os("CONCLAVE_WRITE_FUZZ_SEEDS").is_some() {
        write(&fixture, &seeds);
    }
}

/// Replaces the corpora of the homeserver's targets and the fixture.
fn write(fixture: &[u8], seeds: &[Seed]) {
    let root = repository();
    std::fs::write(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("src/fuzzing/hub_group.bin"),
        fixture,
    )
    .unwrap();
    for (target, _) in super::TARGETS {
        let folder = root.join("fuzz/corpus").join(target);
        if folder.exists() {
            std::fs::remove_dir_all(&folder).unwrap();
        }
        std::fs::create_dir_all(&folder).unwrap();
    }
    for seed in seeds {
        let path = root.join("fuzz/corpus").join(seed.target).join(seed.name);
        std::fs::write(path, &seed.data).unwrap();
    }
}
