//! What a follower accepts of a batch of a group's events from the group's hub,
//! judged on the batch alone: consecutive sequence numbers, known kinds,
//! parsable identities, membership changes only in commits and only for devices
//! of the follower's own domain, a Welcome only with added devices and its tree,
//! and no more events or membership changes than `rules::limits` allows.
//! (Whether the sender is the group's hub, and whether the group is followed
//! here, needs the database: the service checks those.)

use crate::rules::ids::{Epoch, Seq};
use crate::rules::limits::{MAX_DELIVERED_EVENTS, MAX_MEMBERSHIP_CHANGES, check_count};
use conclave_core::ids::{CredentialIdentity, Domain};

/// Which kind of log entry an event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IncomingKind {
    Commit,
    Proposal,
    Application,
    /// A kind this homeserver does not know (the wire's number).
    Unknown(i32),
}

/// An event as the hub sent it (`conclave.federation.v1.FederatedEvent`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IncomingEvent {
    pub(crate) seq: u64,
    pub(crate) kind: IncomingKind,
    pub(crate) epoch: u64,
    pub(crate) sender: String,
    pub(crate) message: Vec<u8>,
    pub(crate) added: Vec<String>,
    pub(crate) removed: Vec<String>,
    pub(crate) welcome: Vec<u8>,
    pub(crate) ratchet_tree: Vec<u8>,
}

/// Why a batch breaks the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct InvalidBatch(pub(crate) String);

/// Which kind of log entry a checked event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CheckedKind {
    Commit,
    Proposal,
    Application,
}

/// An event that passed the batch checks.
#[derive(Debug, Clone)]
pub(crate) struct CheckedEvent {
    pub(crate) seq: Seq,
    pub(crate) kind: CheckedKind,
    pub(crate) epoch: Epoch,
    pub(crate) sender: String,
    pub(crate) message: Vec<u8>,
    pub(crate) added: Vec<CredentialIdentity>,
    pub(crate) removed: Vec<CredentialIdentity>,
    /// The Welcome and the new epoch's ratchet tree, for the added devices.
    pub(crate) welcome: Option<(Vec<u8>, Vec<u8>)>,
}

/// Checks a batch's shape: consecutive sequence numbers, known kinds, parsable
/// identities, membership changes only in commits and only for devices of
/// `own` domain, a Welcome only with added devices.
pub(crate) fn check_batch(
    own: &Domain,
    events: Vec<IncomingEvent>,
) -> Result<Vec<CheckedEvent>, InvalidBatch> {
    let invalid = |reason: String| Err(InvalidBatch(reason));
    if events.is_empty() {
        return invalid("events is empty".to_owned());
    }
    check_count("events", events.len(), MAX_DELIVERED_EVENTS)
        .map_err(|refusal| InvalidBatch(refusal.to_string()))?;
    let mut checked: Vec<CheckedEvent> = Vec::with_capacity(events.len());
    for (index, event) in events.into_iter().enumerate() {
        // Before anything is parsed: the membership changes cost work per entry.
        for (field, identities) in [("added", &event.added), ("removed", &event.removed)] {
            check_count(
                format!("events[{index}].{field}"),
                identities.len(),
                MAX_MEMBERSHIP_CHANGES,
            )
            .map_err(|refusal| InvalidBatch(refusal.to_string()))?;
        }
        // Both are stored as signed 64-bit integers.
        if event.seq < 1 || i64::try_from(event.seq).is_err() {
            return invalid(format!("seq {} is out of range", event.seq));
        }
        if i64::try_from(event.epoch).is_err() {
            return invalid(format!(
                "event {}: epoch {} is out of range",
                event.seq, event.epoch
            ));
        }
        let seq = Seq::new(event.seq);
        if let Some(previous) = checked.last()
            && seq != previous.seq.next()
        {
            return invalid(format!(
                "events must have consecutive seqs: {} follows {}",
                seq, previous.seq
            ));
        }
        let kind = match event.kind {
            IncomingKind::Commit => CheckedKind::Commit,
            IncomingKind::Proposal => CheckedKind::Proposal,
            IncomingKind::Application => CheckedKind::Application,
            IncomingKind::Unknown(number) => {
                return invalid(format!("event {seq}: unknown kind {number}"));
            }
        };
        if event.message.is_empty() {
            return invalid(format!("event {seq}: message is empty"));
        }
        if let Err(error) = event.sender.parse::<CredentialIdentity>() {
            return invalid(format!("event {seq}: sender: {error}"));
        }
        let parse_own = |identities: Vec<String>| -> Result<Vec<CredentialIdentity>, InvalidBatch> {
            identities
                .into_iter()
                .map(|identity| {
                    let parsed: CredentialIdentity = identity.parse().map_err(|error| {
                        InvalidBatch(format!("event {seq}: {identity:?}: {error}"))
                    })?;
                    if parsed.user_id().domain() != own {
                        return Err(InvalidBatch(format!(
                            "event {seq}: {parsed} is not a device of {own}"
                        )));
                    }
                    Ok(parsed)
                })
                .collect()
        };
        let added = parse_own(event.added)?;
        let removed = parse_own(event.removed)?;
        if kind != CheckedKind::Commit && !(added.is_empty() && removed.is_empty()) {
            return invalid(format!("event {seq}: only a commit changes membership"));
        }
        let welcome = match (event.welcome.is_empty(), event.ratchet_tree.is_empty()) {
            (true, true) => None,
            (false, false) if !added.is_empty() => Some((event.welcome, event.ratchet_tree)),
            _ => {
                return invalid(format!(
                    "event {seq}: a Welcome comes with its ratchet tree and added devices"
                ));
            }
        };
        checked.push(CheckedEvent {
            seq,
            kind,
            epoch: Epoch::new(event.epoch),
            sender: event.sender,
            message: event.message,
            added,
            removed,
            welcome,
        });
    }
    Ok(checked)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOB: &str = "bob@b.example/00000000000000b1";

    fn event(seq: u64) -> IncomingEvent {
        IncomingEvent {
            seq,
            kind: IncomingKind::Application,
            epoch: 1,
            sender: "alice@a.example/00000000000000a1".to_owned(),
            message: vec![1],
            added: Vec::new(),
            removed: Vec::new(),
            welcome: Vec::new(),
            ratchet_tree: Vec::new(),
        }
    }

    fn commit(seq: u64) -> IncomingEvent {
        IncomingEvent {
            kind: IncomingKind::Commit,
            ..event(seq)
        }
    }

    #[test]
    fn well_formed_batches_pass() {
        let own: Domain = "b.example".parse().unwrap();
        let adding = IncomingEvent {
            added: vec![BOB.to_owned()],
            welcome: vec![2],
            ratchet_tree: vec![3],
            ..commit(4)
        };
        let checked = check_batch(&own, vec![adding, event(5), event(6)]).unwrap();
        assert_eq!(checked.len(), 3);
        assert_eq!(checked[0].added[0].to_string(), BOB);
        assert!(checked[0].welcome.is_some());
    }

    #[test]
    fn malformed_batches_are_refused_with_the_reason() {
        let own: Domain = "b.example".parse().unwrap();
        let cases: Vec<(&str, Vec<IncomingEvent>, &str)> = vec![
            ("empty", vec![], "events is empty"),
            ("gap inside", vec![event(1), event(3)], "consecutive"),
            ("backwards", vec![event(2), event(1)], "consecutive"),
            ("seq 0", vec![event(0)], "out of range"),
            (
                "unknown kind",
                vec![IncomingEvent {
                    kind: IncomingKind::Unknown(9),
                    ..event(1)
                }],
                "unknown kind",
            ),
            (
                "empty message",
                vec![IncomingEvent {
                    message: vec![],
                    ..event(1)
                }],
                "message is empty",
            ),
            (
                "bad sender",
                vec![IncomingEvent {
                    sender: "alice".to_owned(),
                    ..event(1)
                }],
                "sender",
            ),
            (
                "device of another domain",
                vec![IncomingEvent {
                    added: vec!["carol@c.example/00000000000000c1".to_owned()],
                    ..commit(1)
                }],
                "is not a device of b.example",
            ),
            (
                "membership change in a message",
                vec![IncomingEvent {
                    removed: vec![BOB.to_owned()],
                    ..event(1)
                }],
                "only a commit",
            ),
            (
                "welcome without tree",
                vec![IncomingEvent {
                    added: vec![BOB.to_owned()],
                    welcome: vec![1],
                    ..commit(1)
                }],
                "ratchet tree",
            ),
            (
                "welcome without added devices",
                vec![IncomingEvent {
                    welcome: vec![1],
                    ratchet_tree: vec![1],
                    ..commit(1)
                }],
                "added devices",
            ),
            (
                "too many events",
                (1..=MAX_DELIVERED_EVENTS as u64 + 1).map(event).collect(),
                "events has 1001 entries, more than the limit of 1000",
            ),
            (
                "too many removed devices",
                vec![
                    commit(1),
                    IncomingEvent {
                        removed: vec![BOB.to_owned(); MAX_MEMBERSHIP_CHANGES + 1],
                        ..commit(2)
                    },
                ],
                "events[1].removed has 100001 entries, more than the limit of 100000",
            ),
        ];
        for (case, events, fragment) in cases {
            match check_batch(&own, events) {
                Err(InvalidBatch(reason)) => {
                    assert!(reason.contains(fragment), "{case}: {reason}")
                }
                other => panic!("{case}: {other:?}"),
            }
        }
    }
}
