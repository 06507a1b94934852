//! The MLS checks a follower makes on each event a hub delivers. The follower
//! keeps no public state of the group (only the hub does), so it checks what the
//! bytes alone show: a handshake is a PublicMessage of the claimed content type,
//! an application message a PrivateMessage of application content, both of this
//! group and of the epoch the event names; a commit that adds devices without a
//! Welcome is an external commit by the one device it adds; a Welcome is an MLS
//! Welcome in Conclave's cipher suite, and its recipients (KeyPackageRefs) are
//! returned for the service to match against the directory's claims; its ratchet
//! tree decodes and verifies (leaf signatures, parent hashes) for this group.
//!
//! What only members can check (signatures that need the previous epoch's group
//! context, the confirmation tag, anything encrypted) stays with the members, as
//! at the hub. A FederatedEvent carries no GroupInfo, so there is none to verify.

use conclave_core::mls::{CipherSuite, verification_crypto};
use openmls::prelude::tls_codec::Deserialize as _;
use openmls::prelude::{ContentType, GroupId, MlsMessageBodyIn, RatchetTreeIn, Sender};

use crate::rules::hub::wire_format_name;
use crate::rules::hub::{content_type_name, decode_message, decoding_error, describe};
use crate::rules::ids;

/// Which log entry an event claims to be, for [`check_message`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClaimedContent {
    Commit,
    Proposal,
    Application,
}

/// Who sent a commit, as far as the follower needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CommitSender {
    /// A member of the previous epoch.
    Member,
    /// A device joining by external commit.
    ExternalJoiner,
}

/// Checks an event's MLSMessage against what the event claims: its content
/// type, the batch's `group_id` and the event's `epoch`. For a commit, says who
/// sent it. The error says what is wrong, for embedding in a refusal.
pub(crate) fn check_message(
    message: &[u8],
    claimed: ClaimedContent,
    group_id: &[u8],
    epoch: u64,
) -> Result<Option<CommitSender>, String> {
    let message =
        decode_message(message).map_err(|reason| format!("it is not an MLSMessage: {reason}"))?;
    let found = wire_format_name(message.wire_format());
    let (message_group, message_epoch, content_type, sender) = match (claimed, message.extract()) {
        (
            ClaimedContent::Commit | ClaimedContent::Proposal,
            MlsMessageBodyIn::PublicMessage(public_message),
        ) => (
            public_message.group_id().clone(),
            public_message.epoch().as_u64(),
            public_message.content_type(),
            Some(public_message.sender().clone()),
        ),
        (ClaimedContent::Application, MlsMessageBodyIn::PrivateMessage(private_message)) => (
            private_message.group_id().clone(),
            private_message.epoch().as_u64(),
            private_message.content_type(),
            None,
        ),
        (ClaimedContent::Application, _) => {
            return Err(format!(
                "an application message must be a PrivateMessage, not a {found}"
            ));
        }
        (_, _) => {
            return Err(format!(
                "a {} must be a PublicMessage, not a {found}",
                claimed_name(claimed)
            ));
        }
    };
    let expected_content = match claimed {
        ClaimedContent::Commit => ContentType::Commit,
        ClaimedContent::Proposal => ContentType::Proposal,
        ClaimedContent::Application => ContentType::Application,
    };
    if content_type != expected_content {
        return Err(format!(
            "it carries a {} but the event is a {}",
            content_type_name(content_type),
            claimed_name(claimed)
        ));
    }
    check_group(&message_group, group_id)?;
    if message_epoch != epoch {
        return Err(format!(
            "it is for epoch {message_epoch} but the event is for epoch {epoch}"
        ));
    }
    Ok(match (claimed, sender) {
        (ClaimedContent::Commit, Some(Sender::NewMemberCommit)) => {
            Some(CommitSender::ExternalJoiner)
        }
        (ClaimedContent::Commit, _) => Some(CommitSender::Member),
        _ => None,
    })
}

/// Checks a Welcome (an MLSMessage) and returns the KeyPackageRefs of the
/// packages it is addressed to (RFC 9420 §12.4.3.1, `new_member`).
pub(crate) fn welcome_recipients(welcome: &[u8]) -> Result<(CipherSuite, Vec<Vec<u8>>), String> {
    let message =
        decode_message(welcome).map_err(|reason| format!("it is not an MLSMessage: {reason}"))?;
    let found = wire_format_name(message.wire_format());
    let MlsMessageBodyIn::Welcome(welcome) = message.extract() else {
        return Err(format!("the message carries a {found}, not a Welcome"));
    };
    // Any suite Conclave speaks: a Welcome for a device here must be addressed
    // to a package this directory handed out, which it stored only in a suite
    // it offers.
    let suite = CipherSuite::from_ciphersuite(welcome.ciphersuite())
        .map_err(|unknown| format!("it uses {unknown}"))?;
    let recipients: Vec<Vec<u8>> = welcome
        .secrets()
        .iter()
        .map(|secrets| secrets.new_member().as_slice().to_vec())
        .collect();
    if recipients.is_empty() {
        return Err("it is addressed to no key package".to_owned());
    }
    Ok((suite, recipients))
}

/// Checks a TLS-serialised RatchetTree: it decodes, and openmls verifies it for
/// `group_id` in `suite` (every leaf's signature, parent hashes, unmerged
/// leaves), as a device joining with it will.
pub(crate) fn check_ratchet_tree(
    ratchet_tree: &[u8],
    group_id: &[u8],
    suite: CipherSuite,
) -> Result<(), String> {
    // The `io::Read` decoder: the byte-slice one can panic on truncated input.
    let mut rest = ratchet_tree;
    let tree = RatchetTreeIn::tls_deserialize(&mut rest)
        .map_err(|error| format!("it does not decode: {}", decoding_error(&error)))?;
    if !rest.is_empty() {
        return Err(format!("{} unexpected bytes follow it", rest.len()));
    }
    tree.into_verified(
        suite.ciphersuite(),
        &verification_crypto(),
        &GroupId::from_slice(group_id),
    )
    .map(drop)
    .map_err(|error| format!("it does not verify: {}", describe(&error)))
}

fn check_group(found: &GroupId, expected: &[u8]) -> Result<(), String> {
    if found.as_slice() == expected {
        return Ok(());
    }
    Err(format!(
        "it is for group {} but the batch is for group {}",
        ids::GroupId::new(found.to_vec()),
        ids::GroupId::new(expected.to_vec())
    ))
}

fn claimed_name(claimed: ClaimedContent) -> &'static str {
    match claimed {
        ClaimedContent::Commit => "commit",
        ClaimedContent::Proposal => "proposal",
        ClaimedContent::Application => "application message",
    }
}
