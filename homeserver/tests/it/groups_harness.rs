//! Group clients for the hub's tests: devices registered on the server under test
//! that keep a real openmls group in memory, as a Conclave client would, and speak
//! GroupService and DeliveryService. Handshakes travel as PublicMessages and
//! application messages as PrivateMessages; the ratchet tree travels beside the
//! GroupInfo and the Welcome, never inside them.

use crate::harness::{
    Api, KeyPackageBuilder, TestDevice, authorized, capabilities, channel, start,
};
use conclave_core::mls::{CIPHERSUITE, verification_crypto};
use conclave_proto::client::v1 as proto;
use conclave_proto::client::v1::delivery_event::Event;
use conclave_proto::client::v1::delivery_service_client::DeliveryServiceClient;
use conclave_proto::client::v1::group_service_client::GroupServiceClient;
use conclave_proto::client::v1::inbox_event;
use conclave_test_support::{DatabaseChoice, TestHomeserver};
use openmls::prelude::OpenMlsProvider as _;
use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
use openmls::prelude::{
    BasicCredential, CredentialWithKey, KeyPackage, KeyPackageIn, LeafNodeIndex,
    LeafNodeParameters, MIXED_PLAINTEXT_WIRE_FORMAT_POLICY, MlsGroup, MlsGroupCreateConfig,
    MlsGroupJoinConfig, MlsMessageBodyIn, MlsMessageIn, MlsMessageOut,
    PURE_CIPHERTEXT_WIRE_FORMAT_POLICY, ProcessedMessageContent, ProtocolVersion, RatchetTreeIn,
    StagedWelcome,
};
use openmls_rust_crypto::OpenMlsRustCrypto;
use prost::Message as _;
use std::time::Duration;
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};

/// How many past epochs clients keep secrets for, so messages sent just before a
/// commit still decrypt after it.
const MAX_PAST_EPOCHS: usize = 5;

/// Longest wait for an event a test expects; far above what any event takes, so
/// only a lost event reaches it.
pub(crate) const EVENT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a test listens to show that nothing arrives. A negative can only be
/// shown by waiting; where a test can, it also sends a later event of its own and
/// checks that the later event is the next one (which does not depend on timing).
pub(crate) const QUIET_PERIOD: Duration = Duration::from_millis(300);

/// Key packages each client publishes when it registers.
const PUBLISHED_KEY_PACKAGES: usize = 3;

/// The group configuration of every client: Conclave's cipher suite, handshakes as
/// PublicMessages (application messages are always PrivateMessages), and no
/// ratchet tree extension.
pub(crate) fn create_config() -> MlsGroupCreateConfig {
    MlsGroupCreateConfig::builder()
        .ciphersuite(CIPHERSUITE)
        .wire_format_policy(MIXED_PLAINTEXT_WIRE_FORMAT_POLICY)
        .max_past_epochs(MAX_PAST_EPOCHS)
        .use_ratchet_tree_extension(false)
        .capabilities(capabilities())
        .build()
}

fn join_config() -> MlsGroupJoinConfig {
    create_config().join_config().clone()
}

/// The TLS encoding of an outgoing MLSMessage.
pub(crate) fn bytes(message: &MlsMessageOut) -> Vec<u8> {
    message.to_bytes().expect("an MLSMessage serialises")
}

fn decode(bytes: &[u8]) -> MlsMessageIn {
    MlsMessageIn::tls_deserialize_exact(bytes).expect("the server relays MLSMessages as sent")
}

/// A KeyPackage as claimed from the directory, verified as a client must.
pub(crate) fn key_package(bytes: &[u8]) -> KeyPackage {
    let mut rest = bytes;
    KeyPackageIn::tls_deserialize(&mut rest)
        .expect("a key package")
        .validate(&verification_crypto(), ProtocolVersion::Mls10)
        .expect("a valid key package")
}

/// What a commit changes, as a client asks for it.
pub(crate) enum Change {
    Add(Vec<KeyPackage>),
    Remove(Vec<LeafNodeIndex>),
    SelfUpdate,
    /// Commits the proposals the client has received (and made).
    PendingProposals,
}

/// A commit as a client submits it: pending in the committer's group until the
/// hub has answered.
#[derive(Debug, Clone)]
pub(crate) struct Commit {
    pub(crate) commit: Vec<u8>,
    pub(crate) welcome: Option<Vec<u8>>,
    pub(crate) group_info: Vec<u8>,
}

/// A decrypted application message and what the server said about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Received {
    pub(crate) seq: u64,
    pub(crate) sender_user_id: String,
    pub(crate) sender_device_id: String,
    pub(crate) plaintext: Vec<u8>,
}

/// A registered device with its openmls state, in at most one group.
pub(crate) struct Client {
    pub(crate) device: TestDevice,
    pub(crate) api: Api,
    groups: GroupServiceClient<Channel>,
    delivery: DeliveryServiceClient<Channel>,
    pub(crate) provider: OpenMlsRustCrypto,
    pub(crate) group: Option<MlsGroup>,
    /// The newest group event handled (the device's own events included).
    pub(crate) group_seq: u64,
    /// The newest inbox event handled.
    pub(crate) inbox_seq: u64,
    /// Every group event handled, in the order it arrived.
    pub(crate) log: Vec<proto::GroupEvent>,
    /// Every application message of others, decrypted, in the order it arrived.
    pub(crate) received: Vec<Received>,
    /// Idempotency keys made so far.
    keys_made: u64,
}

impl Client {
    /// Registers `username` with a new device and publishes key packages.
    pub(crate) async fn register(channel: &Channel, username: &str) -> Client {
        let api = Api::new(channel.clone());
        let device = api.register(username).await;
        Client::enrolled(channel, api, device).await
    }

    /// Logs `username` in on a new device and publishes key packages.
    pub(crate) async fn login(channel: &Channel, username: &str) -> Client {
        let api = Api::new(channel.clone());
        let device = api.login(username).await;
        Client::enrolled(channel, api, device).await
    }

    async fn enrolled(channel: &Channel, api: Api, device: TestDevice) -> Client {
        let client = Client {
            device,
            api,
            groups: GroupServiceClient::new(channel.clone()).max_encoding_message_size(usize::MAX),
            delivery: DeliveryServiceClient::new(channel.clone()),
            provider: OpenMlsRustCrypto::default(),
            group: None,
            group_seq: 0,
            inbox_seq: 0,
            log: Vec::new(),
            received: Vec::new(),
            keys_made: 0,
        };
        let key_packages = (0..PUBLISHED_KEY_PACKAGES)
            .map(|_| client.fresh_key_package())
            .collect();
        client
            .api
            .upload(&client.device, key_packages, None)
            .await
            .expect("uploading key packages");
        client
    }

    /// Talks to the server over `channel` from now on (after a restart).
    pub(crate) fn reconnect(&mut self, channel: &Channel) {
        self.api = Api::new(channel.clone());
        self.groups =
            GroupServiceClient::new(channel.clone()).max_encoding_message_size(usize::MAX);
        self.delivery = DeliveryServiceClient::new(channel.clone());
    }

    /// The device loses its MLS state (its session and signature key survive),
    /// as after a reinstall from a backup of its keys alone.
    pub(crate) fn lose_state(&mut self) {
        self.provider = OpenMlsRustCrypto::default();
        self.group = None;
        self.group_seq = 0;
    }

    /// `name@domain/device_id`.
    pub(crate) fn identity(&self) -> &str {
        &self.device.identity
    }

    /// A key package of this device whose private keys it keeps, serialised; not
    /// uploaded.
    pub(crate) fn fresh_key_package(&self) -> Vec<u8> {
        KeyPackageBuilder::new(&self.device).build_in(&self.provider)
    }

    pub(crate) fn credential_with_key(&self) -> CredentialWithKey {
        CredentialWithKey {
            credential: BasicCredential::new(self.device.identity.clone().into_bytes()).into(),
            signature_key: self.device.signer.to_public_vec().into(),
        }
    }

    /// A new idempotency key, unique for this device.
    pub(crate) fn new_key(&mut self) -> Vec<u8> {
        self.keys_made += 1;
        format!("{}-{}", self.device.device_id, self.keys_made).into_bytes()
    }

    pub(crate) fn group(&self) -> &MlsGroup {
        self.group.as_ref().expect("the client is in a group")
    }

    pub(crate) fn group_id(&self) -> Vec<u8> {
        self.group().group_id().to_vec()
    }

    pub(crate) fn epoch(&self) -> u64 {
        self.group().epoch().as_u64()
    }

    /// The leaf of the member whose credential names `identity`.
    pub(crate) fn leaf_of(&self, identity: &str) -> LeafNodeIndex {
        self.group()
            .members()
            .find(|member| member.credential.serialized_content() == identity.as_bytes())
            .unwrap_or_else(|| panic!("{identity} is not in the group"))
            .index
    }

    // GroupService.

    /// The group's first GroupInfo (with the external_pub extension, which
    /// `export_group_info` always adds) and ratchet tree, for CreateGroup.
    pub(crate) fn new_group(&mut self) -> proto::CreateGroupRequest {
        let group = MlsGroup::new(
            &self.provider,
            &self.device.signer,
            &create_config(),
            self.credential_with_key(),
        )
        .expect("openmls creates the group");
        let group_info = group
            .export_group_info(self.provider.crypto(), &self.device.signer, false)
            .expect("openmls exports the group info");
        let ratchet_tree = group
            .export_ratchet_tree()
            .tls_serialize_detached()
            .expect("a ratchet tree serialises");
        self.group = Some(group);
        proto::CreateGroupRequest {
            idempotency_key: self.new_key(),
            group_info: bytes(&group_info),
            ratchet_tree,
        }
    }

    pub(crate) async fn try_create_group(
        &self,
        request: proto::CreateGroupRequest,
    ) -> Result<proto::CreateGroupResponse, Status> {
        let request = authorized(&self.device.token, request);
        Ok(self
            .groups
            .clone()
            .create_group(request)
            .await?
            .into_inner())
    }

    /// Creates a group of this device alone and registers it with the hub.
    pub(crate) async fn create_group(&mut self) -> Vec<u8> {
        let request = self.new_group();
        let response = self
            .try_create_group(request)
            .await
            .expect("creating the group");
        assert_eq!(response.group_id, self.group_id());
        assert_eq!(response.epoch, 0);
        response.group_id
    }

    /// Builds a commit, pending in the group until [`Client::merge`] or
    /// [`Client::discard`].
    pub(crate) fn stage(&mut self, change: Change) -> Commit {
        let group = self.group.as_mut().expect("the client is in a group");
        let builder = group.commit_builder();
        let builder = match change {
            Change::Add(key_packages) => builder.propose_adds(key_packages),
            Change::Remove(leaves) => builder.propose_removals(leaves),
            Change::SelfUpdate => builder.force_self_update(true),
            Change::PendingProposals => builder.consume_proposal_store(true),
        };
        let provider = &self.provider;
        let (commit, welcome, group_info) = builder
            .load_psks(provider.storage())
            .expect("loading PSKs")
            .create_group_info(true)
            .build(
                provider.rand(),
                provider.crypto(),
                &self.device.signer,
                |_| true,
            )
            .expect("openmls builds the commit")
            .stage_commit(provider)
            .expect("openmls stages the commit")
            .into_messages();
        Commit {
            commit: bytes(&commit),
            welcome: welcome.as_ref().map(bytes),
            group_info: bytes(&group_info.expect("the group info was asked for")),
        }
    }

    /// The hub accepted this client's pending commit.
    pub(crate) fn merge(&mut self) {
        let provider = &self.provider;
        let group = self.group.as_mut().expect("the client is in a group");
        group
            .merge_pending_commit(provider)
            .expect("merging the pending commit");
    }

    /// The hub refused this client's pending commit.
    pub(crate) fn discard(&mut self) {
        let storage = self.provider.storage();
        let group = self.group.as_mut().expect("the client is in a group");
        group
            .clear_pending_commit(storage)
            .expect("clearing the pending commit");
    }

    /// A SubmitCommit request for `commit` with a new idempotency key.
    pub(crate) fn commit_request(&mut self, commit: &Commit) -> proto::SubmitCommitRequest {
        proto::SubmitCommitRequest {
            idempotency_key: self.new_key(),
            group_id: self.group_id(),
            commit: commit.commit.clone(),
            welcome: commit.welcome.clone(),
            group_info: commit.group_info.clone(),
        }
    }

    pub(crate) async fn try_submit_commit(
        &self,
        request: proto::SubmitCommitRequest,
    ) -> Result<proto::SubmitResponse, Status> {
        let request = authorized(&self.device.token, request);
        Ok(self
            .groups
            .clone()
            .submit_commit(request)
            .await?
            .into_inner())
    }

    /// Builds and submits a commit; merges it if accepted, drops it if not.
    pub(crate) async fn try_commit(
        &mut self,
        change: Change,
    ) -> Result<proto::SubmitResponse, Status> {
        let commit = self.stage(change);
        let request = self.commit_request(&commit);
        let result = self.try_submit_commit(request).await;
        match &result {
            Ok(_) => self.merge(),
            Err(_) => self.discard(),
        }
        result
    }

    /// Builds and submits a commit the hub must accept, and merges it.
    pub(crate) async fn commit(&mut self, change: Change) -> proto::SubmitResponse {
        let response = self
            .try_commit(change)
            .await
            .unwrap_or_else(|status| panic!("{}: commit refused: {status:?}", self.identity()));
        assert_eq!(
            response.epoch,
            self.epoch(),
            "the hub's epoch is the client's"
        );
        response
    }

    /// Claims the key packages of every device of these users.
    pub(crate) async fn claim(&self, user_ids: &[&str]) -> Vec<KeyPackage> {
        let mut key_packages = Vec::new();
        for user_id in user_ids {
            for claimed in self.api.claim(&self.device, user_id).await {
                key_packages.push(key_package(&claimed.key_package));
            }
        }
        key_packages
    }

    /// Adds every device of these users, through the directory.
    pub(crate) async fn invite(&mut self, user_ids: &[&str]) -> proto::SubmitResponse {
        let key_packages = self.claim(user_ids).await;
        self.commit(Change::Add(key_packages)).await
    }

    /// Proposes a self-update (kept in this client's proposal store).
    pub(crate) fn propose_self_update(&mut self) -> Vec<u8> {
        let provider = &self.provider;
        let group = self.group.as_mut().expect("the client is in a group");
        let (proposal, _) = group
            .propose_self_update(provider, &self.device.signer, LeafNodeParameters::default())
            .expect("openmls builds the proposal");
        bytes(&proposal)
    }

    pub(crate) fn proposal_request(&mut self, proposal: Vec<u8>) -> proto::SubmitProposalRequest {
        proto::SubmitProposalRequest {
            idempotency_key: self.new_key(),
            group_id: self.group_id(),
            proposal,
        }
    }

    pub(crate) async fn try_submit_proposal(
        &self,
        request: proto::SubmitProposalRequest,
    ) -> Result<proto::SubmitResponse, Status> {
        let request = authorized(&self.device.token, request);
        Ok(self
            .groups
            .clone()
            .submit_proposal(request)
            .await?
            .into_inner())
    }

    /// Forgets the proposals in this client's store (after the hub refused one).
    pub(crate) fn forget_proposals(&mut self) {
        let storage = self.provider.storage();
        let group = self.group.as_mut().expect("the client is in a group");
        group
            .clear_pending_proposals(storage)
            .expect("clearing pending proposals");
    }

    /// Sends handshakes encrypted from now on (`true`), or as PublicMessages again.
    pub(crate) fn encrypt_handshakes(&mut self, encrypt: bool) {
        let policy = if encrypt {
            PURE_CIPHERTEXT_WIRE_FORMAT_POLICY
        } else {
            MIXED_PLAINTEXT_WIRE_FORMAT_POLICY
        };
        let config = MlsGroupJoinConfig::builder()
            .wire_format_policy(policy)
            .max_past_epochs(MAX_PAST_EPOCHS)
            .use_ratchet_tree_extension(false)
            .build();
        let storage = self.provider.storage();
        let group = self.group.as_mut().expect("the client is in a group");
        group
            .set_configuration(storage, &config)
            .expect("setting the group configuration");
    }

    /// An application message (a PrivateMessage) of the current epoch.
    pub(crate) fn encrypt(&mut self, plaintext: &[u8]) -> Vec<u8> {
        let provider = &self.provider;
        let group = self.group.as_mut().expect("the client is in a group");
        let message = group
            .create_message(provider, &self.device.signer, plaintext)
            .expect("openmls encrypts the message");
        bytes(&message)
    }

    pub(crate) fn message_request(&mut self, message: Vec<u8>) -> proto::SendMessageRequest {
        proto::SendMessageRequest {
            idempotency_key: self.new_key(),
            group_id: self.group_id(),
            message,
        }
    }

    pub(crate) async fn try_send_message(
        &self,
        request: proto::SendMessageRequest,
    ) -> Result<proto::SubmitResponse, Status> {
        let request = authorized(&self.device.token, request);
        Ok(self
            .groups
            .clone()
            .send_message(request)
            .await?
            .into_inner())
    }

    /// Encrypts and sends a message the hub must accept.
    pub(crate) async fn send(&mut self, plaintext: &str) -> proto::SubmitResponse {
        let message = self.encrypt(plaintext.as_bytes());
        let request = self.message_request(message);
        self.try_send_message(request)
            .await
            .unwrap_or_else(|status| panic!("{}: message refused: {status:?}", self.identity()))
    }

    pub(crate) async fn try_group_info(
        &self,
        group_id: &[u8],
    ) -> Result<proto::GetGroupInfoResponse, Status> {
        let request = authorized(
            &self.device.token,
            proto::GetGroupInfoRequest {
                group_id: group_id.to_vec(),
            },
        );
        Ok(self
            .groups
            .clone()
            .get_group_info(request)
            .await?
            .into_inner())
    }

    /// Joins (or rejoins) a group by external commit from the hub's GroupInfo.
    pub(crate) async fn try_join_externally(
        &mut self,
        group_id: &[u8],
    ) -> Result<proto::SubmitResponse, Status> {
        let info = self.try_group_info(group_id).await?;
        let (group, request) = self.external_commit(group_id, &info);
        let response = self.try_submit_commit(request).await?;
        // The device's events start after its own commit.
        self.group = Some(group);
        self.group_seq = response.seq;
        Ok(response)
    }

    /// An external commit into the group `info` describes, and the group the
    /// device has once the hub accepts it.
    pub(crate) fn external_commit(
        &mut self,
        group_id: &[u8],
        info: &proto::GetGroupInfoResponse,
    ) -> (MlsGroup, proto::SubmitCommitRequest) {
        let MlsMessageBodyIn::GroupInfo(group_info) = decode(&info.group_info).extract() else {
            panic!("GetGroupInfo returned no GroupInfo");
        };
        let ratchet_tree = RatchetTreeIn::tls_deserialize_exact(&info.ratchet_tree)
            .expect("GetGroupInfo returned a ratchet tree");
        let provider = &self.provider;
        let (group, bundle) = MlsGroup::external_commit_builder()
            .with_ratchet_tree(ratchet_tree)
            .with_config(join_config())
            .build_group(provider, group_info, self.credential_with_key())
            .expect("openmls builds the external commit's group")
            .load_psks(provider.storage())
            .expect("loading PSKs")
            .create_group_info(true)
            .build(
                provider.rand(),
                provider.crypto(),
                &self.device.signer,
                |_| true,
            )
            .expect("openmls builds the external commit")
            .finalize(provider)
            .expect("openmls finalises the external commit");
        let (commit, _, new_group_info) = bundle.into_messages();
        let request = proto::SubmitCommitRequest {
            idempotency_key: self.new_key(),
            group_id: group_id.to_vec(),
            commit: bytes(&commit),
            welcome: None,
            group_info: bytes(&new_group_info.expect("the group info was asked for")),
        };
        (group, request)
    }

    pub(crate) async fn try_list_groups(&self) -> Result<Vec<proto::GroupSummary>, Status> {
        let request = authorized(&self.device.token, proto::ListGroupsRequest {});
        Ok(self
            .groups
            .clone()
            .list_groups(request)
            .await?
            .into_inner()
            .groups)
    }

    /// The summary of `group_id` from ListGroups, if the device is a member.
    pub(crate) async fn summary_of(&self, group_id: &[u8]) -> Option<proto::GroupSummary> {
        let groups = self.try_list_groups().await.expect("listing groups");
        groups.into_iter().find(|group| group.group_id == group_id)
    }

    /// The summary of this client's group.
    pub(crate) async fn summary(&self) -> proto::GroupSummary {
        self.summary_of(&self.group_id())
            .await
            .unwrap_or_else(|| panic!("{} does not list its group", self.identity()))
    }

    // DeliveryService.

    pub(crate) async fn try_fetch(&self, limit: u32) -> Result<Vec<proto::DeliveryEvent>, Status> {
        let request = authorized(&self.device.token, proto::FetchRequest { limit });
        Ok(self
            .delivery
            .clone()
            .fetch(request)
            .await?
            .into_inner()
            .events)
    }

    pub(crate) async fn fetch(&self, limit: u32) -> Vec<proto::DeliveryEvent> {
        self.try_fetch(limit).await.expect("fetching")
    }

    pub(crate) async fn try_ack(&self, request: proto::AckRequest) -> Result<(), Status> {
        let request = authorized(&self.device.token, request);
        self.delivery.clone().ack(request).await?;
        Ok(())
    }

    /// Acknowledges everything handled so far.
    pub(crate) async fn ack_handled(&self) {
        let groups = match &self.group {
            Some(group) if self.group_seq > 0 => vec![proto::GroupAck {
                group_id: group.group_id().to_vec(),
                seq: self.group_seq,
            }],
            _ => Vec::new(),
        };
        let request = proto::AckRequest {
            groups,
            inbox_seq: self.inbox_seq,
        };
        self.try_ack(request).await.expect("acknowledging");
    }

    /// Fetches, handles and acknowledges pages until nothing is left; returns the
    /// application messages received.
    pub(crate) async fn sync(&mut self) -> Vec<Received> {
        let before = self.received.len();
        loop {
            let events = self.fetch(0).await;
            if events.is_empty() {
                break;
            }
            for event in events {
                self.handle(event);
            }
            self.ack_handled().await;
        }
        self.received[before..].to_vec()
    }

    pub(crate) async fn subscribe(&self) -> Subscription {
        let request = authorized(&self.device.token, proto::SubscribeRequest {});
        let stream = self
            .delivery
            .clone()
            .subscribe(request)
            .await
            .expect("subscribing")
            .into_inner();
        Subscription(stream)
    }

    /// Handles one event as a client does: joins from a Welcome, merges commits,
    /// stores proposals, decrypts messages. Its own events it already applied when
    /// the hub accepted them. Events must come in order, each once.
    pub(crate) fn handle(&mut self, event: proto::DeliveryEvent) {
        match event.event.expect("an event carries an event") {
            Event::InboxEvent(inbox) => {
                assert!(
                    inbox.seq > self.inbox_seq,
                    "{}: inbox event {} after {}",
                    self.identity(),
                    inbox.seq,
                    self.inbox_seq
                );
                self.inbox_seq = inbox.seq;
                assert!(inbox.server_time.is_some(), "an inbox event has a time");
                let Some(inbox_event::Event::Welcome(welcome)) = inbox.event else {
                    panic!("an inbox event carries a Welcome");
                };
                self.join(&welcome);
            }
            Event::GroupEvent(group_event) => self.handle_group_event(group_event),
        }
    }

    fn join(&mut self, welcome: &proto::WelcomeEvent) {
        assert!(self.group.is_none(), "{}: welcomed twice", self.identity());
        let MlsMessageBodyIn::Welcome(message) = decode(&welcome.welcome).extract() else {
            panic!("the Welcome event carries no Welcome");
        };
        let ratchet_tree = RatchetTreeIn::tls_deserialize_exact(&welcome.ratchet_tree)
            .expect("the Welcome event carries a ratchet tree");
        let group = StagedWelcome::new_from_welcome(
            &self.provider,
            &join_config(),
            message,
            Some(ratchet_tree),
        )
        .expect("openmls accepts the Welcome")
        .into_group(&self.provider)
        .expect("openmls joins the group");
        assert_eq!(group.group_id().as_slice(), welcome.group_id.as_slice());
        self.group = Some(group);
        self.group_seq = welcome.commit_seq;
    }

    fn handle_group_event(&mut self, event: proto::GroupEvent) {
        let name = self.identity().to_owned();
        assert_eq!(
            event.group_id,
            self.group_id(),
            "{name}: event of another group"
        );
        assert!(
            event.seq > self.group_seq,
            "{name}: group event {} after {} (repeated or out of order)",
            event.seq,
            self.group_seq
        );
        assert!(event.server_time.is_some(), "a group event has a time");
        self.group_seq = event.seq;
        self.log.push(event.clone());
        let own = event.sender_user_id == self.device.user_id
            && event.sender_device_id == self.device.device_id;
        if own {
            return;
        }
        let message = decode(&event.message)
            .try_into_protocol_message()
            .expect("a group event is a protocol message");
        let provider = &self.provider;
        let group = self.group.as_mut().expect("the client is in a group");
        let processed = group
            .process_message(provider, message)
            .unwrap_or_else(|error| panic!("{name}: cannot process event {}: {error}", event.seq));
        match processed.into_content() {
            ProcessedMessageContent::ApplicationMessage(message) => {
                self.received.push(Received {
                    seq: event.seq,
                    sender_user_id: event.sender_user_id,
                    sender_device_id: event.sender_device_id,
                    plaintext: message.into_bytes(),
                });
            }
            ProcessedMessageContent::ProposalMessage(proposal) => group
                .store_pending_proposal(provider.storage(), *proposal)
                .expect("storing the proposal"),
            ProcessedMessageContent::StagedCommitMessage(staged_commit) => group
                .merge_staged_commit(provider, *staged_commit)
                .expect("merging the commit"),
            // The client skips its own events, and the hub relays no external
            // proposals.
            other => panic!("{name}: unexpected content {other:?}"),
        }
    }

    /// Asserts that Fetch has nothing for this device.
    pub(crate) async fn assert_nothing_new(&self) {
        let events = self.fetch(0).await;
        assert!(
            events.is_empty(),
            "{}: unexpected events {:?}",
            self.identity(),
            events.iter().map(describe).collect::<Vec<_>>()
        );
    }

    /// A handle that submits ready-made messages, for tasks.
    pub(crate) fn sender(&self) -> Sender {
        Sender {
            groups: self.groups.clone(),
            token: self.device.token.clone(),
            group_id: self.group_id(),
        }
    }
}

/// Submits messages of one device without its MLS state.
#[derive(Clone)]
pub(crate) struct Sender {
    groups: GroupServiceClient<Channel>,
    token: String,
    group_id: Vec<u8>,
}

impl Sender {
    pub(crate) async fn send(
        &self,
        idempotency_key: Vec<u8>,
        message: Vec<u8>,
    ) -> Result<proto::SubmitResponse, Status> {
        let request = proto::SendMessageRequest {
            idempotency_key,
            group_id: self.group_id.clone(),
            message,
        };
        let request = authorized(&self.token, request);
        Ok(self
            .groups
            .clone()
            .send_message(request)
            .await?
            .into_inner())
    }

    pub(crate) async fn submit_commit(
        &self,
        request: proto::SubmitCommitRequest,
    ) -> Result<proto::SubmitResponse, Status> {
        let request = authorized(&self.token, request);
        Ok(self
            .groups
            .clone()
            .submit_commit(request)
            .await?
            .into_inner())
    }

    /// Submits all of `requests` at once (each in its own task, released
    /// together by a barrier) and returns their answers in the same order.
    pub(crate) async fn race_commits(
        &self,
        requests: Vec<proto::SubmitCommitRequest>,
    ) -> Vec<Result<proto::SubmitResponse, Status>> {
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(requests.len()));
        let tasks: Vec<_> = requests
            .into_iter()
            .map(|request| {
                let sender = self.clone();
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    barrier.wait().await;
                    sender.submit_commit(request).await
                })
            })
            .collect();
        let mut answers = Vec::new();
        for task in tasks {
            answers.push(task.await.expect("the task ran"));
        }
        answers
    }
}

/// A Subscribe stream.
pub(crate) struct Subscription(Streaming<proto::DeliveryEvent>);

impl Subscription {
    /// The next event; fails the test if none comes within [`EVENT_TIMEOUT`].
    pub(crate) async fn next(&mut self) -> proto::DeliveryEvent {
        tokio::time::timeout(EVENT_TIMEOUT, self.0.message())
            .await
            .expect("no event arrived in time")
            .expect("the stream failed")
            .expect("the stream ended")
    }

    /// The next event, which must be a group event.
    pub(crate) async fn next_group_event(&mut self) -> proto::GroupEvent {
        match self.next().await.event {
            Some(Event::GroupEvent(event)) => event,
            other => panic!("expected a group event, got {other:?}"),
        }
    }

    /// Reads until the stream ends; its status if it ended with one (`None`:
    /// it ended without a status). Fails the test if it does not end within
    /// [`EVENT_TIMEOUT`].
    pub(crate) async fn end(&mut self) -> Option<Status> {
        tokio::time::timeout(EVENT_TIMEOUT, async {
            loop {
                match self.0.message().await {
                    Ok(Some(_)) => continue,
                    Ok(None) => return None,
                    Err(status) => return Some(status),
                }
            }
        })
        .await
        .expect("the stream did not end in time")
    }

    /// Asserts that nothing arrives within [`QUIET_PERIOD`] (see there).
    pub(crate) async fn assert_quiet(&mut self) {
        if let Ok(item) = tokio::time::timeout(QUIET_PERIOD, self.0.message()).await {
            panic!("expected no event, got {item:?}");
        }
    }
}

/// The sequence numbers of the group events among `events`.
pub(crate) fn group_seqs(events: &[proto::DeliveryEvent]) -> Vec<u64> {
    events
        .iter()
        .filter_map(|event| match &event.event {
            Some(Event::GroupEvent(event)) => Some(event.seq),
            _ => None,
        })
        .collect()
}

/// The Welcomes among `events`.
pub(crate) fn welcomes(events: &[proto::DeliveryEvent]) -> Vec<proto::WelcomeEvent> {
    events
        .iter()
        .filter_map(|event| match &event.event {
            Some(Event::InboxEvent(proto::InboxEvent {
                event: Some(inbox_event::Event::Welcome(welcome)),
                ..
            })) => Some(welcome.clone()),
            _ => None,
        })
        .collect()
}

/// A short description of an event, for failure messages.
pub(crate) fn describe(event: &proto::DeliveryEvent) -> String {
    match &event.event {
        Some(Event::GroupEvent(event)) => format!(
            "group event {} from {}/{}",
            event.seq, event.sender_user_id, event.sender_device_id
        ),
        Some(Event::InboxEvent(event)) => format!("inbox event {}", event.seq),
        None => "empty event".to_owned(),
    }
}

/// The `CommitConflict` in the details of an ABORTED status.
pub(crate) fn commit_conflict(status: &Status) -> proto::CommitConflict {
    assert_eq!(status.code(), Code::Aborted, "{status:?}");
    let details = tonic_types::pb::Status::decode(status.details())
        .expect("the details are a google.rpc.Status");
    let [detail] = details.details.as_slice() else {
        panic!("expected one detail, got {:?}", details.details);
    };
    assert_eq!(
        detail.type_url,
        "type.googleapis.com/conclave.client.v1.CommitConflict"
    );
    proto::CommitConflict::decode(detail.value.as_slice()).expect("a CommitConflict")
}

/// The plaintexts of received messages, as text.
pub(crate) fn texts(received: &[Received]) -> Vec<String> {
    received
        .iter()
        .map(|message| String::from_utf8(message.plaintext.clone()).expect("UTF-8 text"))
        .collect()
}

/// A server on `database`, a channel to it, and a client registered there for
/// each of `names` (in that order), each with key packages published.
pub(crate) async fn start_with_clients<const N: usize>(
    database: DatabaseChoice,
    names: [&str; N],
) -> (TestHomeserver, Channel, [Client; N]) {
    let server = start(database).await;
    let channel = channel(&server).await;
    let mut clients = Vec::with_capacity(N);
    for name in names {
        clients.push(Client::register(&channel, name).await);
    }
    let Ok(clients) = <[Client; N]>::try_from(clients) else {
        unreachable!("one client per name");
    };
    (server, channel, clients)
}

/// `creator` makes a group and adds every device of the members' users (through
/// the directory, in one commit); each member joins from its Welcome. Returns the
/// group id.
pub(crate) async fn form_group(creator: &mut Client, members: &mut [&mut Client]) -> Vec<u8> {
    let group_id = creator.create_group().await;
    if !members.is_empty() {
        let mut users: Vec<String> = members
            .iter()
            .map(|member| member.device.user_id.clone())
            .collect();
        users.sort();
        users.dedup();
        let users: Vec<&str> = users.iter().map(String::as_str).collect();
        creator.invite(&users).await;
        for member in members.iter_mut() {
            member.sync().await;
            assert!(member.group.is_some(), "{} joined", member.identity());
        }
    }
    creator.sync().await;
    group_id
}

/// Every client is at the hub's epoch with exactly the hub's ratchet tree.
pub(crate) async fn assert_in_sync(clients: &[&Client]) {
    let info = clients[0]
        .try_group_info(&clients[0].group_id())
        .await
        .expect("reading the group info");
    for client in clients {
        assert_eq!(client.epoch(), info.epoch, "{}: epoch", client.identity());
        let tree = client
            .group()
            .export_ratchet_tree()
            .tls_serialize_detached()
            .expect("a ratchet tree serialises");
        assert!(
            tree == info.ratchet_tree,
            "{}: the ratchet tree differs from the hub's",
            client.identity()
        );
    }
}
