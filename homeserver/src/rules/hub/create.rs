//! A new group at the hub, from its creator's GroupInfo and ratchet tree.

use conclave_core::ids::CredentialIdentity;
use conclave_core::mls::{CipherSuite, verification_crypto};
use openmls::prelude::tls_codec::Deserialize as _;
use openmls::prelude::{MlsMessageBodyIn, ProposalStore, PublicGroup, RatchetTreeIn};

use super::HubGroup;
use super::error::{HubRejection, describe};
use super::messages::{decode_message, decoding_error, device_identity, wire_format_name};
use super::storage::GroupStorage;

impl HubGroup {
    /// Registers a group from the creator's GroupInfo (an MLSMessage) and
    /// TLS-serialised ratchet tree. The GroupInfo must be for epoch 0 in a cipher
    /// suite Conclave speaks, carry the external_pub extension (so devices can rejoin by
    /// external commit from the start), and verify against the tree; the tree must
    /// hold exactly one member, the creator's calling device.
    pub(crate) fn create(
        group_info: &[u8],
        ratchet_tree: &[u8],
        creator: &CredentialIdentity,
    ) -> Result<HubGroup, HubRejection> {
        let invalid = |reason: String| HubRejection::InvalidCreation(reason);
        let message = decode_message(group_info).map_err(|reason| {
            invalid(format!(
                "the group info is not a valid MLSMessage: {reason}"
            ))
        })?;
        let found = wire_format_name(message.wire_format());
        let MlsMessageBodyIn::GroupInfo(verifiable_group_info) = message.extract() else {
            return Err(invalid(format!(
                "the group info message carries a {found}, not a GroupInfo"
            )));
        };
        // Whether this homeserver offers the suite is the caller's question
        // (`rules::cipher_suites`); here only whether Conclave speaks it at all.
        CipherSuite::from_ciphersuite(verifiable_group_info.ciphersuite())
            .map_err(|unknown| invalid(format!("the group uses {unknown}")))?;
        let epoch = verifiable_group_info.epoch().as_u64();
        if epoch != 0 {
            return Err(invalid(format!(
                "the group info is for epoch {epoch} but a new group starts at epoch 0"
            )));
        }
        if verifiable_group_info.extensions().external_pub().is_none() {
            return Err(invalid(
                "the group info lacks the external_pub extension that external joiners need"
                    .to_owned(),
            ));
        }

        if ratchet_tree.is_empty() {
            return Err(invalid("the ratchet tree is empty".to_owned()));
        }
        // The `io::Read` decoder: the byte-slice one can panic on truncated input.
        let mut rest = ratchet_tree;
        let ratchet_tree = RatchetTreeIn::tls_deserialize(&mut rest).map_err(|error| {
            invalid(format!(
                "the ratchet tree does not decode: {}",
                decoding_error(&error)
            ))
        })?;
        if !rest.is_empty() {
            return Err(invalid(format!(
                "{} unexpected bytes follow the ratchet tree",
                rest.len()
            )));
        }

        let storage = GroupStorage::default();
        // Verifies the tree (leaf and parent signatures, hashes, unmerged leaves) and
        // the GroupInfo's signature by the leaf it names, and that the GroupInfo's tree
        // hash is the tree's.
        let (public_group, _group_info) = PublicGroup::from_external(
            &verification_crypto(),
            &storage,
            ratchet_tree,
            verifiable_group_info,
            ProposalStore::new(),
        )
        .map_err(|error| invalid(describe(&error)))?;

        let members: Vec<_> = public_group.members().collect();
        let [member] = members.as_slice() else {
            return Err(invalid(format!(
                "the group has {} members but a new group must hold only its creator",
                members.len()
            )));
        };
        let identity = device_identity(&member.credential).map_err(|reason| {
            invalid(format!(
                "the creator's leaf does not name a device: {reason}"
            ))
        })?;
        if &identity != creator {
            return Err(invalid(format!(
                "the only member is {identity} but the caller is {creator}"
            )));
        }
        Ok(HubGroup::from_parts(
            public_group,
            storage,
            group_info.to_vec(),
        ))
    }
}
