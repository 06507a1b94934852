//! Departure notices: the log entry a hub writes when a device left its domain
//! (revoked, removed, logged out, its account deactivated), asking the group's
//! remaining members to commit its removal. The notice carries no MLS message:
//! the hub cannot commit (it is no member), and proposing as an RFC 9420
//! external sender would need an `external_senders` extension in every group's
//! context, which groups made before it cannot get, and still a member to commit.
//!
//! Rules here: the reason's text, the one notice per device and group (a digest
//! in the log's unique index), who may announce a departure at a hub, and what a
//! follower accepts of a delivered notice.

use conclave_core::ids::{CredentialIdentity, Domain, hidden_character_kind};
use sha2::{Digest, Sha256};

/// Longest reason a notice carries, in bytes of UTF-8.
pub(crate) const MAX_REASON_BYTES: usize = 256;

/// The reason as a notice carries it: without control, bidirectional or
/// invisible characters (it is shown to people), trimmed, and cut at a
/// character boundary to at most [`MAX_REASON_BYTES`]. May be empty.
pub(crate) fn reason_text(reason: &str) -> String {
    let visible: String = reason
        .chars()
        .filter(|&c| hidden_character_kind(c).is_none())
        .collect();
    let trimmed = visible.trim();
    let mut end = trimmed.len().min(MAX_REASON_BYTES);
    while !trimmed.is_char_boundary(end) {
        end -= 1;
    }
    trimmed[..end].trim_end().to_owned()
}

/// The digest a departure notice is logged under, in the same unique index
/// (`group_events (group_id, message_digest)`) as the SHA-256 of accepted MLS
/// messages: a group gets one notice per device, however often its departure
/// is announced (a retried federation call, a second revocation). A device id
/// is never reused, so a second notice could only repeat the first. The label
/// keeps it apart from any message's digest.
pub(crate) fn notice_digest(departed: &CredentialIdentity) -> Vec<u8> {
    let mut hasher = Sha256::new();
    hasher.update(b"conclave departure notice\0");
    hasher.update(departed.to_string().as_bytes());
    hasher.finalize().to_vec()
}

/// Why a hub refuses a peer's announcement of a departure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AnnouncementRefusal {
    /// A domain speaks only for its own devices.
    #[error("{departed} is not a device of {caller}")]
    OtherDomain {
        departed: CredentialIdentity,
        caller: Domain,
    },
    /// The hub's own devices depart through its own accounts, never a peer's word.
    #[error("{departed} is a device of this homeserver's own domain")]
    OwnDomain { departed: CredentialIdentity },
}

/// Whether domain `caller` may announce that `departed` left, at hub `own`:
/// only for a device of its own domain.
pub(crate) fn check_announcement(
    own: &Domain,
    caller: &Domain,
    departed: &CredentialIdentity,
) -> Result<(), AnnouncementRefusal> {
    let domain = departed.user_id().domain();
    if domain == own {
        return Err(AnnouncementRefusal::OwnDomain {
            departed: departed.clone(),
        });
    }
    if domain != caller {
        return Err(AnnouncementRefusal::OtherDomain {
            departed: departed.clone(),
            caller: caller.clone(),
        });
    }
    Ok(())
}

/// What a follower checks of a departure notice its hub delivered, as the
/// wire carries it (`sender`: the departed device; `message`: the reason):
/// the identity parses, the reason is UTF-8 within [`MAX_REASON_BYTES`]. Any
/// domain's device may depart (a member of the hub's domain, of this one, or of
/// a third). Returns the departed device, or what is wrong.
pub(crate) fn check_delivered_notice(
    sender: &str,
    reason: &[u8],
) -> Result<CredentialIdentity, String> {
    let departed: CredentialIdentity = sender
        .parse()
        .map_err(|error| format!("departed device: {error}"))?;
    if reason.len() > MAX_REASON_BYTES {
        return Err(format!(
            "the reason has {} bytes, more than the limit of {MAX_REASON_BYTES}",
            reason.len()
        ));
    }
    std::str::from_utf8(reason).map_err(|_| "the reason is not UTF-8".to_owned())?;
    Ok(departed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(text: &str) -> CredentialIdentity {
        text.parse().unwrap()
    }

    fn domain(text: &str) -> Domain {
        text.parse().unwrap()
    }

    #[test]
    fn reasons_are_visible_trimmed_and_bounded() {
        let long = "é".repeat(MAX_REASON_BYTES);
        let cases: Vec<(&str, String)> = vec![
            (
                "revoked by an administrator",
                "revoked by an administrator".to_owned(),
            ),
            ("  padded \n", "padded".to_owned()),
            ("bi\u{202E}di\u{200B}rectional", "bidirectional".to_owned()),
            ("", String::new()),
            // Two bytes per character: cut between characters, never inside one.
            (&long, "é".repeat(MAX_REASON_BYTES / 2)),
        ];
        for (reason, expected) in cases {
            let text = reason_text(reason);
            assert_eq!(text, expected, "{reason:?}");
            assert!(text.len() <= MAX_REASON_BYTES);
        }
        let odd = format!("a{long}");
        assert_eq!(reason_text(&odd).len(), MAX_REASON_BYTES - 1);
    }

    #[test]
    fn each_device_has_one_digest_apart_from_every_other() {
        let bob = identity("bob@b.example/00000000000000b1");
        let other = identity("bob@b.example/00000000000000b2");
        assert_eq!(notice_digest(&bob), notice_digest(&bob));
        assert_ne!(notice_digest(&bob), notice_digest(&other));
        // Not the digest of a message that happens to hold the identity.
        assert_ne!(
            notice_digest(&bob),
            Sha256::digest(bob.to_string().as_bytes()).to_vec()
        );
    }

    #[test]
    fn a_domain_announces_its_own_devices_only() {
        let hub = domain("a.example");
        let bob = identity("bob@b.example/00000000000000b1");
        let alice = identity("alice@a.example/00000000000000a1");
        let b = domain("b.example");
        let c = domain("c.example");
        let cases: Vec<(
            &str,
            &Domain,
            &CredentialIdentity,
            Result<(), AnnouncementRefusal>,
        )> = vec![
            ("own device", &b, &bob, Ok(())),
            (
                "another domain's device",
                &c,
                &bob,
                Err(AnnouncementRefusal::OtherDomain {
                    departed: bob.clone(),
                    caller: c.clone(),
                }),
            ),
            (
                "the hub's device",
                &b,
                &alice,
                Err(AnnouncementRefusal::OwnDomain {
                    departed: alice.clone(),
                }),
            ),
        ];
        for (case, caller, departed, expected) in cases {
            assert_eq!(
                check_announcement(&hub, caller, departed),
                expected,
                "{case}"
            );
        }
    }

    #[test]
    fn delivered_notices_name_a_device_and_a_short_text() {
        let bob = "bob@b.example/00000000000000b1";
        assert_eq!(check_delivered_notice(bob, b"revoked"), Ok(identity(bob)));
        assert_eq!(check_delivered_notice(bob, b""), Ok(identity(bob)));
        let too_long = vec![b'a'; MAX_REASON_BYTES + 1];
        let cases: Vec<(&str, &str, &[u8], &str)> = vec![
            ("no identity", "bob", b"revoked", "departed device"),
            ("binary reason", bob, &[0xff, 0xfe], "not UTF-8"),
            ("long reason", bob, &too_long, "more than the limit of 256"),
        ];
        for (case, sender, reason, fragment) in cases {
            let error = check_delivered_notice(sender, reason).unwrap_err();
            assert!(error.contains(fragment), "{case}: {error}");
        }
    }
}
