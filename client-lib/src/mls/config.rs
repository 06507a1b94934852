//! The MLS parameters of this device's groups: the capabilities every leaf it makes
//! advertises, and how groups are created and joined.

use conclave_core::mls::CipherSuite;
use openmls::prelude::{
    Capabilities, Extension, ExtensionType, Extensions, GroupContext, LeafNodeParameters,
    MlsGroupCreateConfig, MlsGroupJoinConfig, PURE_PLAINTEXT_WIRE_FORMAT_POLICY,
};

use super::MlsError;
use super::metadata::{GROUP_METADATA_EXTENSION_TYPE, GroupMetadata};

/// Epochs whose secrets a member keeps after a commit, so that application
/// messages sent just before a commit can still be read after it. Matches the
/// homeserver's default `groups.past_epoch_window`: an older message would be
/// refused by the hub anyway.
pub(crate) const MAX_PAST_EPOCHS: usize = 5;

/// Capabilities of every leaf this device creates (key packages, new groups,
/// external joins). A key package's extensions must be listed in its leaf's
/// capabilities, and openmls's defaults list neither LastResort (even when
/// `mark_as_last_resort` adds it) nor Conclave's group metadata, which every
/// group carries in its context and which every member must therefore support
/// (RFC 9420 §12.1.1). So every leaf lists both.
pub(crate) fn leaf_capabilities() -> Capabilities {
    Capabilities::builder()
        .extensions(vec![
            ExtensionType::LastResort,
            ExtensionType::Unknown(GROUP_METADATA_EXTENSION_TYPE),
        ])
        .build()
}

/// Leaf parameters for a leaf made outside a key package (an external join):
/// openmls would otherwise give it default capabilities, which lack the
/// metadata extension the group context carries.
pub(crate) fn leaf_node_parameters() -> LeafNodeParameters {
    LeafNodeParameters::builder()
        .with_capabilities(leaf_capabilities())
        .build()
}

/// How this device creates a group of `suite`. Handshakes go out as PublicMessages, which the
/// hub requires so that it can validate them (application messages are always
/// PrivateMessages); the ratchet tree is not put into GroupInfos and Welcomes,
/// because the hub ships it separately.
pub(crate) fn create_config(
    metadata: &GroupMetadata,
    suite: CipherSuite,
) -> Result<MlsGroupCreateConfig, MlsError> {
    let extensions = Extensions::<GroupContext>::single(Extension::Unknown(
        GROUP_METADATA_EXTENSION_TYPE,
        metadata.to_extension(),
    ))
    .map_err(|error| MlsError::group("create the group", error))?;
    Ok(MlsGroupCreateConfig::builder()
        .ciphersuite(suite.ciphersuite())
        .wire_format_policy(PURE_PLAINTEXT_WIRE_FORMAT_POLICY)
        .max_past_epochs(MAX_PAST_EPOCHS)
        .use_ratchet_tree_extension(false)
        .capabilities(leaf_capabilities())
        .with_group_context_extensions(extensions)
        .build())
}

/// How this device joins a group (by Welcome or by external commit): the same
/// wire format, past-epoch and ratchet-tree settings as [`create_config`].
pub(crate) fn join_config() -> MlsGroupJoinConfig {
    MlsGroupJoinConfig::builder()
        .wire_format_policy(PURE_PLAINTEXT_WIRE_FORMAT_POLICY)
        .max_past_epochs(MAX_PAST_EPOCHS)
        .use_ratchet_tree_extension(false)
        .build()
}
