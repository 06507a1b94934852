//! The check on the GroupInfo submitted with a commit: the hub hands it to devices
//! that join by external commit, so it must describe exactly the epoch the commit
//! creates, and be signed by the committer.

use openmls::messages::group_info::VerifiableGroupInfo;
use openmls::prelude::{
    ConfirmationTag, GroupContext, LeafNodeIndex, MlsMessageBodyIn, OpenMlsSignaturePublicKey,
    SignaturePublicKey, Verifiable as _,
};
use openmls_rust_crypto::RustCrypto;

use super::error::HubRejection;
use super::messages::{decode_message, wire_format_name};

/// What the GroupInfo of the new epoch must contain, from the staged commit.
pub(super) struct ExpectedGroupInfo<'a> {
    /// The group context of the epoch the commit creates.
    pub(super) group_context: &'a GroupContext,
    /// The commit's confirmation tag, which the new epoch's GroupInfo repeats.
    pub(super) confirmation_tag: &'a ConfirmationTag,
    /// The committer's leaf (for an external commit, the joiner's new leaf).
    pub(super) signer: LeafNodeIndex,
    /// The committer's signature key in the new tree.
    pub(super) signer_key: SignaturePublicKey,
}

/// Checks a GroupInfo MLSMessage against the epoch the commit creates.
///
/// openmls's `VerifiableGroupInfo` does not expose its signer or confirmation tag, but
/// its public constructor does take them: building the GroupInfo we expect (with the
/// submitted extensions and signature) and comparing it with the submitted one checks
/// the group context, confirmation tag and signer index at once. The signature is then
/// verified under the committer's key in the new tree, as a joiner would verify it.
pub(super) fn check_group_info(
    bytes: &[u8],
    expected: &ExpectedGroupInfo<'_>,
    crypto: &RustCrypto,
) -> Result<(), HubRejection> {
    let invalid = HubRejection::InvalidGroupInfo;
    let message = decode_message(bytes)
        .map_err(|reason| invalid(format!("it is not a valid MLSMessage: {reason}")))?;
    let found = wire_format_name(message.wire_format());
    let MlsMessageBodyIn::GroupInfo(group_info) = message.extract() else {
        return Err(invalid(format!(
            "the message carries a {found}, not a GroupInfo"
        )));
    };
    let group_id = expected.group_context.group_id();
    if group_info.group_id() != group_id {
        return Err(invalid(format!(
            "it is for group {} but the commit is for group {}",
            hex::encode(group_info.group_id().as_slice()),
            hex::encode(group_id.as_slice())
        )));
    }
    let (found_epoch, new_epoch) = (
        group_info.epoch().as_u64(),
        expected.group_context.epoch().as_u64(),
    );
    if found_epoch != new_epoch {
        return Err(invalid(format!(
            "it is for epoch {found_epoch} but the commit creates epoch {new_epoch}"
        )));
    }
    if group_info.group_context() != expected.group_context {
        return Err(invalid(
            "its group context is not the one the commit creates (tree hash, transcript hash or extensions differ)"
                .to_owned(),
        ));
    }
    let expected_group_info = VerifiableGroupInfo::new(
        expected.group_context.clone(),
        group_info.extensions().clone(),
        expected.confirmation_tag.clone(),
        expected.signer,
        group_info.signature().clone(),
    );
    if group_info != expected_group_info {
        return Err(invalid(format!(
            "it does not carry the commit's confirmation tag, or names another signer than the committer's leaf {}",
            expected.signer.u32()
        )));
    }
    // Devices rejoining by external commit need it; the hub cannot check its value
    // (that takes the epoch's secrets), only that it is there.
    if group_info.extensions().external_pub().is_none() {
        return Err(invalid(
            "it lacks the external_pub extension that external joiners need".to_owned(),
        ));
    }
    let signature_scheme = expected.group_context.ciphersuite().signature_algorithm();
    let signer_key = OpenMlsSignaturePublicKey::from_signature_key(
        expected.signer_key.clone(),
        signature_scheme,
    );
    group_info.verify_no_out(crypto, &signer_key).map_err(|_| {
        invalid("its signature does not verify under the committer's signature key".to_owned())
    })
}
