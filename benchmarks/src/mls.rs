//! The clients' side of MLS, with real openmls: devices with their own Ed25519
//! keys and in-memory openmls storage, key packages, the creator's group, add
//! commits, joining by Welcome, and application messages.
//!
//! Groups are configured as Conclave's client library configures them: the one
//! cipher suite, handshakes as PublicMessages (so the hub can validate them),
//! the ratchet tree beside the GroupInfo rather than inside it, and adds
//! committed without a path (openmls's `propose_adds` without a self-update).

use crate::api::{Commit, Session};
use anyhow::{Context as _, anyhow};
use conclave_core::mls::{CIPHERSUITE, GROUP_METADATA_EXTENSION_TYPE};
use conclave_proto::client::v1 as proto;
use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
use openmls::prelude::{
    BasicCredential, Capabilities, CredentialWithKey, ExtensionType, KeyPackage, KeyPackageIn,
    Lifetime, MlsGroup, MlsGroupCreateConfig, MlsGroupJoinConfig, MlsMessageBodyIn, MlsMessageIn,
    PURE_PLAINTEXT_WIRE_FORMAT_POLICY, ProcessedMessageContent, ProtocolMessage, ProtocolVersion,
    RatchetTreeIn, StagedWelcome,
};
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::OpenMlsRustCrypto;
use openmls_traits::OpenMlsProvider as _;
use std::collections::HashMap;
use std::fmt::Debug;

/// Epochs whose secrets a member keeps, as in the client library.
const MAX_PAST_EPOCHS: usize = 5;

/// Lifetime of the key packages the benchmark uploads: one day, within any
/// homeserver's configured maximum.
const KEY_PACKAGE_LIFETIME_SECONDS: u64 = 24 * 3600;

/// Turns an openmls error (not all of which are `std::error::Error + Send + Sync`)
/// into an anyhow error naming what failed.
fn failed<E: Debug>(what: &'static str) -> impl FnOnce(E) -> anyhow::Error {
    move |error| anyhow!("openmls could not {what}: {error:?}")
}

/// A fresh Ed25519 key pair of Conclave's cipher suite.
pub(crate) fn new_signer() -> anyhow::Result<SignatureKeyPair> {
    SignatureKeyPair::new(CIPHERSUITE.signature_algorithm()).map_err(failed("make a key pair"))
}

/// A device enrolled at the homeserver, with its signature key and openmls
/// storage (which keeps the private keys of its key packages).
pub(crate) struct Device {
    pub(crate) session: Session,
    pub(crate) signer: SignatureKeyPair,
    pub(crate) provider: OpenMlsRustCrypto,
}

impl Device {
    fn credential_with_key(&self) -> CredentialWithKey {
        CredentialWithKey {
            credential: BasicCredential::new(self.session.identity.clone().into_bytes()).into(),
            signature_key: self.signer.to_public_vec().into(),
        }
    }

    /// A fresh TLS-serialised KeyPackage; its private keys stay in this device's
    /// storage, so the device can join from a Welcome that uses it.
    pub(crate) fn key_package(&self) -> anyhow::Result<Vec<u8>> {
        // The homeserver refuses a package whose leaf does not list Conclave's
        // group metadata extension.
        let capabilities = Capabilities::builder()
            .extensions(vec![ExtensionType::Unknown(GROUP_METADATA_EXTENSION_TYPE)])
            .build();
        let bundle = KeyPackage::builder()
            .key_package_lifetime(Lifetime::new(KEY_PACKAGE_LIFETIME_SECONDS))
            .leaf_node_capabilities(capabilities)
            .build(
                CIPHERSUITE,
                &self.provider,
                &self.signer,
                self.credential_with_key(),
            )
            .map_err(failed("build a key package"))?;
        Ok(bundle.key_package().tls_serialize_detached()?)
    }
}

fn create_config() -> MlsGroupCreateConfig {
    MlsGroupCreateConfig::builder()
        .ciphersuite(CIPHERSUITE)
        .wire_format_policy(PURE_PLAINTEXT_WIRE_FORMAT_POLICY)
        .max_past_epochs(MAX_PAST_EPOCHS)
        .use_ratchet_tree_extension(false)
        .build()
}

fn join_config() -> MlsGroupJoinConfig {
    MlsGroupJoinConfig::builder()
        .wire_format_policy(PURE_PLAINTEXT_WIRE_FORMAT_POLICY)
        .max_past_epochs(MAX_PAST_EPOCHS)
        .use_ratchet_tree_extension(false)
        .build()
}

/// A device and its view of one group.
pub(crate) struct Member {
    pub(crate) device: Device,
    pub(crate) group: MlsGroup,
}

/// A group just created, with what CreateGroup needs.
pub(crate) struct NewGroup {
    pub(crate) creator: Member,
    pub(crate) group_info: Vec<u8>,
    pub(crate) ratchet_tree: Vec<u8>,
}

/// Creates a group whose only member is `device`.
pub(crate) fn create_group(device: Device) -> anyhow::Result<NewGroup> {
    let group = MlsGroup::new(
        &device.provider,
        &device.signer,
        &create_config(),
        device.credential_with_key(),
    )
    .map_err(failed("create a group"))?;
    let group_info = group
        .export_group_info(device.provider.crypto(), &device.signer, false)
        .map_err(failed("export the group info"))?
        .tls_serialize_detached()?;
    let ratchet_tree = group.export_ratchet_tree().tls_serialize_detached()?;
    Ok(NewGroup {
        creator: Member { device, group },
        group_info,
        ratchet_tree,
    })
}

/// Verifies claimed key packages as a client does before adding them.
pub(crate) fn verified_key_packages(
    claimed: &[proto::ClaimedKeyPackage],
) -> anyhow::Result<Vec<KeyPackage>> {
    let crypto = conclave_core::mls::verification_crypto();
    claimed
        .iter()
        .map(|claimed| {
            let key_package_in =
                KeyPackageIn::tls_deserialize_exact(claimed.key_package.as_slice())
                    .context("a claimed key package does not decode")?;
            key_package_in
                .validate(&crypto, ProtocolVersion::Mls10)
                .map_err(failed("verify a claimed key package"))
        })
        .collect()
}

fn decode(bytes: &[u8]) -> anyhow::Result<MlsMessageIn> {
    MlsMessageIn::tls_deserialize_exact(bytes).context("an MLSMessage does not decode")
}

fn protocol_message(bytes: &[u8]) -> anyhow::Result<ProtocolMessage> {
    decode(bytes)?
        .try_into_protocol_message()
        .map_err(failed("read a protocol message"))
}

impl Member {
    /// Builds a commit adding these key packages (no path), staged as pending.
    pub(crate) fn commit_adds(&mut self, key_packages: Vec<KeyPackage>) -> anyhow::Result<Commit> {
        let provider = &self.device.provider;
        let bundle = self
            .group
            .commit_builder()
            .propose_adds(key_packages)
            .load_psks(provider.storage())
            .map_err(failed("load PSKs"))?
            .create_group_info(true)
            .build(
                provider.rand(),
                provider.crypto(),
                &self.device.signer,
                |_| true,
            )
            .map_err(failed("build a commit"))?
            .stage_commit(provider)
            .map_err(failed("stage a commit"))?;
        let (commit, welcome, group_info) = bundle.into_messages();
        let group_info = group_info.ok_or_else(|| anyhow!("openmls made no GroupInfo"))?;
        Ok(Commit {
            commit: commit.tls_serialize_detached()?,
            welcome: welcome.map(|w| w.tls_serialize_detached()).transpose()?,
            group_info: group_info.tls_serialize_detached()?,
        })
    }

    /// Merges this member's pending commit after the hub accepted it.
    pub(crate) fn merge_own_commit(&mut self) -> anyhow::Result<()> {
        self.group
            .merge_pending_commit(&self.device.provider)
            .map_err(failed("merge a pending commit"))
    }

    /// Processes and merges another member's commit, as every member does.
    pub(crate) fn process_commit(&mut self, commit: &[u8]) -> anyhow::Result<()> {
        let provider = &self.device.provider;
        let processed = self
            .group
            .process_message(provider, protocol_message(commit)?)
            .map_err(failed("process a commit"))?;
        let ProcessedMessageContent::StagedCommitMessage(staged_commit) = processed.into_content()
        else {
            return Err(anyhow!("the commit was not staged as a commit"));
        };
        self.group
            .merge_staged_commit(provider, *staged_commit)
            .map_err(failed("merge a staged commit"))
    }

    /// An application message (a PrivateMessage) carrying `plaintext`.
    pub(crate) fn encrypt(&mut self, plaintext: &[u8]) -> anyhow::Result<Vec<u8>> {
        let message = self
            .group
            .create_message(&self.device.provider, &self.device.signer, plaintext)
            .map_err(failed("encrypt a message"))?;
        Ok(message.tls_serialize_detached()?)
    }

    /// The plaintext of another member's application message.
    pub(crate) fn decrypt(&mut self, message: &[u8]) -> anyhow::Result<Vec<u8>> {
        decrypt_in(&self.device, &mut self.group, message)
    }

    /// The TLS-serialised ratchet tree of the current epoch.
    pub(crate) fn ratchet_tree(&self) -> anyhow::Result<Vec<u8>> {
        Ok(self.group.export_ratchet_tree().tls_serialize_detached()?)
    }

    /// Joins a group from a Welcome that used one of the device's key packages.
    pub(crate) fn join(
        device: Device,
        welcome: &[u8],
        ratchet_tree: &[u8],
    ) -> anyhow::Result<Member> {
        let group = join_group(&device, welcome, ratchet_tree)?;
        Ok(Member { device, group })
    }
}

/// Joins a group from a Welcome that used one of `device`'s key packages.
fn join_group(device: &Device, welcome: &[u8], ratchet_tree: &[u8]) -> anyhow::Result<MlsGroup> {
    let MlsMessageBodyIn::Welcome(welcome) = decode(welcome)?.extract() else {
        return Err(anyhow!("the welcome message is not a Welcome"));
    };
    let ratchet_tree = RatchetTreeIn::tls_deserialize_exact(ratchet_tree)
        .context("the ratchet tree does not decode")?;
    StagedWelcome::new_from_welcome(
        &device.provider,
        &join_config(),
        welcome,
        Some(ratchet_tree),
    )
    .map_err(failed("process a Welcome"))?
    .into_group(&device.provider)
    .map_err(failed("join from a Welcome"))
}

/// The plaintext of an application message in `group`, as `device` reads it.
fn decrypt_in(device: &Device, group: &mut MlsGroup, message: &[u8]) -> anyhow::Result<Vec<u8>> {
    let processed = group
        .process_message(&device.provider, protocol_message(message)?)
        .map_err(failed("decrypt a message"))?;
    match processed.into_content() {
        ProcessedMessageContent::ApplicationMessage(message) => Ok(message.into_bytes()),
        _ => Err(anyhow!("the message is not an application message")),
    }
}

/// One device's view of several groups: a receiver that is in all of them.
pub(crate) struct MultiMember {
    pub(crate) device: Device,
    /// By MLS group id.
    groups: HashMap<Vec<u8>, MlsGroup>,
}

impl MultiMember {
    pub(crate) fn new(device: Device) -> MultiMember {
        MultiMember {
            device,
            groups: HashMap::new(),
        }
    }

    /// Joins one more group from a Welcome that used one of the device's key
    /// packages.
    pub(crate) fn join(&mut self, welcome: &[u8], ratchet_tree: &[u8]) -> anyhow::Result<()> {
        let group = join_group(&self.device, welcome, ratchet_tree)?;
        self.groups
            .insert(group.group_id().as_slice().to_vec(), group);
        Ok(())
    }

    /// The plaintext of another member's application message in `group_id`.
    pub(crate) fn decrypt(&mut self, group_id: &[u8], message: &[u8]) -> anyhow::Result<Vec<u8>> {
        let group = self
            .groups
            .get_mut(group_id)
            .context("a message arrived for a group the receiver is not in")?;
        decrypt_in(&self.device, group, message)
    }
}
