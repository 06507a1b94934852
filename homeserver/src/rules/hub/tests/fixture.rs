//! Fixtures: real openmls clients in a real group, with the hub following it. Every
//! commit the hub accepts is merged or processed by every member, and the members'
//! trees are compared with the hub's, so a fixture that builds at all has shown the
//! hub and the clients agree.

use conclave_core::ids::CredentialIdentity;
use conclave_core::mls::CIPHERSUITE;
use openmls::prelude::OpenMlsProvider as _;
use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
use openmls::prelude::{
    BasicCredential, CredentialWithKey, GroupId, KeyPackage, LeafNodeIndex, LeafNodeParameters,
    MIXED_PLAINTEXT_WIRE_FORMAT_POLICY, MlsGroup, MlsGroupCreateConfig, MlsGroupJoinConfig,
    MlsMessageBodyIn, MlsMessageIn, MlsMessageOut, NewSignerBundle, ProcessedMessageContent,
    RatchetTreeIn, StagedWelcome,
};
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::OpenMlsRustCrypto;

use super::super::{CommitDecision, CommitSubmission, HubGroup, NewLeaf};

/// The devices `GroupFixture::with_members(n)` puts in its group, in leaf order.
pub(crate) const ALICE: &str = "alice@localhost/00000000000000a1";
pub(crate) const BOB: &str = "bob@localhost/00000000000000b1";
pub(crate) const CAROL: &str = "carol@localhost/00000000000000c1";
const FOUNDERS: [&str; 3] = [ALICE, BOB, CAROL];
/// Devices that join later.
pub(crate) const ALICE_SECOND: &str = "alice@localhost/00000000000000a2";
pub(crate) const DAVE: &str = "dave@localhost/00000000000000d1";
pub(crate) const ERIN: &str = "erin@localhost/00000000000000e1";
pub(crate) const MALLORY: &str = "mallory@localhost/00000000000000f1";

/// How many past epochs clients keep secrets for.
const MAX_PAST_EPOCHS: usize = 5;

pub(crate) fn identity(text: &str) -> CredentialIdentity {
    text.parse().unwrap()
}

/// The group configuration every client uses: Conclave's cipher suite, handshakes
/// as PublicMessages (application messages are always PrivateMessages), and the
/// ratchet tree travelling beside the GroupInfo rather than inside it.
pub(crate) fn create_config() -> MlsGroupCreateConfig {
    MlsGroupCreateConfig::builder()
        .ciphersuite(CIPHERSUITE)
        .wire_format_policy(MIXED_PLAINTEXT_WIRE_FORMAT_POLICY)
        .max_past_epochs(MAX_PAST_EPOCHS)
        .use_ratchet_tree_extension(false)
        .build()
}

fn join_config() -> MlsGroupJoinConfig {
    create_config().join_config().clone()
}

/// One client device: its credential, signature key and openmls storage.
pub(crate) struct Device {
    /// The device as the service authenticates it: the caller of its submissions.
    pub(crate) identity: CredentialIdentity,
    /// The identity bytes in its MLS BasicCredential (normally `identity`).
    credential: Vec<u8>,
    pub(crate) provider: OpenMlsRustCrypto,
    pub(crate) signer: SignatureKeyPair,
}

impl Device {
    pub(crate) fn new(identity: &str) -> Device {
        Device::with_credential(identity, identity.as_bytes())
    }

    /// A device authenticated as `identity` whose credential carries other bytes
    /// (which need not name a device at all).
    pub(crate) fn with_credential(identity: &str, credential: &[u8]) -> Device {
        Device {
            identity: self::identity(identity),
            credential: credential.to_vec(),
            provider: OpenMlsRustCrypto::default(),
            signer: SignatureKeyPair::new(CIPHERSUITE.signature_algorithm()).unwrap(),
        }
    }

    /// The same device (identity and signature key) on empty storage: a device that
    /// lost its group state.
    pub(crate) fn restored(&self) -> Device {
        self.restored_as(&self.identity.to_string())
    }

    /// Another device holding this device's signature key.
    pub(crate) fn restored_as(&self, identity: &str) -> Device {
        // The key pair is not Clone; copying it through a storage provider is the
        // public way to duplicate it.
        let provider = OpenMlsRustCrypto::default();
        self.signer.store(provider.storage()).unwrap();
        let scheme = CIPHERSUITE.signature_algorithm();
        let signer =
            SignatureKeyPair::read(provider.storage(), self.signer.public(), scheme).unwrap();
        Device {
            identity: self::identity(identity),
            credential: identity.as_bytes().to_vec(),
            provider,
            signer,
        }
    }

    pub(crate) fn credential_with_key(&self) -> CredentialWithKey {
        CredentialWithKey {
            credential: BasicCredential::new(self.credential.clone()).into(),
            signature_key: self.signer.to_public_vec().into(),
        }
    }

    /// A fresh key package; its private keys stay in this device's storage.
    pub(crate) fn key_package(&self) -> KeyPackage {
        KeyPackage::builder()
            .build(
                CIPHERSUITE,
                &self.provider,
                &self.signer,
                self.credential_with_key(),
            )
            .unwrap()
            .key_package()
            .clone()
    }

    /// The leaf this device brings to a commit.
    pub(crate) fn leaf(&self) -> NewLeaf {
        NewLeaf {
            identity: self.identity.clone(),
            signature_key: self.signer.to_public_vec(),
            key_package_ref: None,
        }
    }

    /// The leaf an Add of this key package brings.
    pub(crate) fn added_leaf(&self, key_package: &KeyPackage) -> NewLeaf {
        let key_package_ref = key_package.hash_ref(self.provider.crypto()).unwrap();
        NewLeaf {
            key_package_ref: Some(key_package_ref.as_slice().to_vec()),
            ..self.leaf()
        }
    }
}

/// A member: a device and its view of the group.
pub(crate) struct Member {
    pub(crate) device: Device,
    pub(crate) group: MlsGroup,
}

/// What a commit changes, as a client asks for it.
pub(crate) enum Change {
    Add(Vec<KeyPackage>),
    Remove(Vec<u32>),
    SelfUpdate,
    /// A self-update onto this device's signature key and credential (which may
    /// name another device).
    NewSigner(Box<Device>),
    /// Commits the proposals the member has received.
    PendingProposals,
}

/// A commit as a client submits it, with everything owned.
#[derive(Clone)]
pub(crate) struct Submitted {
    pub(crate) sender: CredentialIdentity,
    pub(crate) commit: Vec<u8>,
    pub(crate) welcome: Option<Vec<u8>>,
    pub(crate) group_info: Vec<u8>,
}

impl Submitted {
    pub(crate) fn submission(&self) -> CommitSubmission<'_> {
        CommitSubmission {
            sender: &self.sender,
            commit: &self.commit,
            welcome: self.welcome.as_deref(),
            group_info: &self.group_info,
        }
    }
}

/// A group of real clients and the hub that hosts it.
pub(crate) struct GroupFixture {
    pub(crate) hub: HubGroup,
    pub(crate) members: Vec<Member>,
    /// Devices whose key packages were handed out, waiting for a Welcome.
    invited: Vec<Device>,
    /// A device that built an external commit, waiting for the hub to accept it.
    joiner: Option<Member>,
}

impl GroupFixture {
    /// Alice creates the group and registers it with the hub; if `count` > 1 she adds
    /// Bob and then Carol in one commit that the hub accepts. At most 3.
    pub(crate) fn with_members(count: usize) -> GroupFixture {
        GroupFixture::build(None, &FOUNDERS[..count])
    }

    /// A group under a chosen group id, of these devices (the first creates it and
    /// adds the others).
    pub(crate) fn with_group_id(group_id: GroupId, founders: &[&str]) -> GroupFixture {
        GroupFixture::build(Some(group_id), founders)
    }

    fn build(group_id: Option<GroupId>, founders: &[&str]) -> GroupFixture {
        let creator = Device::new(founders[0]);
        let (provider, signer, config) = (&creator.provider, &creator.signer, &create_config());
        let credential_with_key = creator.credential_with_key();
        let group = match group_id {
            Some(group_id) => {
                MlsGroup::new_with_group_id(provider, signer, config, group_id, credential_with_key)
            }
            None => MlsGroup::new(provider, signer, config, credential_with_key),
        }
        .unwrap();
        let group_info = group
            .export_group_info(creator.provider.crypto(), &creator.signer, false)
            .unwrap();
        let ratchet_tree = group
            .export_ratchet_tree()
            .tls_serialize_detached()
            .unwrap();
        let hub = HubGroup::create(&bytes(&group_info), &ratchet_tree, &creator.identity).unwrap();
        let mut fixture = GroupFixture {
            hub,
            members: vec![Member {
                device: creator,
                group,
            }],
            invited: Vec::new(),
            joiner: None,
        };
        if founders.len() > 1 {
            let key_packages = founders[1..]
                .iter()
                .map(|name| fixture.invite(Device::new(name)))
                .collect();
            let submitted = fixture.commit(0, Change::Add(key_packages));
            fixture.accept(&submitted);
        }
        fixture
    }

    /// Hands out a key package of a new device, which joins when a Welcome for it
    /// is accepted.
    pub(crate) fn invite(&mut self, device: Device) -> KeyPackage {
        let key_package = device.key_package();
        self.invited.push(device);
        key_package
    }

    /// The invited device with this identity.
    pub(crate) fn invited(&self, name: &str) -> &Device {
        let identity = identity(name);
        self.invited
            .iter()
            .find(|device| device.identity == identity)
            .unwrap()
    }

    /// A member builds a commit (pending in its group until accepted) with the
    /// GroupInfo of the epoch it creates.
    pub(crate) fn commit(&mut self, member: usize, change: Change) -> Submitted {
        let Member { device, group } = &mut self.members[member];
        let builder = group.commit_builder();
        let builder = match &change {
            Change::Add(key_packages) => builder.propose_adds(key_packages.iter().cloned()),
            Change::Remove(leaves) => {
                builder.propose_removals(leaves.iter().copied().map(LeafNodeIndex::new))
            }
            Change::SelfUpdate | Change::NewSigner(_) => builder.force_self_update(true),
            Change::PendingProposals => builder.consume_proposal_store(true),
        };
        let builder = builder
            .load_psks(device.provider.storage())
            .unwrap()
            .create_group_info(true);
        let provider = &device.provider;
        let built = match change {
            Change::NewSigner(new_device) => {
                let bundle = NewSignerBundle {
                    signer: &new_device.signer,
                    credential_with_key: new_device.credential_with_key(),
                };
                let built = builder
                    .build_with_new_signer(
                        provider.rand(),
                        provider.crypto(),
                        &device.signer,
                        bundle,
                        |_| true,
                    )
                    .unwrap();
                // From now on the member signs with the new key.
                device.signer = new_device.signer;
                built
            }
            _ => builder
                .build(provider.rand(), provider.crypto(), &device.signer, |_| true)
                .unwrap(),
        };
        let (commit, welcome, group_info) = built.stage_commit(provider).unwrap().into_messages();
        Submitted {
            sender: device.identity.clone(),
            commit: bytes(&commit),
            welcome: welcome.as_ref().map(bytes),
            group_info: bytes(&group_info.unwrap()),
        }
    }

    /// A device joins by external commit from the hub's GroupInfo and tree; it
    /// becomes a member when the hub accepts the commit.
    pub(crate) fn external_commit(&mut self, device: Device) -> Submitted {
        let MlsMessageBodyIn::GroupInfo(group_info) = decode(&self.hub.group_info()).extract()
        else {
            panic!("the hub's group info is not a GroupInfo");
        };
        let ratchet_tree =
            RatchetTreeIn::tls_deserialize(&mut self.hub.ratchet_tree().as_slice()).unwrap();
        let provider = &device.provider;
        let (group, bundle) = MlsGroup::external_commit_builder()
            .with_ratchet_tree(ratchet_tree)
            .with_config(join_config())
            .build_group(provider, group_info, device.credential_with_key())
            .unwrap()
            .load_psks(provider.storage())
            .unwrap()
            .create_group_info(true)
            .build(provider.rand(), provider.crypto(), &device.signer, |_| true)
            .unwrap()
            .finalize(provider)
            .unwrap();
        let (commit, welcome, group_info) = bundle.into_messages();
        let submitted = Submitted {
            sender: device.identity.clone(),
            commit: bytes(&commit),
            welcome: welcome.as_ref().map(bytes),
            group_info: bytes(&group_info.unwrap()),
        };
        self.joiner = Some(Member { device, group });
        submitted
    }

    /// The hub checks and applies a commit; every member follows, added devices join
    /// from the Welcome and the hub's tree.
    pub(crate) fn accept(&mut self, submitted: &Submitted) {
        let decision = self.hub.check_commit(&submitted.submission()).unwrap();
        self.apply(decision, submitted);
    }

    /// Applies an accepted decision at the hub and brings the clients along.
    pub(crate) fn apply(&mut self, decision: CommitDecision, submitted: &Submitted) {
        let (external, removed) = (decision.external, decision.removed.clone());
        let added = decision.added.clone();
        let epoch = self.hub.epoch();
        self.hub.apply_commit(decision).unwrap();
        assert_eq!(self.hub.epoch(), epoch + 1);

        let commit = decode(&submitted.commit)
            .try_into_protocol_message()
            .unwrap();
        let mut members = Vec::new();
        for mut member in self.members.drain(..) {
            let provider = &member.device.provider;
            if removed.contains(&member.device.identity) {
                continue;
            }
            if !external && member.device.identity == submitted.sender {
                member.group.merge_pending_commit(provider).unwrap();
            } else {
                // A member that lost a race for this epoch drops its own commit.
                member
                    .group
                    .clear_pending_commit(provider.storage())
                    .unwrap();
                let processed = member
                    .group
                    .process_message(provider, commit.clone())
                    .unwrap();
                let ProcessedMessageContent::StagedCommitMessage(staged_commit) =
                    processed.into_content()
                else {
                    panic!("{}: the commit was not staged", member.device.identity);
                };
                member
                    .group
                    .merge_staged_commit(provider, *staged_commit)
                    .unwrap();
            }
            members.push(member);
        }
        if external {
            members.push(self.joiner.take().unwrap());
        }
        for leaf in &added {
            let at = self
                .invited
                .iter()
                .position(|device| device.identity == leaf.identity)
                .unwrap();
            let device = self.invited.remove(at);
            let MlsMessageBodyIn::Welcome(welcome) =
                decode(submitted.welcome.as_ref().unwrap()).extract()
            else {
                panic!("the welcome is not a Welcome");
            };
            let ratchet_tree =
                RatchetTreeIn::tls_deserialize(&mut self.hub.ratchet_tree().as_slice()).unwrap();
            let group = StagedWelcome::new_from_welcome(
                &device.provider,
                &join_config(),
                welcome,
                Some(ratchet_tree),
            )
            .unwrap()
            .into_group(&device.provider)
            .unwrap();
            members.push(Member { device, group });
        }
        self.members = members;
        self.assert_in_sync();
    }

    /// Every member has the hub's epoch and exactly the hub's ratchet tree.
    pub(crate) fn assert_in_sync(&self) {
        let tree = self.hub.ratchet_tree();
        for member in &self.members {
            let name = &member.device.identity;
            assert_eq!(
                member.group.epoch().as_u64(),
                self.hub.epoch(),
                "{name}: epoch"
            );
            let member_tree = member
                .group
                .export_ratchet_tree()
                .tls_serialize_detached()
                .unwrap();
            assert!(
                member_tree == tree,
                "{name}: ratchet tree differs from the hub's"
            );
        }
        let mut hub_members: Vec<_> = self.hub.members().into_iter().map(|m| m.identity).collect();
        let mut client_members: Vec<_> = self
            .members
            .iter()
            .map(|m| m.device.identity.clone())
            .collect();
        assert_eq!(self.hub.member_count(), hub_members.len() as u64);
        hub_members.sort();
        client_members.sort();
        assert_eq!(hub_members, client_members);
    }

    /// A member advances the group one epoch by a self-update the hub accepts.
    pub(crate) fn advance(&mut self, member: usize) {
        let submitted = self.commit(member, Change::SelfUpdate);
        self.accept(&submitted);
    }

    /// A member proposes a self-update, as a PublicMessage.
    pub(crate) fn propose_self_update(&mut self, member: usize) -> Vec<u8> {
        let Member { device, group } = &mut self.members[member];
        let (proposal, _) = group
            .propose_self_update(
                &device.provider,
                &device.signer,
                LeafNodeParameters::default(),
            )
            .unwrap();
        bytes(&proposal)
    }
}

pub(crate) fn bytes(message: &MlsMessageOut) -> Vec<u8> {
    message.to_bytes().unwrap()
}

pub(crate) fn decode(bytes: &[u8]) -> MlsMessageIn {
    MlsMessageIn::tls_deserialize_exact(bytes).unwrap()
}
