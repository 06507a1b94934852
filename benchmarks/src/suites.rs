//! Benchmark 10: the post-quantum cipher suite (0x004F) next to the classic one
//! (0x0001), on the clients' side, with openmls as the client library configures
//! it and no server: the size and build time of a key package, of a commit
//! adding one member and its Welcome, and the time to join from that Welcome.
//! The hub's work does not depend on the suite's KEM (it checks signatures,
//! Ed25519 in both), so what differs is here.

use crate::report::{Samples, Table, count, ms};
use anyhow::anyhow;
use conclave_core::mls::{ALL_CIPHER_SUITES, CipherSuite, GROUP_METADATA_EXTENSION_TYPE};
use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
use openmls::prelude::{
    BasicCredential, Capabilities, CredentialWithKey, ExtensionType, KeyPackage, MlsGroup,
    MlsGroupCreateConfig, MlsGroupJoinConfig, MlsMessageBodyIn, MlsMessageIn,
    PURE_PLAINTEXT_WIRE_FORMAT_POLICY, RatchetTreeIn, StagedWelcome,
};
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::OpenMlsRustCrypto;
use openmls_traits::OpenMlsProvider as _;
use std::fmt::Debug;
use std::time::Instant;

/// One suite's figures: sizes in bytes, times over every repetition.
pub(crate) struct SuiteRun {
    suite: CipherSuite,
    key_package_bytes: usize,
    key_package_build: Samples,
    commit_bytes: usize,
    welcome_bytes: usize,
    commit_build: Samples,
    join: Samples,
}

fn failed<E: Debug>(what: &'static str) -> impl FnOnce(E) -> anyhow::Error {
    move |error| anyhow!("openmls could not {what}: {error:?}")
}

/// A device of its own: a signature key, a credential and in-memory storage.
struct Device {
    signer: SignatureKeyPair,
    credential: CredentialWithKey,
    provider: OpenMlsRustCrypto,
}

fn device(suite: CipherSuite, name: &str) -> anyhow::Result<Device> {
    let signer = SignatureKeyPair::new(suite.ciphersuite().signature_algorithm())
        .map_err(failed("make a key pair"))?;
    let credential = CredentialWithKey {
        credential: BasicCredential::new(format!("{name}@bench.example/0").into_bytes()).into(),
        signature_key: signer.to_public_vec().into(),
    };
    Ok(Device {
        signer,
        credential,
        provider: OpenMlsRustCrypto::default(),
    })
}

/// What Conclave's leaves list (the homeserver refuses packages without it).
fn capabilities() -> Capabilities {
    Capabilities::builder()
        .extensions(vec![
            ExtensionType::LastResort,
            ExtensionType::Unknown(GROUP_METADATA_EXTENSION_TYPE),
        ])
        .build()
}

/// Measures every suite `repetitions` times.
pub(crate) fn run(repetitions: usize) -> anyhow::Result<Vec<SuiteRun>> {
    ALL_CIPHER_SUITES
        .into_iter()
        .map(|suite| run_suite(suite, repetitions))
        .collect()
}

fn run_suite(suite: CipherSuite, repetitions: usize) -> anyhow::Result<SuiteRun> {
    let mut key_package_build = Vec::new();
    let mut commit_build = Vec::new();
    let mut join = Vec::new();
    let (mut key_package_bytes, mut commit_bytes, mut welcome_bytes) = (0, 0, 0);
    for _ in 0..repetitions {
        let creator = device(suite, "creator")?;
        let joiner = device(suite, "joiner")?;

        let started = Instant::now();
        let bundle = KeyPackage::builder()
            .leaf_node_capabilities(capabilities())
            .build(
                suite.ciphersuite(),
                &joiner.provider,
                &joiner.signer,
                joiner.credential.clone(),
            )
            .map_err(failed("build a key package"))?;
        key_package_build.push(started.elapsed());
        key_package_bytes = bundle.key_package().tls_serialize_detached()?.len();

        let create_config = MlsGroupCreateConfig::builder()
            .ciphersuite(suite.ciphersuite())
            .wire_format_policy(PURE_PLAINTEXT_WIRE_FORMAT_POLICY)
            .use_ratchet_tree_extension(false)
            .capabilities(capabilities())
            .build();
        let mut group = MlsGroup::new(
            &creator.provider,
            &creator.signer,
            &create_config,
            creator.credential.clone(),
        )
        .map_err(failed("create a group"))?;

        let started = Instant::now();
        let staged = group
            .commit_builder()
            .propose_adds(vec![bundle.key_package().clone()])
            .load_psks(creator.provider.storage())
            .map_err(failed("load PSKs"))?
            .create_group_info(true)
            .build(
                creator.provider.rand(),
                creator.provider.crypto(),
                &creator.signer,
                |_| true,
            )
            .map_err(failed("build a commit"))?
            .stage_commit(&creator.provider)
            .map_err(failed("stage a commit"))?;
        commit_build.push(started.elapsed());
        let (commit, welcome, _group_info) = staged.into_messages();
        let welcome = welcome
            .ok_or_else(|| anyhow!("openmls made no Welcome"))?
            .tls_serialize_detached()?;
        commit_bytes = commit.tls_serialize_detached()?.len();
        welcome_bytes = welcome.len();
        group
            .merge_pending_commit(&creator.provider)
            .map_err(failed("merge a pending commit"))?;
        let ratchet_tree = group.export_ratchet_tree().tls_serialize_detached()?;

        let started = Instant::now();
        join_from_welcome(&joiner, &welcome, &ratchet_tree)?;
        join.push(started.elapsed());
    }
    Ok(SuiteRun {
        suite,
        key_package_bytes,
        key_package_build: Samples::new(key_package_build),
        commit_bytes,
        welcome_bytes,
        commit_build: Samples::new(commit_build),
        join: Samples::new(join),
    })
}

fn join_from_welcome(device: &Device, welcome: &[u8], ratchet_tree: &[u8]) -> anyhow::Result<()> {
    let MlsMessageBodyIn::Welcome(welcome) =
        MlsMessageIn::tls_deserialize_exact(welcome)?.extract()
    else {
        return Err(anyhow!("the Welcome is not a Welcome"));
    };
    let ratchet_tree = RatchetTreeIn::tls_deserialize_exact(ratchet_tree)?;
    let join_config = MlsGroupJoinConfig::builder()
        .wire_format_policy(PURE_PLAINTEXT_WIRE_FORMAT_POLICY)
        .use_ratchet_tree_extension(false)
        .build();
    StagedWelcome::new_from_welcome(&device.provider, &join_config, welcome, Some(ratchet_tree))
        .map_err(failed("process a Welcome"))?
        .into_group(&device.provider)
        .map_err(failed("join from a Welcome"))?;
    Ok(())
}

/// Benchmark 10's table: one row per suite, medians.
pub(crate) fn table(runs: &[SuiteRun], repetitions: usize) -> Table {
    let mut table = Table::new(
        format!(
            "10. Cipher suites on the client: classic against post-quantum (openmls, medians of {repetitions})"
        ),
        vec![
            "Suite",
            "key package bytes",
            "build key package ms",
            "add-one commit bytes",
            "Welcome bytes",
            "build add-one commit ms",
            "join from Welcome ms",
        ],
    );
    for run in runs {
        table.row(vec![
            format!("`{}` {:#06x}", run.suite.short_name(), run.suite.id()),
            count(run.key_package_bytes as u64),
            ms(run.key_package_build.median()),
            count(run.commit_bytes as u64),
            count(run.welcome_bytes as u64),
            ms(run.commit_build.median()),
            ms(run.join.median()),
        ]);
    }
    table
}
