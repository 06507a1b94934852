//! The check on the Welcome submitted with a commit: it comes exactly when the commit
//! adds members, and is addressed to exactly the key packages it adds, so the hub can
//! deliver it to the added devices and nobody else.

use openmls::prelude::{Ciphersuite, MlsMessageBodyIn};

use super::commit::NewLeaf;
use super::error::HubRejection;
use super::messages::{decode_message, wire_format_name};

/// Checks the Welcome against the commit's added leaves.
pub(super) fn check_welcome(
    welcome: Option<&[u8]>,
    added: &[NewLeaf],
    group_ciphersuite: Ciphersuite,
) -> Result<(), HubRejection> {
    let bytes = match (welcome, added.is_empty()) {
        (None, true) => return Ok(()),
        (Some(_), true) => return Err(HubRejection::UnexpectedWelcome),
        (None, false) => {
            return Err(HubRejection::MissingWelcome { added: added.len() });
        }
        (Some(bytes), false) => bytes,
    };
    let invalid = HubRejection::InvalidWelcome;
    let message = decode_message(bytes)
        .map_err(|reason| invalid(format!("it is not a valid MLSMessage: {reason}")))?;
    let found = wire_format_name(message.wire_format());
    let MlsMessageBodyIn::Welcome(welcome) = message.extract() else {
        return Err(invalid(format!(
            "the message carries a {found}, not a Welcome"
        )));
    };
    if welcome.ciphersuite() != group_ciphersuite {
        return Err(invalid(format!(
            "it uses cipher suite {:#06x} but the group uses {:#06x}",
            u16::from(welcome.ciphersuite()),
            u16::from(group_ciphersuite)
        )));
    }
    // Compared as sorted lists rather than sets, so that a recipient named twice is a
    // mismatch too.
    let mut recipients: Vec<Vec<u8>> = welcome
        .secrets()
        .iter()
        .map(|secrets| secrets.new_member().as_slice().to_vec())
        .collect();
    let mut expected: Vec<Vec<u8>> = added
        .iter()
        .filter_map(|leaf| leaf.key_package_ref.clone())
        .collect();
    recipients.sort();
    expected.sort();
    if recipients != expected {
        return Err(HubRejection::WelcomeRecipientsMismatch {
            expected: expected.len(),
            found: recipients.len(),
        });
    }
    Ok(())
}
