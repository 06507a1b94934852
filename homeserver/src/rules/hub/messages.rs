//! Decoding untrusted MLSMessages, and the checks on their cleartext framing (wire
//! format, group, content type, epoch) that run before any cryptography.

use conclave_core::ids::CredentialIdentity;
use openmls::prelude::tls_codec::{self, Deserialize as _};
use openmls::prelude::{
    BasicCredential, ContentType, Credential, GroupId, MlsMessageBodyIn, MlsMessageIn,
    PublicMessageIn, WireFormat,
};

use super::error::{HubRejection, describe};

/// Decodes one whole MLSMessage. `what` names the submission in errors.
pub(super) fn decode(bytes: &[u8], what: &'static str) -> Result<MlsMessageIn, HubRejection> {
    decode_message(bytes).map_err(|reason| HubRejection::MalformedMessage { what, reason })
}

/// Decodes one whole MLSMessage, or says why the bytes are not one.
///
/// Uses the `io::Read` decoder rather than `DeserializeBytes`: tls_codec's byte-slice
/// decoders can panic on truncated input in debug builds, and these bytes come from
/// the network.
pub(crate) fn decode_message(bytes: &[u8]) -> Result<MlsMessageIn, String> {
    if bytes.is_empty() {
        return Err("it is empty".to_owned());
    }
    let mut rest = bytes;
    let message =
        MlsMessageIn::tls_deserialize(&mut rest).map_err(|error| decoding_error(&error))?;
    if !rest.is_empty() {
        return Err(format!("{} unexpected bytes follow it", rest.len()));
    }
    Ok(message)
}

/// Says in words why tls_codec refused some bytes (its Display prints variant names
/// such as `endOfStream`).
pub(crate) fn decoding_error(error: &tls_codec::Error) -> String {
    match error {
        tls_codec::Error::EndOfStream => "it ends before the structure it encodes does".to_owned(),
        tls_codec::Error::UnknownValue(value) => {
            format!(
                "it holds the unknown value {value} where a version, wire format or type belongs"
            )
        }
        tls_codec::Error::InvalidVectorLength => "it holds an invalid vector length".to_owned(),
        tls_codec::Error::TrailingData => "unexpected bytes follow it".to_owned(),
        tls_codec::Error::DecodingError(reason) => describe(reason),
        other => describe(other),
    }
}

/// Decodes a commit or proposal and checks its framing against the group: it must be
/// a PublicMessage of the expected content type, for this group and its current epoch.
/// `what` is "commit" or "proposal".
pub(super) fn decode_handshake(
    bytes: &[u8],
    what: &'static str,
    group_id: &GroupId,
    current_epoch: u64,
) -> Result<PublicMessageIn, HubRejection> {
    let message = decode(bytes, what)?;
    let found = wire_format_name(message.wire_format());
    let MlsMessageBodyIn::PublicMessage(public_message) = message.extract() else {
        return Err(HubRejection::NotPublicMessage { what, found });
    };
    check_group(what, public_message.group_id(), group_id)?;
    let content_type = content_type_name(public_message.content_type());
    if content_type != what {
        return Err(HubRejection::WrongContentType {
            what,
            found: content_type,
        });
    }
    let message_epoch = public_message.epoch().as_u64();
    if message_epoch < current_epoch {
        return Err(HubRejection::StaleEpoch {
            message_epoch,
            current_epoch,
        });
    }
    if message_epoch > current_epoch {
        return Err(HubRejection::FutureEpoch {
            message_epoch,
            current_epoch,
        });
    }
    Ok(public_message)
}

/// Refuses a message that names another group.
pub(super) fn check_group(
    what: &'static str,
    found: &GroupId,
    expected: &GroupId,
) -> Result<(), HubRejection> {
    if found == expected {
        Ok(())
    } else {
        Err(HubRejection::WrongGroup {
            what,
            found: hex::encode(found.as_slice()),
            expected: hex::encode(expected.as_slice()),
        })
    }
}

/// The device a leaf belongs to: its credential must be a BasicCredential whose
/// identity is `name@domain/device_id`. The error says what is wrong, for embedding
/// in a rejection.
pub(super) fn device_identity(credential: &Credential) -> Result<CredentialIdentity, String> {
    let basic = BasicCredential::try_from(credential.clone()).map_err(|_| {
        format!(
            "credential is of type {:?} but conclave uses only basic credentials",
            credential.credential_type()
        )
    })?;
    CredentialIdentity::from_bytes(basic.identity()).map_err(|error| error.to_string())
}

/// The RFC 9420 name of a wire format, for error messages.
pub(crate) fn wire_format_name(wire_format: WireFormat) -> &'static str {
    match wire_format {
        WireFormat::PublicMessage => "PublicMessage",
        WireFormat::PrivateMessage => "PrivateMessage",
        WireFormat::Welcome => "Welcome",
        WireFormat::GroupInfo => "GroupInfo",
        WireFormat::KeyPackage => "KeyPackage",
        // Only with openmls's draft features, which this workspace does not enable.
        #[allow(unreachable_patterns)]
        _ => "message of another wire format",
    }
}

/// The name of a content type, as used in `what` and in error messages.
pub(crate) fn content_type_name(content_type: ContentType) -> &'static str {
    match content_type {
        ContentType::Application => "application message",
        ContentType::Proposal => "proposal",
        ContentType::Commit => "commit",
    }
}
