//! What a follower accepts of a batch of a group's events from the group's hub,
//! judged on the batch alone: consecutive sequence numbers, known kinds,
//! parsable identities, membership changes only in commits and only for devices
//! of the follower's own domain, a Welcome only with added devices and its tree,
//! no more events or membership changes than `rules::limits` allows, and MLS
//! bytes that are what the event says they are (`rules::follower_mls`); a
//! departure notice the hub wrote carries no MLS bytes, but a departed device
//! and a short reason (`rules::departure`).
//! (Whether the sender is the group's hub, whether the group is followed here,
//! and whether a Welcome is for key packages the hub's side claimed, needs the
//! database: the service checks those.)

use crate::rules::departure::check_delivered_notice;
use crate::rules::follower_mls::{
    ClaimedContent, CommitSender, check_message, check_ratchet_tree, welcome_recipients,
};
use crate::rules::ids::{Epoch, GroupId, Seq};
use crate::rules::limits::{MAX_DELIVERED_EVENTS, MAX_MEMBERSHIP_CHANGES, check_count};
use conclave_core::ids::{CredentialIdentity, Domain};

/// Which kind of log entry an event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IncomingKind {
    Commit,
    Proposal,
    Application,
    /// A departure notice the hub wrote: `sender` departed, `message` is why.
    Departure,
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
    /// The trace the hub accepted it in (a valid W3C `traceparent`), if the
    /// hub sent one.
    pub(crate) traceparent: Option<String>,
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
    /// A departure notice: `sender` departed, `message` is the reason.
    Departure,
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
    /// The KeyPackageRefs the Welcome is addressed to (of every added device,
    /// of any domain); empty without a Welcome.
    pub(crate) welcome_recipients: Vec<Vec<u8>>,
    /// The trace the hub accepted it in (a valid W3C `traceparent`), if the
    /// hub sent one.
    pub(crate) traceparent: Option<String>,
}

/// Checks a batch of group `group_id`'s events: consecutive sequence numbers,
/// known kinds, parsable identities, membership changes only in commits and
/// only for devices of `own` domain, a Welcome only with added devices, and the
/// MLS bytes of each event.
pub(crate) fn check_batch(
    own: &Domain,
    group_id: &GroupId,
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
        let (kind, claimed) = match event.kind {
            IncomingKind::Commit => (CheckedKind::Commit, ClaimedContent::Commit),
            IncomingKind::Proposal => (CheckedKind::Proposal, ClaimedContent::Proposal),
            IncomingKind::Application => (CheckedKind::Application, ClaimedContent::Application),
            IncomingKind::Departure => {
                checked.push(check_departure(seq, event)?);
                continue;
            }
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
        let commit_sender =
            check_message(&event.message, claimed, group_id.as_bytes(), event.epoch)
                .map_err(|reason| InvalidBatch(format!("event {seq}: message: {reason}")))?;
        let mut recipients = Vec::new();
        if let Some((welcome, ratchet_tree)) = &welcome {
            let suite;
            (suite, recipients) = welcome_recipients(welcome)
                .map_err(|reason| InvalidBatch(format!("event {seq}: welcome: {reason}")))?;
            check_ratchet_tree(ratchet_tree, group_id.as_bytes(), suite)
                .map_err(|reason| InvalidBatch(format!("event {seq}: ratchet_tree: {reason}")))?;
        }
        // A device joins by a Welcome, or by an external commit of its own (which
        // needs none and adds no one else). Anything else would make member rows
        // here for devices that never joined.
        match commit_sender {
            Some(CommitSender::ExternalJoiner) => {
                let only_the_joiner =
                    added.is_empty() || (added.len() == 1 && added[0].to_string() == event.sender);
                if welcome.is_some() || !only_the_joiner {
                    return invalid(format!(
                        "event {seq}: an external commit adds only its sender, without a Welcome"
                    ));
                }
            }
            Some(CommitSender::Member) if welcome.is_none() && !added.is_empty() => {
                return invalid(format!(
                    "event {seq}: a commit adding devices needs a Welcome for them unless it is the external commit of the one it adds"
                ));
            }
            _ => {}
        }
        checked.push(CheckedEvent {
            seq,
            kind,
            epoch: Epoch::new(event.epoch),
            sender: event.sender,
            message: event.message,
            added,
            removed,
            welcome,
            welcome_recipients: recipients,
            traceparent: event.traceparent,
        });
    }
    Ok(checked)
}

/// A departure notice: it names a device (of any domain) and a short text,
/// changes no membership and carries no Welcome (its departed device goes when
/// a member's commit removes it).
fn check_departure(seq: Seq, event: IncomingEvent) -> Result<CheckedEvent, InvalidBatch> {
    let invalid = |reason: String| Err(InvalidBatch(format!("event {seq}: {reason}")));
    if !(event.added.is_empty() && event.removed.is_empty()) {
        return invalid("only a commit changes membership".to_owned());
    }
    if !(event.welcome.is_empty() && event.ratchet_tree.is_empty()) {
        return invalid("a departure notice carries no Welcome".to_owned());
    }
    if let Err(reason) = check_delivered_notice(&event.sender, &event.message) {
        return invalid(format!("departure notice: {reason}"));
    }
    Ok(CheckedEvent {
        seq,
        kind: CheckedKind::Departure,
        epoch: Epoch::new(event.epoch),
        sender: event.sender,
        message: event.message,
        added: Vec::new(),
        removed: Vec::new(),
        welcome: None,
        welcome_recipients: Vec::new(),
        traceparent: event.traceparent,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::hub::tests::fixture::{
        ALICE, BOB, Change, DAVE, Device, GroupFixture, bytes,
    };
    use openmls::prelude::OpenMlsProvider as _;

    /// Real MLS bytes of one group, as its hub would deliver them to the
    /// follower of `localhost` (the fixture's domain): Alice's commit adding
    /// Bob (epoch 0) with its Welcome and the new tree, then in epoch 1 an
    /// application message, a proposal, and Dave's external commit.
    struct Wire {
        group_id: GroupId,
        commit: Vec<u8>,
        welcome: Vec<u8>,
        ratchet_tree: Vec<u8>,
        bob_key_package_ref: Vec<u8>,
        application: Vec<u8>,
        proposal: Vec<u8>,
        external_commit: Vec<u8>,
    }

    impl Wire {
        fn new() -> Wire {
            let mut fixture = GroupFixture::with_members(1);
            let key_package = fixture.invite(Device::new(BOB));
            let bob_key_package_ref = key_package
                .hash_ref(fixture.invited(BOB).provider.crypto())
                .unwrap()
                .as_slice()
                .to_vec();
            let added = fixture.commit(0, Change::Add(vec![key_package]));
            fixture.accept(&added);
            let alice = &mut fixture.members[0];
            let application = alice
                .group
                .create_message(&alice.device.provider, &alice.device.signer, b"hello")
                .unwrap();
            let application = bytes(&application);
            let proposal = fixture.propose_self_update(0);
            let external_commit = fixture.external_commit(Device::new(DAVE)).commit;
            Wire {
                group_id: GroupId::new(fixture.hub.group_id()),
                commit: added.commit,
                welcome: added.welcome.unwrap(),
                ratchet_tree: fixture.hub.ratchet_tree(),
                bob_key_package_ref,
                application,
                proposal,
                external_commit,
            }
        }

        fn event(&self, seq: u64) -> IncomingEvent {
            IncomingEvent {
                seq,
                kind: IncomingKind::Application,
                epoch: 1,
                sender: ALICE.to_owned(),
                message: self.application.clone(),
                added: Vec::new(),
                removed: Vec::new(),
                welcome: Vec::new(),
                ratchet_tree: Vec::new(),
                traceparent: None,
            }
        }

        /// The commit adding Bob, with his Welcome.
        fn adding(&self, seq: u64) -> IncomingEvent {
            IncomingEvent {
                kind: IncomingKind::Commit,
                epoch: 0,
                message: self.commit.clone(),
                added: vec![BOB.to_owned()],
                welcome: self.welcome.clone(),
                ratchet_tree: self.ratchet_tree.clone(),
                ..self.event(seq)
            }
        }

        /// Bob's departure notice, which the hub wrote.
        fn departing(&self, seq: u64) -> IncomingEvent {
            IncomingEvent {
                kind: IncomingKind::Departure,
                sender: BOB.to_owned(),
                message: b"revoked by an administrator".to_vec(),
                ..self.event(seq)
            }
        }

        fn proposing(&self, seq: u64) -> IncomingEvent {
            IncomingEvent {
                kind: IncomingKind::Proposal,
                message: self.proposal.clone(),
                ..self.event(seq)
            }
        }

        /// Dave's external commit, which adds him.
        fn joining(&self, seq: u64) -> IncomingEvent {
            IncomingEvent {
                kind: IncomingKind::Commit,
                sender: DAVE.to_owned(),
                message: self.external_commit.clone(),
                added: vec![DAVE.to_owned()],
                ..self.event(seq)
            }
        }
    }

    fn own() -> Domain {
        "localhost".parse().unwrap()
    }

    #[test]
    fn well_formed_batches_pass() {
        let wire = Wire::new();
        let batch = vec![
            wire.adding(4),
            wire.event(5),
            wire.proposing(6),
            wire.joining(7),
            wire.departing(8),
            IncomingEvent {
                message: Vec::new(),
                ..wire.departing(9)
            },
        ];
        let checked = check_batch(&own(), &wire.group_id, batch).unwrap();
        assert_eq!(checked.len(), 6);
        assert_eq!(checked[4].kind, CheckedKind::Departure);
        assert_eq!(checked[4].sender, BOB);
        assert_eq!(checked[4].message, b"revoked by an administrator");
        assert_eq!(checked[0].added[0].to_string(), BOB);
        assert!(checked[0].welcome.is_some());
        assert_eq!(
            checked[0].welcome_recipients,
            vec![wire.bob_key_package_ref]
        );
        assert_eq!(checked[3].added[0].to_string(), DAVE);
        assert!(checked[3].welcome_recipients.is_empty());
    }

    /// Refusals of a batch's shape, before any MLS bytes are looked at.
    #[test]
    fn malformed_batches_are_refused_with_the_reason() {
        let wire = Wire::new();
        let event = |seq| wire.event(seq);
        let commit = |seq| IncomingEvent {
            kind: IncomingKind::Commit,
            epoch: 0,
            message: wire.commit.clone(),
            ..wire.event(seq)
        };
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
                "is not a device of localhost",
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
                    ratchet_tree: vec![],
                    ..wire.adding(1)
                }],
                "ratchet tree",
            ),
            (
                "welcome without added devices",
                vec![IncomingEvent {
                    added: vec![],
                    ..wire.adding(1)
                }],
                "added devices",
            ),
            (
                "departure notice naming no device",
                vec![IncomingEvent {
                    sender: "bob".to_owned(),
                    ..wire.departing(1)
                }],
                "event 1: departure notice: departed device",
            ),
            (
                "departure notice with a binary reason",
                vec![IncomingEvent {
                    message: vec![0xff],
                    ..wire.departing(1)
                }],
                "event 1: departure notice: the reason is not UTF-8",
            ),
            (
                "departure notice with a long reason",
                vec![IncomingEvent {
                    message: vec![b'a'; 257],
                    ..wire.departing(1)
                }],
                "more than the limit of 256",
            ),
            (
                "departure notice changing membership",
                vec![IncomingEvent {
                    removed: vec![BOB.to_owned()],
                    ..wire.departing(1)
                }],
                "event 1: only a commit changes membership",
            ),
            (
                "departure notice with a Welcome",
                vec![IncomingEvent {
                    welcome: wire.welcome.clone(),
                    ratchet_tree: wire.ratchet_tree.clone(),
                    ..wire.departing(1)
                }],
                "event 1: a departure notice carries no Welcome",
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
        check_refusals(&wire.group_id, cases);
    }

    /// Refusals of MLS bytes that are not what the event says they are:
    /// garbage of every kind, messages of the wrong type, group or epoch.
    #[test]
    fn events_whose_mls_bytes_are_not_what_they_claim_are_refused() {
        let wire = Wire::new();
        let other_group = GroupFixture::with_members(2);
        let garbage = b"not an MLS message".to_vec();
        // The tree ends with the signature of its last leaf (Bob's).
        let mut spoilt_tree = wire.ratchet_tree.clone();
        *spoilt_tree.last_mut().unwrap() ^= 1;
        let cases: Vec<(&str, Vec<IncomingEvent>, &str)> = vec![
            (
                "garbage commit",
                vec![IncomingEvent {
                    message: garbage.clone(),
                    ..wire.adding(1)
                }],
                "event 1: message: it is not an MLSMessage",
            ),
            (
                "garbage proposal",
                vec![IncomingEvent {
                    message: garbage.clone(),
                    ..wire.proposing(1)
                }],
                "event 1: message: it is not an MLSMessage",
            ),
            (
                "garbage application message, after a good one",
                vec![
                    wire.event(1),
                    IncomingEvent {
                        message: garbage.clone(),
                        ..wire.event(2)
                    },
                ],
                "event 2: message: it is not an MLSMessage",
            ),
            (
                "a commit with trailing bytes",
                vec![IncomingEvent {
                    message: [wire.commit.clone(), vec![0]].concat(),
                    ..wire.adding(1)
                }],
                "event 1: message: it is not an MLSMessage: 1 unexpected bytes follow it",
            ),
            (
                "an application message as a commit",
                vec![IncomingEvent {
                    kind: IncomingKind::Commit,
                    ..wire.event(1)
                }],
                "a commit must be a PublicMessage, not a PrivateMessage",
            ),
            (
                "a commit as an application message",
                vec![IncomingEvent {
                    kind: IncomingKind::Application,
                    added: vec![],
                    welcome: vec![],
                    ratchet_tree: vec![],
                    ..wire.adding(1)
                }],
                "an application message must be a PrivateMessage, not a PublicMessage",
            ),
            (
                "a proposal as a commit",
                vec![IncomingEvent {
                    kind: IncomingKind::Commit,
                    ..wire.proposing(1)
                }],
                "it carries a proposal but the event is a commit",
            ),
            (
                "a Welcome as a commit",
                vec![IncomingEvent {
                    message: wire.welcome.clone(),
                    ..wire.adding(1)
                }],
                "a commit must be a PublicMessage, not a Welcome",
            ),
            (
                "a commit of another epoch",
                vec![IncomingEvent {
                    epoch: 3,
                    ..wire.adding(1)
                }],
                "it is for epoch 0 but the event is for epoch 3",
            ),
            (
                "an application message of another epoch",
                vec![IncomingEvent {
                    epoch: 0,
                    ..wire.event(1)
                }],
                "it is for epoch 1 but the event is for epoch 0",
            ),
            (
                "garbage Welcome",
                vec![IncomingEvent {
                    welcome: garbage.clone(),
                    ..wire.adding(1)
                }],
                "event 1: welcome: it is not an MLSMessage",
            ),
            (
                "a commit as the Welcome",
                vec![IncomingEvent {
                    welcome: wire.commit.clone(),
                    ..wire.adding(1)
                }],
                "event 1: welcome: the message carries a PublicMessage, not a Welcome",
            ),
            (
                "garbage ratchet tree",
                vec![IncomingEvent {
                    ratchet_tree: garbage.clone(),
                    ..wire.adding(1)
                }],
                "event 1: ratchet_tree: it does not decode",
            ),
            (
                "a ratchet tree with trailing bytes",
                vec![IncomingEvent {
                    ratchet_tree: [wire.ratchet_tree.clone(), vec![0]].concat(),
                    ..wire.adding(1)
                }],
                "event 1: ratchet_tree: 1 unexpected bytes follow it",
            ),
            (
                "a ratchet tree whose last leaf's signature is spoilt",
                vec![IncomingEvent {
                    ratchet_tree: spoilt_tree,
                    ..wire.adding(1)
                }],
                "event 1: ratchet_tree: it does not verify",
            ),
            (
                "a member's commit adding a device without a Welcome",
                vec![IncomingEvent {
                    welcome: vec![],
                    ratchet_tree: vec![],
                    ..wire.adding(1)
                }],
                "event 1: a commit adding devices needs a Welcome",
            ),
            (
                "an external commit adding another device than its sender",
                vec![IncomingEvent {
                    added: vec![BOB.to_owned()],
                    ..wire.joining(1)
                }],
                "event 1: an external commit adds only its sender",
            ),
            (
                "an external commit with a Welcome",
                vec![IncomingEvent {
                    welcome: wire.welcome.clone(),
                    ratchet_tree: wire.ratchet_tree.clone(),
                    ..wire.joining(1)
                }],
                "event 1: an external commit adds only its sender, without a Welcome",
            ),
        ];
        check_refusals(&wire.group_id, cases);

        // Every message of the batch names its group, and it must be this one.
        let other_id = GroupId::new(other_group.hub.group_id());
        for (case, event) in [
            ("commit", wire.adding(1)),
            ("proposal", wire.proposing(1)),
            ("application message", wire.event(1)),
        ] {
            check_refusals(
                &other_id,
                vec![(case, vec![event], "event 1: message: it is for group")],
            );
        }
    }

    fn check_refusals(group_id: &GroupId, cases: Vec<(&str, Vec<IncomingEvent>, &str)>) {
        for (case, events, fragment) in cases {
            match check_batch(&own(), group_id, events) {
                Err(InvalidBatch(reason)) => {
                    assert!(reason.contains(fragment), "{case}: {reason}")
                }
                other => panic!("{case}: {other:?}"),
            }
        }
    }
}
