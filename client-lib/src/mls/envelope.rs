//! The plaintext of an application message: a small versioned JSON envelope,
//! `{"v":1,"type":"text","body":"..."}`, so that later kinds of message
//! (reactions, edits, attachments) fit beside text without breaking older
//! clients, which show them as unsupported instead of failing.

use serde::{Deserialize, Serialize};

/// Envelope version this client writes.
const ENVELOPE_VERSION: u32 = 1;

/// What a member sent, as this client understands it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageBody {
    /// Plain text.
    Text(String),
    /// A kind of message this client does not know (sent by a newer client), or a
    /// plaintext that is not an envelope at all.
    Unsupported {
        /// The envelope's `type`, or `"invalid"` if the plaintext is not an envelope.
        kind: String,
    },
}

impl MessageBody {
    /// The envelope's `type`: `"text"`, or the unknown kind.
    pub fn kind(&self) -> &str {
        match self {
            MessageBody::Text(_) => "text",
            MessageBody::Unsupported { kind } => kind,
        }
    }

    /// The text, for text messages.
    pub fn text(&self) -> Option<&str> {
        match self {
            MessageBody::Text(text) => Some(text),
            MessageBody::Unsupported { .. } => None,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    v: u32,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    body: Option<String>,
}

/// The plaintext bytes of a text message.
pub(crate) fn encode_text(text: &str) -> Vec<u8> {
    let envelope = Envelope {
        v: ENVELOPE_VERSION,
        kind: "text".to_owned(),
        body: Some(text.to_owned()),
    };
    // A struct of strings and a number always serialises.
    serde_json::to_vec(&envelope).unwrap_or_default()
}

/// Reads a decrypted plaintext. Any version is accepted: a newer envelope of a
/// known type still carries the fields this client reads.
pub(crate) fn decode(plaintext: &[u8]) -> MessageBody {
    match serde_json::from_slice::<Envelope>(plaintext) {
        Ok(Envelope {
            kind,
            body: Some(body),
            ..
        }) if kind == "text" => MessageBody::Text(body),
        Ok(envelope) if envelope.kind != "text" => MessageBody::Unsupported {
            kind: envelope.kind,
        },
        // Not JSON, or a text message without its text.
        _ => MessageBody::Unsupported {
            kind: "invalid".to_owned(),
        },
    }
}

/// How a body is stored locally: its kind and, for text, the text (else the
/// empty string).
pub(crate) fn to_stored(body: &MessageBody) -> (&str, &str) {
    (body.kind(), body.text().unwrap_or_default())
}

/// A stored body read back.
pub(crate) fn from_stored(kind: String, text: String) -> MessageBody {
    if kind == "text" {
        MessageBody::Text(text)
    } else {
        MessageBody::Unsupported { kind }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips() {
        let bytes = encode_text("hello \"world\"\n");
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            r#"{"v":1,"type":"text","body":"hello \"world\"\n"}"#
        );
        assert_eq!(
            decode(&bytes),
            MessageBody::Text("hello \"world\"\n".into())
        );
    }

    #[test]
    fn unknown_and_invalid_plaintexts_are_unsupported() {
        assert_eq!(
            decode(br#"{"v":3,"type":"reaction","emoji":"+1"}"#),
            MessageBody::Unsupported {
                kind: "reaction".into()
            }
        );
        assert_eq!(
            decode(br#"{"v":2,"type":"text","body":"newer","format":"md"}"#),
            MessageBody::Text("newer".into())
        );
        assert_eq!(decode(b"not json").kind(), "invalid");
        assert_eq!(decode(br#"{"v":1,"type":"text"}"#).kind(), "invalid");
    }
}
