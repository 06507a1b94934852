//! Application messages: the hub cannot read them, only check their cleartext
//! framing. Whether the sending device is a member is the caller's to decide, from the
//! authenticated device and the group's members.

use openmls::prelude::{ContentType, GroupId, MlsMessageBodyIn};

use super::HubGroup;
use super::error::HubRejection;
use super::messages::{check_group, content_type_name, decode, wire_format_name};

/// How many epochs before the current one an application message may still be for
/// (the `groups.past_epoch_window` setting): members keep that many epochs' secrets,
/// so a message sent just before a commit can still be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PastEpochWindow(pub(crate) u64);

impl HubGroup {
    /// [`check_application_message`] against this group.
    #[allow(
        dead_code,
        reason = "the service checks against the group's row without loading its state"
    )]
    pub(crate) fn check_application_message(
        &self,
        message: &[u8],
        window: PastEpochWindow,
    ) -> Result<u64, HubRejection> {
        check_application_message(
            message,
            self.public_group.group_id().as_slice(),
            self.epoch(),
            window,
        )
    }
}

/// Checks an application message: a PrivateMessage carrying application content, for
/// group `group_id`, for `current_epoch` or one of the `window` epochs before it.
/// Returns the message's epoch.
///
/// Needs only the group's id and epoch, not its tree, so the service can check the
/// most frequent submission without loading the group's whole public state.
pub(crate) fn check_application_message(
    message: &[u8],
    group_id: &[u8],
    current_epoch: u64,
    window: PastEpochWindow,
) -> Result<u64, HubRejection> {
    const WHAT: &str = "application message";
    let message = decode(message, WHAT)?;
    let found = wire_format_name(message.wire_format());
    let MlsMessageBodyIn::PrivateMessage(private_message) = message.extract() else {
        return Err(HubRejection::NotPrivateMessage { found });
    };
    check_group(
        WHAT,
        private_message.group_id(),
        &GroupId::from_slice(group_id),
    )?;
    // The content type is cleartext in a PrivateMessage. A handshake sent this way
    // would pass the hub unvalidated, so it is refused as the handshake it is.
    let content_type = private_message.content_type();
    if content_type != ContentType::Application {
        return Err(HubRejection::NotPublicMessage {
            what: content_type_name(content_type),
            found,
        });
    }
    let message_epoch = private_message.epoch().as_u64();
    if message_epoch > current_epoch {
        return Err(HubRejection::FutureEpoch {
            message_epoch,
            current_epoch,
        });
    }
    if current_epoch - message_epoch > window.0 {
        return Err(HubRejection::EpochOutsideWindow {
            message_epoch,
            current_epoch,
            window: window.0,
        });
    }
    Ok(message_epoch)
}
