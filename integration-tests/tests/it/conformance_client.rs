//! A foreign Conclave client for the conformance tests: written from
//! `docs/protocol.md` and the `.proto` files alone, on the generated
//! `conclave-proto` code and openmls directly, with none of the client
//! library's (nor `conclave-core`'s) code. Every protocol rule it follows is
//! spelt out here as the specification gives it (the enrolment transcript, the
//! key packages' capabilities and lifetime, the group context's metadata
//! extension, the wire formats, the envelope), so a drift between the
//! specification and the server shows up as a refusal in the tests.
//!
//! Its helpers return the server's `Status` rather than panicking, so the tests
//! can check documented rejections as well as successes.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use conclave_proto::client::v1 as proto;
use conclave_proto::client::v1::account_service_client::AccountServiceClient;
use conclave_proto::client::v1::delivery_event::Event;
use conclave_proto::client::v1::delivery_service_client::DeliveryServiceClient;
use conclave_proto::client::v1::group_service_client::GroupServiceClient;
use conclave_proto::client::v1::inbox_event;
use conclave_proto::client::v1::key_package_service_client::KeyPackageServiceClient;
use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
use openmls::prelude::{
    BasicCredential, Capabilities, Ciphersuite, CredentialWithKey, Extension, ExtensionType,
    Extensions, KeyPackage, KeyPackageIn, LeafNodeIndex, Lifetime,
    MIXED_CIPHERTEXT_WIRE_FORMAT_POLICY, MIXED_PLAINTEXT_WIRE_FORMAT_POLICY, MlsGroup,
    MlsGroupCreateConfig, MlsGroupJoinConfig, MlsMessageBodyIn, MlsMessageIn, MlsMessageOut,
    OpenMlsProvider as _, ProcessedMessageContent, ProtocolVersion, RatchetTreeIn, StagedWelcome,
    UnknownExtension, WireFormatPolicy,
};
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::OpenMlsRustCrypto;
use openmls_traits::signatures::Signer as _;
use prost::Message as _;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Request, Status};

/// "Cipher suites": today's suite, 0x0001.
pub(crate) const CIPHERSUITE: Ciphersuite =
    Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;

/// "Required capabilities": the group metadata extension's type.
pub(crate) const GROUP_METADATA: u16 = 0xf0c1;

/// "Enrolment": the label of the signed transcript.
const ENROLMENT_LABEL: &[u8] = b"MLS 1.0 conclave enrolment";

/// "Lifetime": what this client gives its key packages (within the default
/// maximum of 90 days).
const KEY_PACKAGE_LIFETIME: Duration = Duration::from_secs(28 * 24 * 3600);

/// Epochs whose secrets are kept, as "Application messages" advises (the
/// hub's default `groups.past_epoch_window`).
const MAX_PAST_EPOCHS: usize = 5;

/// Type URL of the `CommitConflict` in an ABORTED status's details.
const COMMIT_CONFLICT_TYPE_URL: &str = "type.googleapis.com/conclave.client.v1.CommitConflict";

/// What a key package under test carries, for the negative checks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeyPackageShape {
    /// Carries the last_resort_key_package extension (0x000a).
    pub(crate) last_resort: bool,
    /// Lists the group metadata extension (0xf0c1) in its capabilities.
    pub(crate) lists_group_metadata: bool,
}

impl KeyPackageShape {
    pub(crate) const ORDINARY: KeyPackageShape = KeyPackageShape {
        last_resort: false,
        lists_group_metadata: true,
    };
    pub(crate) const LAST_RESORT: KeyPackageShape = KeyPackageShape {
        last_resort: true,
        lists_group_metadata: true,
    };
}

/// A decrypted application message and what the server said of it.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub(crate) seq: u64,
    /// The identity in the MLS credential of the leaf that signed it.
    pub(crate) mls_sender: String,
    /// `GroupEvent.sender_user_id` and `sender_device_id`, as the server
    /// authenticated the submitting device.
    pub(crate) server_sender: (String, String),
    /// The envelope, as JSON.
    pub(crate) envelope: serde_json::Value,
}

/// What a commit sends: its three MLSMessages (see "Commits").
pub(crate) struct StagedCommit {
    pub(crate) commit: Vec<u8>,
    pub(crate) welcome: Option<Vec<u8>>,
    pub(crate) group_info: Vec<u8>,
}

/// What a commit changes.
pub(crate) enum Change {
    Add(Vec<KeyPackage>),
    Remove(Vec<LeafNodeIndex>),
    SelfUpdate,
}

/// A device enrolled through the client API, with its groups in memory.
pub(crate) struct ForeignClient {
    pub(crate) user_id: String,
    pub(crate) device_id: String,
    /// `name@domain/device_id`, the BasicCredential's identity.
    pub(crate) identity: String,
    token: String,
    signer: SignatureKeyPair,
    provider: OpenMlsRustCrypto,
    channel: Channel,
    groups: HashMap<Vec<u8>, MlsGroup>,
    /// Groups whose removing commit this device read.
    pub(crate) removed_from: Vec<Vec<u8>>,
    /// Every application message of others, decrypted, in arrival order.
    pub(crate) received: Vec<Received>,
    keys_made: u64,
}

/// Milliseconds since the Unix epoch, for `sent_at_ms`.
pub(crate) fn now_ms() -> u64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970");
    u64::try_from(since_epoch.as_millis()).expect("milliseconds fit in u64")
}

/// RFC 9420's variable-length vector (§2.1.2): a QUIC-style varint length,
/// then the bytes (lengths below 2^30 only).
fn vector(bytes: &[u8]) -> Vec<u8> {
    let length = bytes.len();
    let mut encoded = if length < 0x40 {
        vec![length as u8]
    } else if length < 0x4000 {
        (0x4000 | length as u16).to_be_bytes().to_vec()
    } else {
        assert!(length < 0x4000_0000, "a vector below 2^30 bytes");
        (0x8000_0000 | length as u32).to_be_bytes().to_vec()
    };
    encoded.extend_from_slice(bytes);
    encoded
}

/// The signed enrolment transcript, as "Enrolment" lays it out.
pub(crate) fn enrolment_transcript(
    domain: &str,
    username: &str,
    challenge: &[u8],
    signature_public_key: &[u8],
    display_name: &str,
) -> Vec<u8> {
    let content: Vec<u8> = [
        domain.as_bytes(),
        username.as_bytes(),
        challenge,
        signature_public_key,
        display_name.as_bytes(),
    ]
    .into_iter()
    .flat_map(vector)
    .collect();
    [vector(ENROLMENT_LABEL), vector(&content)].concat()
}

/// The TLS encoding of an outgoing MLSMessage.
fn message_bytes(message: &MlsMessageOut) -> Vec<u8> {
    message
        .tls_serialize_detached()
        .expect("an MLSMessage encodes")
}

/// How this client's groups treat wire formats: handshakes out as
/// PublicMessages ("Wire formats").
fn join_config(policy: WireFormatPolicy) -> MlsGroupJoinConfig {
    MlsGroupJoinConfig::builder()
        .wire_format_policy(policy)
        .max_past_epochs(MAX_PAST_EPOCHS)
        .use_ratchet_tree_extension(false)
        .build()
}

/// "Required capabilities": every leaf lists the group metadata extension,
/// and the last-resort extension its key package may carry.
fn capabilities(lists_group_metadata: bool) -> Capabilities {
    let mut extensions = vec![ExtensionType::LastResort];
    if lists_group_metadata {
        extensions.push(ExtensionType::Unknown(GROUP_METADATA));
    }
    Capabilities::builder().extensions(extensions).build()
}

impl ForeignClient {
    /// Connects to the client API at `url` and registers `username` with a
    /// new device ("Enrolment").
    pub(crate) async fn register(url: &str, username: &str) -> ForeignClient {
        let channel = Channel::from_shared(url.to_owned())
            .expect("a URL")
            .connect()
            .await
            .expect("the homeserver accepts connections");
        let mut accounts = AccountServiceClient::new(channel.clone());
        let challenge = accounts
            .begin_enrolment(proto::BeginEnrolmentRequest {})
            .await
            .expect("BeginEnrolment")
            .into_inner();
        let signer =
            SignatureKeyPair::new(CIPHERSUITE.signature_algorithm()).expect("an Ed25519 key pair");
        let display_name = "foreign client";
        let public_key = signer.to_public_vec();
        let transcript = enrolment_transcript(
            &challenge.domain,
            username,
            &challenge.challenge,
            &public_key,
            display_name,
        );
        let possession_signature = signer.sign(&transcript).expect("Ed25519 signs");
        let session = accounts
            .register(proto::RegisterRequest {
                username: username.to_owned(),
                password: "a foreign password".to_owned(),
                registration_token: String::new(),
                device: Some(proto::DeviceEnrolment {
                    signature_public_key: public_key,
                    display_name: display_name.to_owned(),
                    challenge: challenge.challenge,
                    possession_signature,
                }),
            })
            .await
            .unwrap_or_else(|status| panic!("registering {username}: {status:?}"))
            .into_inner();
        assert_eq!(
            session.credential_identity,
            format!("{}/{}", session.user_id, session.device_id),
            "Credential identity: name@domain/device_id"
        );
        ForeignClient {
            user_id: session.user_id,
            device_id: session.device_id,
            identity: session.credential_identity,
            token: session.access_token,
            signer,
            provider: OpenMlsRustCrypto::default(),
            channel,
            groups: HashMap::new(),
            removed_from: Vec::new(),
            received: Vec::new(),
            keys_made: 0,
        }
    }

    /// `message` with this device's bearer token ("Transport and
    /// authentication").
    pub(crate) fn authorized<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        let value =
            MetadataValue::try_from(format!("Bearer {}", self.token)).expect("a token is ASCII");
        request.metadata_mut().insert("authorization", value);
        request
    }

    fn key_packages_api(&self) -> KeyPackageServiceClient<Channel> {
        KeyPackageServiceClient::new(self.channel.clone())
    }

    fn groups_api(&self) -> GroupServiceClient<Channel> {
        GroupServiceClient::new(self.channel.clone())
    }

    pub(crate) fn delivery_api(&self) -> DeliveryServiceClient<Channel> {
        DeliveryServiceClient::new(self.channel.clone())
    }

    /// A new idempotency key ("Idempotency"): unique for this device.
    pub(crate) fn new_key(&mut self) -> Vec<u8> {
        self.keys_made += 1;
        format!("foreign-{}", self.keys_made).into_bytes()
    }

    /// The Ed25519 key bound to this device.
    pub(crate) fn signature_public_key(&self) -> Vec<u8> {
        self.signer.to_public_vec()
    }

    fn credential_with_key(&self) -> CredentialWithKey {
        CredentialWithKey {
            credential: BasicCredential::new(self.identity.clone().into_bytes()).into(),
            signature_key: self.signer.to_public_vec().into(),
        }
    }

    /// A bare, TLS-encoded `KeyPackage` ("Key packages") whose private keys
    /// this client keeps.
    pub(crate) fn key_package(&self, shape: KeyPackageShape) -> Vec<u8> {
        self.key_package_as(shape, self.credential_with_key())
    }

    /// A key package naming `credential` (for the negative checks).
    pub(crate) fn key_package_as(
        &self,
        shape: KeyPackageShape,
        credential: CredentialWithKey,
    ) -> Vec<u8> {
        let mut builder = KeyPackage::builder()
            .key_package_lifetime(Lifetime::new(KEY_PACKAGE_LIFETIME.as_secs()))
            .leaf_node_capabilities(capabilities(shape.lists_group_metadata));
        if shape.last_resort {
            builder = builder.mark_as_last_resort();
        }
        builder
            .build(CIPHERSUITE, &self.provider, &self.signer, credential)
            .expect("openmls builds the key package")
            .key_package()
            .tls_serialize_detached()
            .expect("a key package encodes")
    }

    pub(crate) async fn upload(
        &self,
        ordinary: Vec<Vec<u8>>,
        last_resort: Option<Vec<u8>>,
    ) -> Result<proto::KeyPackageStock, Status> {
        let request = self.authorized(proto::UploadKeyPackagesRequest {
            key_packages: ordinary,
            last_resort_key_package: last_resort,
        });
        let response = self.key_packages_api().upload_key_packages(request).await?;
        Ok(response
            .into_inner()
            .stock
            .expect("the stock after the upload"))
    }

    pub(crate) async fn stock(&self) -> proto::KeyPackageStock {
        let request = self.authorized(proto::GetKeyPackageStockRequest {});
        self.key_packages_api()
            .get_key_package_stock(request)
            .await
            .expect("GetKeyPackageStock")
            .into_inner()
    }

    /// Claims one package per device of `user_id` and checks each as
    /// "Claiming" says a claimer must: a valid key package whose credential
    /// and leaf signature key are the ones the directory names.
    pub(crate) async fn claim(&self, user_id: &str) -> Result<Vec<KeyPackage>, Status> {
        let request = self.authorized(proto::ClaimKeyPackagesRequest {
            user_id: user_id.to_owned(),
            // This client speaks the classic suite, 0x0001 (0 would mean the same).
            cipher_suite: 1,
        });
        let claimed = self
            .key_packages_api()
            .claim_key_packages(request)
            .await?
            .into_inner()
            .key_packages;
        Ok(claimed
            .into_iter()
            .map(|claimed| {
                let mut rest = claimed.key_package.as_slice();
                let key_package = KeyPackageIn::tls_deserialize(&mut rest)
                    .expect("a bare KeyPackage")
                    .validate(self.provider.crypto(), ProtocolVersion::Mls10)
                    .expect("a valid key package");
                assert!(rest.is_empty(), "nothing follows the key package");
                let leaf = key_package.leaf_node();
                assert_eq!(
                    leaf.credential().serialized_content(),
                    claimed.credential_identity.as_bytes(),
                    "the credential names the claimed device"
                );
                assert_eq!(
                    leaf.signature_key().as_slice(),
                    claimed.signature_public_key.as_slice(),
                    "the leaf carries the key the directory bound"
                );
                assert_eq!(
                    claimed.credential_identity,
                    format!("{user_id}/{}", claimed.device_id)
                );
                key_package
            })
            .collect())
    }

    pub(crate) fn group(&self, group_id: &[u8]) -> &MlsGroup {
        self.groups
            .get(group_id)
            .expect("the client is in the group")
    }

    pub(crate) fn epoch(&self, group_id: &[u8]) -> u64 {
        self.group(group_id).epoch().as_u64()
    }

    /// The group's name from its metadata extension ("Group context").
    pub(crate) fn group_name(&self, group_id: &[u8]) -> Option<String> {
        let extension = self
            .group(group_id)
            .extensions()
            .unknown(GROUP_METADATA)?
            .0
            .clone();
        let metadata: serde_json::Value = serde_json::from_slice(&extension).ok()?;
        metadata["name"].as_str().map(str::to_owned)
    }

    /// The leaf of the member whose credential names `identity`.
    pub(crate) fn leaf_of(&self, group_id: &[u8], identity: &str) -> LeafNodeIndex {
        self.group(group_id)
            .members()
            .find(|member| member.credential.serialized_content() == identity.as_bytes())
            .unwrap_or_else(|| panic!("{identity} is not in the group"))
            .index
    }

    /// Creates a group of this device alone, named `name` ("Creating a
    /// group"), and registers it with the hub.
    pub(crate) async fn create_group(&mut self, name: &str) -> Result<Vec<u8>, Status> {
        let metadata = serde_json::json!({"v": 1, "name": name});
        let extensions = Extensions::single(Extension::Unknown(
            GROUP_METADATA,
            UnknownExtension(serde_json::to_vec(&metadata).expect("JSON")),
        ))
        .expect("a group context extension");
        let config = MlsGroupCreateConfig::builder()
            .ciphersuite(CIPHERSUITE)
            .wire_format_policy(MIXED_PLAINTEXT_WIRE_FORMAT_POLICY)
            .max_past_epochs(MAX_PAST_EPOCHS)
            .use_ratchet_tree_extension(false)
            .capabilities(capabilities(true))
            .with_group_context_extensions(extensions)
            .build();
        let group = MlsGroup::new(
            &self.provider,
            &self.signer,
            &config,
            self.credential_with_key(),
        )
        .expect("openmls creates the group");
        let group_info = group
            .export_group_info(self.provider.crypto(), &self.signer, false)
            .expect("a GroupInfo with external_pub");
        let ratchet_tree = group
            .export_ratchet_tree()
            .tls_serialize_detached()
            .expect("a ratchet tree encodes");
        let idempotency_key = self.new_key();
        let request = self.authorized(proto::CreateGroupRequest {
            idempotency_key,
            group_info: message_bytes(&group_info),
            ratchet_tree,
        });
        let response = self.groups_api().create_group(request).await?.into_inner();
        assert_eq!(response.group_id, group.group_id().as_slice());
        assert_eq!(response.epoch, 0);
        self.groups.insert(response.group_id.clone(), group);
        Ok(response.group_id)
    }

    /// Builds a commit, pending in the group until [`Self::merge`] or
    /// [`Self::discard`]; with `encrypted`, as a PrivateMessage (which the hub
    /// must refuse).
    pub(crate) fn stage(
        &mut self,
        group_id: &[u8],
        change: Change,
        encrypted: bool,
    ) -> StagedCommit {
        let policy = if encrypted {
            MIXED_CIPHERTEXT_WIRE_FORMAT_POLICY
        } else {
            MIXED_PLAINTEXT_WIRE_FORMAT_POLICY
        };
        let provider = &self.provider;
        let signer = &self.signer;
        let group = self
            .groups
            .get_mut(group_id)
            .expect("the client is in the group");
        group
            .set_configuration(provider.storage(), &join_config(policy))
            .expect("the configuration is stored");
        let builder = group.commit_builder().consume_proposal_store(true);
        let builder = match change {
            Change::Add(key_packages) => builder.propose_adds(key_packages),
            Change::Remove(leaves) => builder.propose_removals(leaves),
            Change::SelfUpdate => builder.force_self_update(true),
        };
        let (commit, welcome, group_info) = builder
            .load_psks(provider.storage())
            .expect("no PSKs")
            .create_group_info(true)
            .build(provider.rand(), provider.crypto(), signer, |_| true)
            .expect("openmls builds the commit")
            .stage_commit(provider)
            .expect("openmls stages the commit")
            .into_messages();
        group
            .set_configuration(
                provider.storage(),
                &join_config(MIXED_PLAINTEXT_WIRE_FORMAT_POLICY),
            )
            .expect("the configuration is stored");
        StagedCommit {
            commit: message_bytes(&commit),
            welcome: welcome.as_ref().map(message_bytes),
            group_info: message_bytes(&group_info.expect("a GroupInfo was asked for")),
        }
    }

    /// Submits a staged commit (with a new idempotency key).
    pub(crate) async fn submit(
        &mut self,
        group_id: &[u8],
        staged: &StagedCommit,
    ) -> Result<proto::SubmitResponse, Status> {
        let request = proto::SubmitCommitRequest {
            idempotency_key: self.new_key(),
            group_id: group_id.to_vec(),
            commit: staged.commit.clone(),
            welcome: staged.welcome.clone(),
            group_info: staged.group_info.clone(),
        };
        self.submit_request(request).await
    }

    pub(crate) async fn submit_request(
        &self,
        request: proto::SubmitCommitRequest,
    ) -> Result<proto::SubmitResponse, Status> {
        let request = self.authorized(request);
        Ok(self.groups_api().submit_commit(request).await?.into_inner())
    }

    /// The hub accepted the pending commit.
    pub(crate) fn merge(&mut self, group_id: &[u8]) {
        let provider = &self.provider;
        let group = self
            .groups
            .get_mut(group_id)
            .expect("the client is in the group");
        group
            .merge_pending_commit(provider)
            .expect("the pending commit merges");
    }

    /// The hub refused the pending commit.
    pub(crate) fn discard(&mut self, group_id: &[u8]) {
        let storage = self.provider.storage();
        let group = self
            .groups
            .get_mut(group_id)
            .expect("the client is in the group");
        group
            .clear_pending_commit(storage)
            .expect("the pending commit is dropped");
    }

    /// Stages, submits, and merges or discards, as "Commits" prescribes.
    pub(crate) async fn commit(
        &mut self,
        group_id: &[u8],
        change: Change,
    ) -> Result<proto::SubmitResponse, Status> {
        let staged = self.stage(group_id, change, false);
        let result = self.submit(group_id, &staged).await;
        match &result {
            Ok(response) => {
                self.merge(group_id);
                assert_eq!(response.epoch, self.epoch(group_id));
            }
            Err(_) => self.discard(group_id),
        }
        result
    }

    /// The plaintext of a text message ("Application messages").
    pub(crate) fn text_envelope(text: &str) -> Vec<u8> {
        let envelope = serde_json::json!({
            "v": 1,
            "type": "text",
            "body": text,
            "sent_at_ms": now_ms(),
        });
        serde_json::to_vec(&envelope).expect("JSON")
    }

    /// Encrypts `plaintext` as a PrivateMessage for the group's epoch.
    pub(crate) fn encrypt(&mut self, group_id: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let provider = &self.provider;
        let signer = &self.signer;
        let group = self
            .groups
            .get_mut(group_id)
            .expect("the client is in the group");
        let message = group
            .create_message(provider, signer, plaintext)
            .expect("openmls encrypts");
        message_bytes(&message)
    }

    pub(crate) async fn send_message(
        &self,
        request: proto::SendMessageRequest,
    ) -> Result<proto::SubmitResponse, Status> {
        let request = self.authorized(request);
        Ok(self.groups_api().send_message(request).await?.into_inner())
    }

    /// Sends a text message with a new idempotency key.
    pub(crate) async fn send_text(
        &mut self,
        group_id: &[u8],
        text: &str,
    ) -> Result<proto::SubmitResponse, Status> {
        self.send_plaintext(group_id, &Self::text_envelope(text))
            .await
    }

    /// Encrypts and sends `plaintext` with a new idempotency key.
    pub(crate) async fn send_plaintext(
        &mut self,
        group_id: &[u8],
        plaintext: &[u8],
    ) -> Result<proto::SubmitResponse, Status> {
        let message = self.encrypt(group_id, plaintext);
        let request = proto::SendMessageRequest {
            idempotency_key: self.new_key(),
            group_id: group_id.to_vec(),
            message,
        };
        self.send_message(request).await
    }

    pub(crate) async fn group_info(
        &self,
        group_id: &[u8],
    ) -> Result<proto::GetGroupInfoResponse, Status> {
        let request = self.authorized(proto::GetGroupInfoRequest {
            group_id: group_id.to_vec(),
        });
        Ok(self
            .groups_api()
            .get_group_info(request)
            .await?
            .into_inner())
    }

    /// One Fetch page, without acknowledging it.
    pub(crate) async fn fetch(&self, limit: u32) -> Result<Vec<proto::DeliveryEvent>, Status> {
        let request = self.authorized(proto::FetchRequest { limit });
        Ok(self
            .delivery_api()
            .fetch(request)
            .await?
            .into_inner()
            .events)
    }

    pub(crate) async fn ack(&self, request: proto::AckRequest) -> Result<(), Status> {
        let request = self.authorized(request);
        self.delivery_api().ack(request).await?;
        Ok(())
    }

    /// "Fetch": fetches, applies and acknowledges pages until a page is empty.
    /// Returns how many events it applied.
    pub(crate) async fn receive(&mut self) -> usize {
        let mut applied = 0;
        loop {
            let events = self.fetch(0).await.expect("Fetch");
            if events.is_empty() {
                return applied;
            }
            applied += events.len();
            let ack = self.apply_page(events);
            self.ack(ack).await.expect("Ack");
        }
    }

    /// Applies a page in order and says what to acknowledge.
    pub(crate) fn apply_page(&mut self, events: Vec<proto::DeliveryEvent>) -> proto::AckRequest {
        let mut groups: HashMap<Vec<u8>, u64> = HashMap::new();
        let mut inbox_seq = 0;
        for event in events {
            match event.event.expect("an event is always set") {
                Event::InboxEvent(inbox) => {
                    inbox_seq = inbox_seq.max(inbox.seq);
                    match inbox.event.expect("an inbox event is always set") {
                        inbox_event::Event::Welcome(welcome) => self.join(&welcome),
                    }
                }
                Event::GroupEvent(group_event) => {
                    let seq = groups.entry(group_event.group_id.clone()).or_default();
                    *seq = (*seq).max(group_event.seq);
                    self.apply_group_event(group_event);
                }
            }
        }
        proto::AckRequest {
            groups: groups
                .into_iter()
                .map(|(group_id, seq)| proto::GroupAck { group_id, seq })
                .collect(),
            inbox_seq,
        }
    }

    /// "Welcome": joins from the Welcome and the ratchet tree beside it.
    fn join(&mut self, welcome: &proto::WelcomeEvent) {
        let message = MlsMessageIn::tls_deserialize_exact(&welcome.welcome).expect("an MLSMessage");
        let MlsMessageBodyIn::Welcome(mls_welcome) = message.extract() else {
            panic!("the inbox's welcome is a Welcome");
        };
        let ratchet_tree =
            RatchetTreeIn::tls_deserialize_exact(&welcome.ratchet_tree).expect("a RatchetTree");
        let group = StagedWelcome::new_from_welcome(
            &self.provider,
            &join_config(MIXED_PLAINTEXT_WIRE_FORMAT_POLICY),
            mls_welcome,
            Some(ratchet_tree),
        )
        .expect("the Welcome opens")
        .into_group(&self.provider)
        .expect("the group is joined");
        assert_eq!(group.group_id().as_slice(), welcome.group_id.as_slice());
        self.groups.insert(welcome.group_id.clone(), group);
    }

    /// Applies one group event ("Processing events").
    fn apply_group_event(&mut self, event: proto::GroupEvent) {
        if event.departure.is_some() || !self.groups.contains_key(&event.group_id) {
            return;
        }
        let message = MlsMessageIn::tls_deserialize_exact(&event.message).expect("an MLSMessage");
        let protocol_message = message
            .try_into_protocol_message()
            .expect("a PublicMessage or PrivateMessage");
        let own = event.sender_device_id == self.device_id && event.sender_user_id == self.user_id;
        let epoch = protocol_message.epoch().as_u64();
        let group_id = event.group_id.clone();
        let current = self.epoch(&group_id);
        if protocol_message.is_handshake_message() && epoch < current {
            // Our own commit, merged when the hub accepted it.
            assert!(own, "only our own handshakes can be behind us");
            return;
        }
        if own && !protocol_message.is_handshake_message() {
            // A sender cannot decrypt its own PrivateMessage.
            return;
        }
        let provider = &self.provider;
        let group = self
            .groups
            .get_mut(&group_id)
            .expect("the client is in the group");
        let processed = group
            .process_message(provider, protocol_message)
            .unwrap_or_else(|error| panic!("event {} does not apply: {error}", event.seq));
        let mls_sender = String::from_utf8(processed.credential().serialized_content().to_vec())
            .expect("a UTF-8 identity");
        match processed.into_content() {
            ProcessedMessageContent::ApplicationMessage(application) => {
                let envelope = serde_json::from_slice(&application.into_bytes())
                    .expect("the plaintext is a JSON envelope");
                self.received.push(Received {
                    seq: event.seq,
                    mls_sender,
                    server_sender: (event.sender_user_id, event.sender_device_id),
                    envelope,
                });
            }
            ProcessedMessageContent::ProposalMessage(proposal) => {
                group
                    .store_pending_proposal(provider.storage(), *proposal)
                    .expect("the proposal is stored");
            }
            ProcessedMessageContent::StagedCommitMessage(staged_commit) => {
                let removed = staged_commit.self_removed();
                group
                    .merge_staged_commit(provider, *staged_commit)
                    .expect("the commit merges");
                if removed {
                    self.groups.remove(&group_id);
                    self.removed_from.push(group_id);
                }
            }
            other => panic!("unexpected content at {}: {other:?}", event.seq),
        }
    }
}

/// The `CommitConflict` of an ABORTED status ("Errors"): a `google.rpc.Status`
/// in `grpc-status-details-bin` holding it as an `Any`.
pub(crate) fn commit_conflict(status: &Status) -> proto::CommitConflict {
    let details = tonic_types::pb::Status::decode(status.details())
        .unwrap_or_else(|error| panic!("status details are a google.rpc.Status: {error}"));
    let any = details
        .details
        .iter()
        .find(|any| any.type_url == COMMIT_CONFLICT_TYPE_URL)
        .unwrap_or_else(|| panic!("no CommitConflict in {details:?}"));
    proto::CommitConflict::decode(any.value.as_slice()).expect("a CommitConflict")
}
