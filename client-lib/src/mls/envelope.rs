//! The plaintext of an application message: a small versioned JSON envelope,
//! `{"v":1,"type":"text","body":"...","sent_at_ms":1764842400000}`, so that
//! later kinds of message (reactions, edits, attachments) fit beside text
//! without breaking older clients, which show them as unsupported instead of
//! failing. `sent_at_ms` (the sender's clock at sending, milliseconds since the
//! Unix epoch) is optional: older clients leave it out, and unknown fields are
//! ignored.

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
    /// The sender's wall clock at sending, in milliseconds since the Unix epoch.
    /// Read as any JSON value: a malformed time is dropped, not the message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sent_at_ms: Option<serde_json::Value>,
}

/// A decrypted plaintext, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Decoded {
    pub(crate) body: MessageBody,
    /// The sender's clock at sending, as it says; `None` from older clients
    /// (and from plaintexts that are not envelopes).
    pub(crate) sent_at_ms: Option<i64>,
}

/// The plaintext bytes of a text message sent at `sent_at_ms` (this device's
/// clock).
pub(crate) fn encode_text(text: &str, sent_at_ms: i64) -> Vec<u8> {
    let envelope = Envelope {
        v: ENVELOPE_VERSION,
        kind: "text".to_owned(),
        body: Some(text.to_owned()),
        sent_at_ms: Some(sent_at_ms.into()),
    };
    // A struct of strings and numbers always serialises.
    serde_json::to_vec(&envelope).unwrap_or_default()
}

/// Reads a decrypted plaintext. Any version is accepted: a newer envelope of a
/// known type still carries the fields this client reads.
pub(crate) fn decode(plaintext: &[u8]) -> Decoded {
    let Ok(envelope) = serde_json::from_slice::<Envelope>(plaintext) else {
        // Not JSON, or not an envelope.
        return Decoded {
            body: MessageBody::Unsupported {
                kind: "invalid".to_owned(),
            },
            sent_at_ms: None,
        };
    };
    let sent_at_ms = envelope
        .sent_at_ms
        .as_ref()
        .and_then(serde_json::Value::as_i64);
    let body = match envelope {
        Envelope {
            kind,
            body: Some(body),
            ..
        } if kind == "text" => MessageBody::Text(body),
        Envelope { kind, .. } if kind != "text" => MessageBody::Unsupported { kind },
        // A text message without its text.
        Envelope { .. } => MessageBody::Unsupported {
            kind: "invalid".to_owned(),
        },
    };
    Decoded { body, sent_at_ms }
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
        let bytes = encode_text("hello \"world\"\n", 1_764_842_400_123);
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            r#"{"v":1,"type":"text","body":"hello \"world\"\n","sent_at_ms":1764842400123}"#
        );
        assert_eq!(
            decode(&bytes),
            Decoded {
                body: MessageBody::Text("hello \"world\"\n".into()),
                sent_at_ms: Some(1_764_842_400_123),
            }
        );
    }

    #[test]
    fn an_older_envelope_has_no_sending_time() {
        assert_eq!(
            decode(br#"{"v":1,"type":"text","body":"old"}"#),
            Decoded {
                body: MessageBody::Text("old".into()),
                sent_at_ms: None,
            }
        );
        // A malformed time is dropped; the text is still shown.
        assert_eq!(
            decode(br#"{"v":1,"type":"text","body":"x","sent_at_ms":"noon"}"#),
            Decoded {
                body: MessageBody::Text("x".into()),
                sent_at_ms: None,
            }
        );
    }

    #[test]
    fn unknown_and_invalid_plaintexts_are_unsupported() {
        assert_eq!(
            decode(br#"{"v":3,"type":"reaction","emoji":"+1","sent_at_ms":5}"#).body,
            MessageBody::Unsupported {
                kind: "reaction".into()
            }
        );
        assert_eq!(
            decode(br#"{"v":2,"type":"text","body":"newer","format":"md"}"#).body,
            MessageBody::Text("newer".into())
        );
        assert_eq!(decode(b"not json").body.kind(), "invalid");
        assert_eq!(decode(br#"{"v":1,"type":"text"}"#).body.kind(), "invalid");
    }
}
