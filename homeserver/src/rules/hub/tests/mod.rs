//! The hub's rules against real openmls clients: every commit, proposal and message
//! here is made by openmls as a Conclave client would make it, or spoilt from one.

pub(crate) mod fixture;

use conclave_core::ids::CredentialIdentity;
use openmls::messages::group_info::VerifiableGroupInfo;
use openmls::prelude::OpenMlsProvider as _;
use openmls::prelude::tls_codec::Serialize as _;
use openmls::prelude::{
    Extensions, GroupId, LeafNodeIndex, MlsGroupJoinConfig, MlsMessageBodyIn,
    PURE_CIPHERTEXT_WIRE_FORMAT_POLICY, ProcessedMessageContent, Proposal, Verifiable as _,
};

use super::{
    CorruptState, HubGroup, HubRejection, NewLeaf, PastEpochWindow, check_application_message,
};
use fixture::*;

/// What a commit's changes to the tree must be.
#[derive(Default)]
struct Changes {
    external: bool,
    added: Vec<NewLeaf>,
    changed: Vec<NewLeaf>,
    removed: Vec<CredentialIdentity>,
}

/// What a row expects of the hub.
enum Expect {
    Accepted(Changes),
    /// Refused with a rejection `is` accepts, whose message contains `message`.
    Refused {
        is: fn(&HubRejection) -> bool,
        message: &'static str,
    },
}

fn refused(is: fn(&HubRejection) -> bool, message: &'static str) -> Expect {
    Expect::Refused { is, message }
}

/// Prepares a submission against a fresh group of Alice, Bob and Carol (epoch 1).
type Build = fn(&mut GroupFixture) -> (Submitted, Expect);

/// Runs one row: an accepted commit must carry exactly the expected changes, and is
/// then applied with every client following; a refused one must leave the group as
/// it was.
fn check(name: &str, build: Build) {
    let mut fixture = GroupFixture::with_members(3);
    let (submitted, expect) = build(&mut fixture);
    let epoch = fixture.hub.epoch();
    let state = fixture.hub.to_state();
    match (fixture.hub.check_commit(&submitted.submission()), expect) {
        (Ok(decision), Expect::Accepted(changes)) => {
            assert_eq!(decision.new_epoch, epoch + 1, "{name}: new epoch");
            assert_eq!(decision.external, changes.external, "{name}: external");
            assert_eq!(decision.added, changes.added, "{name}: added");
            assert_eq!(
                decision.changed_leaves, changes.changed,
                "{name}: changed leaves"
            );
            assert_eq!(decision.removed, changes.removed, "{name}: removed");
            fixture.apply(decision, &submitted);
        }
        (Ok(decision), Expect::Refused { message, .. }) => {
            panic!("{name}: accepted ({decision:?}), expected a refusal with {message:?}")
        }
        (Err(error), Expect::Accepted(_)) => panic!("{name}: refused: {error}"),
        (Err(error), Expect::Refused { is, message }) => {
            assert!(is(&error), "{name}: refused with {error:?}");
            let text = error.to_string();
            assert!(text.contains(message), "{name}: {text:?} lacks {message:?}");
            assert!(
                fixture.hub.to_state() == state,
                "{name}: the refusal changed the group"
            );
        }
    }
}

#[test]
fn commits_that_change_the_tree_are_accepted_with_their_changes() {
    let rows: Vec<(&str, Build)> = vec![
        ("add with a welcome", |f| {
            let key_package = f.invite(Device::new(DAVE));
            let dave = f.invited(DAVE).added_leaf(&key_package);
            let submitted = f.commit(0, Change::Add(vec![key_package]));
            let changes = Changes {
                added: vec![dave],
                ..Changes::default()
            };
            (submitted, Expect::Accepted(changes))
        }),
        ("remove", |f| {
            let alice = f.members[0].device.leaf();
            let submitted = f.commit(0, Change::Remove(vec![2]));
            let changes = Changes {
                removed: vec![identity(CAROL)],
                changed: vec![alice],
                ..Changes::default()
            };
            (submitted, Expect::Accepted(changes))
        }),
        ("self-update", |f| {
            let bob = f.members[1].device.leaf();
            let submitted = f.commit(1, Change::SelfUpdate);
            let changes = Changes {
                changed: vec![bob],
                ..Changes::default()
            };
            (submitted, Expect::Accepted(changes))
        }),
        ("self-update onto a new signature key", |f| {
            let new_key = Device::new(BOB);
            let bob = new_key.leaf();
            let submitted = f.commit(1, Change::NewSigner(Box::new(new_key)));
            let changes = Changes {
                changed: vec![bob],
                ..Changes::default()
            };
            (submitted, Expect::Accepted(changes))
        }),
        ("group info re-encoded as it came", |f| {
            let bob = f.members[1].device.leaf();
            let mut submitted = f.commit(1, Change::SelfUpdate);
            submitted.group_info = rebuild_group_info(&submitted, 1, None, None);
            let changes = Changes {
                changed: vec![bob],
                ..Changes::default()
            };
            (submitted, Expect::Accepted(changes))
        }),
        ("external commit by a new device of a member", |f| {
            let device = Device::new(ALICE_SECOND);
            let leaf = device.leaf();
            let submitted = f.external_commit(device);
            let changes = Changes {
                external: true,
                changed: vec![leaf],
                ..Changes::default()
            };
            (submitted, Expect::Accepted(changes))
        }),
        ("external commit resynchronising a member's device", |f| {
            let device = f.members[1].device.restored();
            let leaf = device.leaf();
            let submitted = f.external_commit(device);
            let changes = Changes {
                external: true,
                changed: vec![leaf],
                removed: vec![identity(BOB)],
                ..Changes::default()
            };
            (submitted, Expect::Accepted(changes))
        }),
    ];
    for (name, build) in rows {
        check(name, build);
    }
}

#[test]
fn malformed_or_misdirected_commits_are_refused() {
    let rows: Vec<(&str, Build)> = vec![
        ("garbage", |f| {
            let mut submitted = f.commit(1, Change::SelfUpdate);
            submitted.commit = b"not an mls message".to_vec();
            let is = |e: &_| matches!(e, HubRejection::MalformedMessage { what: "commit", .. });
            (submitted, refused(is, "commit is not a valid MLSMessage"))
        }),
        ("empty", |f| {
            let mut submitted = f.commit(1, Change::SelfUpdate);
            submitted.commit.clear();
            let is = |e: &_| matches!(e, HubRejection::MalformedMessage { .. });
            (submitted, refused(is, "it is empty"))
        }),
        ("truncated", |f| {
            let mut submitted = f.commit(1, Change::SelfUpdate);
            submitted.commit.pop();
            let is = |e: &_| matches!(e, HubRejection::MalformedMessage { .. });
            (submitted, refused(is, "commit is not a valid MLSMessage"))
        }),
        ("followed by more bytes", |f| {
            let mut submitted = f.commit(1, Change::SelfUpdate);
            submitted.commit.extend([0, 0]);
            let is = |e: &_| matches!(e, HubRejection::MalformedMessage { .. });
            (submitted, refused(is, "2 unexpected bytes follow it"))
        }),
        ("sent as a PrivateMessage", |f| {
            let Member { device, group } = &mut f.members[1];
            let ciphertext = MlsGroupJoinConfig::builder()
                .wire_format_policy(PURE_CIPHERTEXT_WIRE_FORMAT_POLICY)
                .build();
            group
                .set_configuration(device.provider.storage(), &ciphertext)
                .unwrap();
            let submitted = f.commit(1, Change::SelfUpdate);
            let is = |e: &_| {
                matches!(
                    e,
                    HubRejection::NotPublicMessage {
                        found: "PrivateMessage",
                        ..
                    }
                )
            };
            (
                submitted,
                refused(
                    is,
                    "commit must be sent as a PublicMessage, not as a PrivateMessage",
                ),
            )
        }),
        ("a proposal submitted as a commit", |f| {
            let mut submitted = f.commit(1, Change::SelfUpdate);
            submitted.commit = f.propose_self_update(2);
            let is = |e: &_| {
                matches!(
                    e,
                    HubRejection::WrongContentType {
                        found: "proposal",
                        ..
                    }
                )
            };
            (
                submitted,
                refused(is, "the message submitted as a commit carries a proposal"),
            )
        }),
        ("for another group", |_| {
            let mut other = GroupFixture::with_members(1);
            let submitted = other.commit(0, Change::SelfUpdate);
            let is = |e: &_| matches!(e, HubRejection::WrongGroup { .. });
            (submitted, refused(is, "but was submitted to group"))
        }),
        ("for a future epoch", |f| {
            // Bob merges his own commit without waiting for the hub, and commits again.
            let _ = f.commit(1, Change::SelfUpdate);
            let Member { device, group } = &mut f.members[1];
            group.merge_pending_commit(&device.provider).unwrap();
            let submitted = f.commit(1, Change::SelfUpdate);
            let is = |e: &_| {
                matches!(
                    e,
                    HubRejection::FutureEpoch {
                        message_epoch: 2,
                        current_epoch: 1
                    }
                )
            };
            (
                submitted,
                refused(
                    is,
                    "message is for epoch 2 but the group is only at epoch 1",
                ),
            )
        }),
    ];
    for (name, build) in rows {
        check(name, build);
    }
}

#[test]
fn commits_by_anyone_but_the_calling_member_are_refused() {
    let rows: Vec<(&str, Build)> = vec![
        ("a member's commit submitted by another device", |f| {
            let mut submitted = f.commit(1, Change::SelfUpdate);
            submitted.sender = identity(CAROL);
            let is = |e: &_| matches!(e, HubRejection::SenderNotCaller { .. });
            (
                submitted,
                refused(
                    is,
                    "commit is sent by bob@localhost/00000000000000b1 but the caller is carol@localhost/00000000000000c1",
                ),
            )
        }),
        (
            "forged by a non-member as a member, submitted with that member's session",
            |f| {
                // Mallory runs her own group under the same group id and epoch, where she
                // sits in leaf 0, Alice's leaf at the hub.
                let mut submitted = impostor_commit(f, &[MALLORY], 0);
                submitted.sender = identity(ALICE);
                let is = |e: &_| matches!(e, HubRejection::InvalidCommit(_));
                (submitted, refused(is, "signature"))
            },
        ),
        (
            "forged by a non-member as a member, submitted as itself",
            |f| {
                let submitted = impostor_commit(f, &[MALLORY], 0);
                let is = |e: &_| matches!(e, HubRejection::SenderNotCaller { .. });
                (
                    submitted,
                    refused(
                        is,
                        "is sent by alice@localhost/00000000000000a1 but the caller is mallory",
                    ),
                )
            },
        ),
        ("from a leaf that holds no member", |f| {
            let removal = f.commit(0, Change::Remove(vec![2]));
            f.accept(&removal);
            let submitted = impostor_commit(f, &[MALLORY, MALLORY_SECOND, MALLORY_THIRD], 2);
            let is = |e: &_| matches!(e, HubRejection::NotAMember { leaf_index: 2, .. });
            (submitted, refused(is, "commit claims to come from leaf 2"))
        }),
        ("external commit by a stranger", |f| {
            let submitted = f.external_commit(Device::new(MALLORY));
            let is = |e: &_| matches!(e, HubRejection::ExternalJoinNotAllowed(_));
            (
                submitted,
                refused(is, "user mallory@localhost has no device in the group"),
            )
        }),
        ("external commit evicting another member's device", |f| {
            // Given Bob's signature key, openmls's external commit removes Bob's leaf
            // as if Alice's new device were Bob resynchronising.
            let device = f.members[1].device.restored_as(ALICE_SECOND);
            let submitted = f.external_commit(device);
            let is = |e: &_| matches!(e, HubRejection::ExternalJoinNotAllowed(_));
            (
                submitted,
                refused(
                    is,
                    "it removes bob@localhost/00000000000000b1, but an external commit may remove only the joiner's own earlier leaf",
                ),
            )
        }),
        ("external commit submitted by another device", |f| {
            let mut submitted = f.external_commit(Device::new(ALICE_SECOND));
            submitted.sender = identity(ALICE_THIRD);
            let is = |e: &_| matches!(e, HubRejection::ExternalJoinNotAllowed(_));
            (
                submitted,
                refused(
                    is,
                    "its new leaf is alice@localhost/00000000000000a2 but the caller is alice@localhost/00000000000000a3",
                ),
            )
        }),
    ];
    for (name, build) in rows {
        check(name, build);
    }
}

#[test]
fn commits_breaking_conclaves_leaf_rules_are_refused() {
    let rows: Vec<(&str, Build)> = vec![
        ("add of a second leaf for a member's device", |f| {
            // Bob's device with a fresh key: openmls sees a new member, Conclave the
            // same device twice.
            let key_package = Device::new(BOB).key_package();
            let submitted = f.commit(0, Change::Add(vec![key_package]));
            let is = |e: &_| matches!(e, HubRejection::InvalidCommit(_));
            (
                submitted,
                refused(
                    is,
                    "device bob@localhost/00000000000000b1 would hold two leaves",
                ),
            )
        }),
        ("add of a key package that names no device", |f| {
            let key_package = f.invite(Device::with_credential(DAVE, b"dave@localhost"));
            let submitted = f.commit(0, Change::Add(vec![key_package]));
            let is = |e: &_| matches!(e, HubRejection::InvalidCommit(_));
            (
                submitted,
                refused(
                    is,
                    "a new leaf does not name a device: credential identity \"dave@localhost\" is invalid",
                ),
            )
        }),
        ("update path passing a leaf to another device", |f| {
            let submitted = f.commit(1, Change::NewSigner(Box::new(Device::new(ERIN))));
            let is = |e: &_| matches!(e, HubRejection::InvalidCommit(_));
            (
                submitted,
                refused(
                    is,
                    "it would pass the leaf of bob@localhost/00000000000000b1 to erin@localhost/00000000000000e1",
                ),
            )
        }),
    ];
    for (name, build) in rows {
        check(name, build);
    }
}

#[test]
fn welcomes_must_come_exactly_with_adds_and_name_exactly_the_added() {
    let rows: Vec<(&str, Build)> = vec![
        ("add without a welcome", |f| {
            let key_package = f.invite(Device::new(DAVE));
            let mut submitted = f.commit(0, Change::Add(vec![key_package]));
            submitted.welcome = None;
            let is = |e: &_| matches!(e, HubRejection::MissingWelcome { added: 1 });
            (
                submitted,
                refused(is, "the commit adds 1 members but no welcome was submitted"),
            )
        }),
        ("welcome for other key packages", |f| {
            let dave = f.invite(Device::new(DAVE));
            let erin = f.invite(Device::new(ERIN));
            let mut submitted = f.commit(0, Change::Add(vec![dave]));
            submitted.welcome = f.commit(1, Change::Add(vec![erin])).welcome;
            let is = |e: &_| {
                matches!(
                    e,
                    HubRejection::WelcomeRecipientsMismatch {
                        expected: 1,
                        found: 1
                    }
                )
            };
            (
                submitted,
                refused(
                    is,
                    "the welcome is addressed to 1 key packages that are not exactly",
                ),
            )
        }),
        ("welcome with a commit that adds nobody", |f| {
            let dave = f.invite(Device::new(DAVE));
            let welcome = f.commit(0, Change::Add(vec![dave])).welcome;
            let mut submitted = f.commit(1, Change::SelfUpdate);
            submitted.welcome = welcome;
            let is = |e: &_| matches!(e, HubRejection::UnexpectedWelcome);
            (
                submitted,
                refused(is, "a welcome was submitted but the commit adds no members"),
            )
        }),
        ("welcome that is not a Welcome", |f| {
            let dave = f.invite(Device::new(DAVE));
            let mut submitted = f.commit(0, Change::Add(vec![dave]));
            submitted.welcome = Some(submitted.group_info.clone());
            let is = |e: &_| matches!(e, HubRejection::InvalidWelcome(_));
            (
                submitted,
                refused(is, "the message carries a GroupInfo, not a Welcome"),
            )
        }),
    ];
    for (name, build) in rows {
        check(name, build);
    }
}

#[test]
fn the_group_info_must_be_the_committers_for_the_new_epoch() {
    let rows: Vec<(&str, Build)> = vec![
        ("garbage", |f| {
            let mut submitted = f.commit(1, Change::SelfUpdate);
            submitted.group_info = vec![1, 2, 3];
            let is = |e: &_| matches!(e, HubRejection::InvalidGroupInfo(_));
            (
                submitted,
                refused(is, "group info is invalid: it is not a valid MLSMessage"),
            )
        }),
        ("the commit instead of a GroupInfo", |f| {
            let mut submitted = f.commit(1, Change::SelfUpdate);
            submitted.group_info = submitted.commit.clone();
            let is = |e: &_| matches!(e, HubRejection::InvalidGroupInfo(_));
            (
                submitted,
                refused(is, "the message carries a PublicMessage, not a GroupInfo"),
            )
        }),
        ("the group info of the current epoch", |f| {
            let Member { device, group } = &f.members[0];
            let current = group
                .export_group_info(device.provider.crypto(), &device.signer, false)
                .unwrap();
            let mut submitted = f.commit(1, Change::SelfUpdate);
            submitted.group_info = bytes(&current);
            let is = |e: &_| matches!(e, HubRejection::InvalidGroupInfo(_));
            (
                submitted,
                refused(is, "it is for epoch 1 but the commit creates epoch 2"),
            )
        }),
        ("the group info of a rival commit", |f| {
            let rival = f.commit(0, Change::SelfUpdate);
            let mut submitted = f.commit(1, Change::SelfUpdate);
            submitted.group_info = rival.group_info;
            let is = |e: &_| matches!(e, HubRejection::InvalidGroupInfo(_));
            (
                submitted,
                refused(is, "its group context is not the one the commit creates"),
            )
        }),
        ("a group info naming another signer", |f| {
            let mut submitted = f.commit(1, Change::SelfUpdate);
            submitted.group_info = rebuild_group_info(&submitted, 0, None, None);
            let is = |e: &_| matches!(e, HubRejection::InvalidGroupInfo(_));
            (
                submitted,
                refused(is, "names another signer than the committer's leaf 1"),
            )
        }),
        ("a group info signed by someone else", |f| {
            let rival = f.commit(0, Change::SelfUpdate);
            let mut submitted = f.commit(1, Change::SelfUpdate);
            submitted.group_info = rebuild_group_info(&submitted, 1, None, Some(&rival.group_info));
            let is = |e: &_| matches!(e, HubRejection::InvalidGroupInfo(_));
            (
                submitted,
                refused(
                    is,
                    "its signature does not verify under the committer's signature key",
                ),
            )
        }),
        ("a group info without external_pub", |f| {
            let mut submitted = f.commit(1, Change::SelfUpdate);
            submitted.group_info =
                rebuild_group_info(&submitted, 1, Some(Extensions::empty()), None);
            let is = |e: &_| matches!(e, HubRejection::InvalidGroupInfo(_));
            (
                submitted,
                refused(is, "it lacks the external_pub extension"),
            )
        }),
    ];
    for (name, build) in rows {
        check(name, build);
    }
}

#[test]
fn only_the_first_commit_of_an_epoch_is_accepted() {
    let mut fixture = GroupFixture::with_members(3);
    let first = fixture.commit(0, Change::SelfUpdate);
    let second = fixture.commit(1, Change::SelfUpdate);
    // Both are valid for epoch 1 until one of them is applied.
    let first_decision = fixture.hub.check_commit(&first.submission()).unwrap();
    let second_decision = fixture.hub.check_commit(&second.submission()).unwrap();
    fixture.apply(first_decision, &first);

    let error = fixture.hub.check_commit(&second.submission()).unwrap_err();
    assert!(
        matches!(
            error,
            HubRejection::StaleEpoch {
                message_epoch: 1,
                current_epoch: 2
            }
        ),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "message is for epoch 1 but the group is at epoch 2"
    );
    // A decision checked before the winner was applied cannot be applied after it.
    let error = fixture.hub.apply_commit(second_decision).unwrap_err();
    assert!(
        matches!(error, HubRejection::DecisionMismatch(_)),
        "{error:?}"
    );
    assert_eq!(fixture.hub.epoch(), 2);

    // The loser merges the winner (done by `apply`) and retries in the new epoch.
    let retry = fixture.commit(1, Change::SelfUpdate);
    fixture.accept(&retry);
    assert_eq!(fixture.hub.epoch(), 3);
}

#[test]
fn creation_and_state_round_trip() {
    for count in [1, 3] {
        let fixture = GroupFixture::with_members(count);
        let hub = &fixture.hub;
        assert_eq!(hub.epoch(), if count == 1 { 0 } else { 1 });
        assert_eq!(hub.group_id(), fixture.members[0].group.group_id().to_vec());
        let members = hub.members();
        assert_eq!(members.len(), count);
        assert_eq!(members[0].leaf_index, 0);
        assert_eq!(members[0].identity, identity(ALICE));
        assert_eq!(
            members[0].signature_key,
            fixture.members[0].device.signer.to_public_vec()
        );

        let state = hub.to_state();
        let restored = HubGroup::from_state(&state).unwrap();
        assert_eq!(restored.group_id(), hub.group_id());
        assert_eq!(restored.epoch(), hub.epoch());
        assert_eq!(restored.members(), members);
        assert_eq!(restored.ratchet_tree(), hub.ratchet_tree());
        assert_eq!(restored.group_info(), hub.group_info());
        assert!(
            restored.to_state() == state,
            "the same state gives the same bytes"
        );
    }

    // A restored group goes on accepting commits.
    let mut fixture = GroupFixture::with_members(3);
    fixture.hub = HubGroup::from_state(&fixture.hub.to_state()).unwrap();
    fixture.advance(2);
    let key_package = fixture.invite(Device::new(DAVE));
    let add = fixture.commit(1, Change::Add(vec![key_package]));
    fixture.accept(&add);
    assert_eq!(fixture.hub.epoch(), 3);
    assert_eq!(fixture.hub.members().len(), 4);
}

#[test]
fn creation_is_refused_unless_the_creator_alone_starts_the_group() {
    let single = GroupFixture::with_members(1);
    let (group_info, tree) = (single.hub.group_info(), single.hub.ratchet_tree());
    let three = GroupFixture::with_members(3);
    let (later_group_info, later_tree) = (three.hub.group_info(), three.hub.ratchet_tree());
    let other = GroupFixture::with_members(1);
    let other_tree = other.hub.ratchet_tree();
    let truncated_tree = &tree[..tree.len() - 1];
    let long_tree = [tree.as_slice(), &[0]].concat();

    /// Name, GroupInfo, ratchet tree, caller, expected message fragment.
    type Row<'a> = (&'a str, &'a [u8], &'a [u8], &'a str, &'a str);
    let rows: [Row; 8] = [
        (
            "garbage group info",
            b"garbage",
            &tree,
            ALICE,
            "group info is not a valid MLSMessage",
        ),
        (
            "a ratchet tree as group info",
            &tree,
            &tree,
            ALICE,
            "group info is not a valid MLSMessage",
        ),
        (
            "group info of epoch 1",
            &later_group_info,
            &later_tree,
            ALICE,
            "the group info is for epoch 1",
        ),
        (
            "another caller",
            &group_info,
            &tree,
            BOB,
            "the only member is alice@localhost/00000000000000a1 but the caller is bob@localhost/00000000000000b1",
        ),
        (
            "another group's tree",
            &group_info,
            &other_tree,
            ALICE,
            "group creation is invalid: ",
        ),
        (
            "empty tree",
            &group_info,
            &[],
            ALICE,
            "the ratchet tree is empty",
        ),
        (
            "truncated tree",
            &group_info,
            truncated_tree,
            ALICE,
            "the ratchet tree does not decode",
        ),
        (
            "tree followed by more bytes",
            &group_info,
            &long_tree,
            ALICE,
            "1 unexpected bytes follow the ratchet tree",
        ),
    ];
    for (name, group_info, tree, creator, message) in rows {
        match HubGroup::create(group_info, tree, &identity(creator)) {
            Ok(_) => panic!("{name}: accepted"),
            Err(error) => {
                assert!(
                    matches!(error, HubRejection::InvalidCreation(_)),
                    "{name}: {error:?}"
                );
                let text = error.to_string();
                assert!(text.contains(message), "{name}: {text:?} lacks {message:?}");
            }
        }
    }
    assert!(HubGroup::create(&group_info, &tree, &identity(ALICE)).is_ok());
}

#[test]
fn corrupt_states_are_refused() {
    let fixture = GroupFixture::with_members(2);
    let state = fixture.hub.to_state();
    let mut other_format = state.clone();
    other_format[0] = 3;
    // The tree starts after the format byte, the group id, the group info and
    // the tree's presence byte and length.
    let tree_at = 1 + 4 + fixture.hub.group_id().len() + 4 + fixture.hub.group_info().len() + 1 + 4;
    let mut damaged_tree = state.clone();
    // Continuation bytes only: a length no postcard reader accepts.
    damaged_tree[tree_at..tree_at + 16].fill(0xff);
    // A tree followed by one byte more, its length counting it.
    let mut tree_with_more = state.clone();
    let tree_length = u32::from_be_bytes(state[tree_at - 4..tree_at].try_into().unwrap());
    tree_with_more[tree_at - 4..tree_at].copy_from_slice(&(tree_length + 1).to_be_bytes());
    tree_with_more.insert(tree_at + tree_length as usize, 0);
    let mut bad_presence = state.clone();
    bad_presence[tree_at - 5] = 7;
    let long = [state.as_slice(), &[0]].concat();

    let mut rows: Vec<(String, Vec<u8>, &str)> = vec![
        ("empty".into(), Vec::new(), "it ends early"),
        ("other format".into(), other_format, "it is in format 3"),
        (
            "damaged tree".into(),
            damaged_tree,
            "openmls cannot read it: the ratchet tree does not decode",
        ),
        (
            "a tree with a byte more".into(),
            tree_with_more,
            "the ratchet tree does not decode: 1 bytes follow the value",
        ),
        (
            "bad presence byte".into(),
            bad_presence,
            "a part is marked 7",
        ),
        (
            "followed by more bytes".into(),
            long,
            "1 unexpected bytes follow it",
        ),
    ];
    for length in (1..state.len()).step_by(97) {
        rows.push((
            format!("truncated to {length}"),
            state[..length].to_vec(),
            "it ends early",
        ));
    }
    for (name, bytes, message) in rows {
        match HubGroup::from_state(&bytes) {
            Ok(_) => panic!("{name}: accepted"),
            Err(CorruptState(reason)) => {
                assert!(
                    reason.contains(message),
                    "{name}: {reason:?} lacks {message:?}"
                )
            }
        }
    }
}

/// A group's state as the homeserver before format 2 wrote it (JSON parts):
/// the fuzzing fixture, after its 8-byte timestamp (`fuzzing::seeds`).
const FORMAT_1_STATE: &[u8] = include_bytes!("../../../fuzzing/hub_group.bin");
/// The same group in format 2, as `FORMAT_1_STATE` converted gave it when
/// format 2 was made. Written again with `CONCLAVE_WRITE_GOLDEN_STATE=1` only
/// for a deliberate change of the format (and its number).
const FORMAT_2_STATE: &[u8] = include_bytes!("state_format_2.bin");

/// postcard writes what serde hands it without names (an enum variant is its
/// position), so an openmls upgrade that reorders or adds fields or variants
/// of the stored types would silently read stored states as something else.
/// The format 1 state (JSON, by name) converted must give exactly the bytes
/// format 2 gave when it was made, and load as the same group.
#[test]
fn stored_states_of_both_formats_load_as_they_did() {
    let json = &FORMAT_1_STATE[8..];
    assert_eq!(json[0], 1, "the fixture is format 1");
    let from_json = HubGroup::from_state(json).unwrap();
    let converted = from_json.to_state();
    if std::env::var_os("CONCLAVE_WRITE_GOLDEN_STATE").is_some() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/rules/hub/tests/state_format_2.bin");
        std::fs::write(path, &converted).unwrap();
    }
    assert!(
        converted == FORMAT_2_STATE,
        "the format 1 state converts to other bytes than format 2 gave: openmls's \
         stored types changed, and states stored before would not read back"
    );
    let from_postcard = HubGroup::from_state(FORMAT_2_STATE).unwrap();
    for group in [&from_json, &from_postcard] {
        assert_eq!(group.epoch(), 1);
        assert_eq!(
            group.cipher_suite(),
            1,
            "MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519"
        );
        let members: Vec<String> = group
            .members()
            .iter()
            .map(|member| member.identity.user_id().to_string())
            .collect();
        assert_eq!(
            members,
            ["alice@localhost", "bob@localhost", "carol@localhost"]
        );
    }
    assert_eq!(from_postcard.ratchet_tree(), from_json.ratchet_tree());
    assert_eq!(from_postcard.group_info(), from_json.group_info());
}

/// Bob (member 1) proposes adding Dave by reference, and the hub accepts the
/// proposal: its bytes, and the leaf Dave's commit will add.
fn bob_proposes_adding_dave(fixture: &mut GroupFixture) -> (Vec<u8>, NewLeaf) {
    let key_package = fixture.invite(Device::new(DAVE));
    let dave = fixture.invited(DAVE).added_leaf(&key_package);
    let Member { device, group } = &mut fixture.members[1];
    let (proposal, _) = group
        .propose_add_member(&device.provider, &device.signer, &key_package)
        .unwrap();
    let proposal = bytes(&proposal);
    fixture.hub.add_proposal(&identity(BOB), &proposal).unwrap();
    (proposal, dave)
}

#[test]
fn a_state_an_earlier_homeserver_saved_as_json_still_loads() {
    let mut fixture = GroupFixture::with_members(3);
    fixture.advance(1);
    let (proposal, dave) = bob_proposes_adding_dave(&mut fixture);

    let json = fixture.hub.to_json_state();
    assert_eq!(json[0], 1, "format 1");
    let state = fixture.hub.to_state();
    assert!(
        state.len() * 2 < json.len(),
        "postcard ({} bytes) is less than half of JSON ({} bytes)",
        state.len(),
        json.len()
    );
    let restored = HubGroup::from_state(&json).unwrap();
    assert!(
        restored.to_state() == state,
        "a JSON state loads as the same group, saved as format 2"
    );

    // The restored group, pending proposal included, goes on.
    fixture.hub = restored;
    deliver_proposal(&mut fixture, 1, &proposal);
    let commit = fixture.commit(0, Change::PendingProposals);
    let decision = fixture.hub.check_commit(&commit.submission()).unwrap();
    assert_eq!(decision.added, vec![dave]);
    fixture.apply(decision, &commit);
    assert_eq!(fixture.hub.members().len(), 4);
}

#[test]
fn proposals_by_reference_are_kept_until_a_commit_covers_them() {
    let mut fixture = GroupFixture::with_members(3);

    // Bob proposes adding Dave; the hub keeps the proposal across a save and load.
    let (proposal, dave) = bob_proposes_adding_dave(&mut fixture);
    fixture.hub = HubGroup::from_state(&fixture.hub.to_state()).unwrap();
    assert_eq!(fixture.hub.storage.parts().proposals.len(), 1);

    // Alice and Carol receive it; Alice commits it by reference.
    deliver_proposal(&mut fixture, 1, &proposal);
    let commit = fixture.commit(0, Change::PendingProposals);
    let decision = fixture.hub.check_commit(&commit.submission()).unwrap();
    assert_eq!(decision.added, vec![dave]);
    // Adds need no update path, so no leaf changes.
    assert_eq!(decision.changed_leaves, Vec::<NewLeaf>::new());
    fixture.apply(decision, &commit);
    assert_eq!(fixture.hub.members().len(), 4);
    assert!(
        fixture.hub.storage.parts().proposals.is_empty(),
        "the proposal store empties as the epoch ends"
    );

    // An Update proposal by reference makes its proposer a changed leaf.
    let update = fixture.propose_self_update(2);
    fixture.hub.add_proposal(&identity(CAROL), &update).unwrap();
    deliver_proposal(&mut fixture, 2, &update);
    let carol_leaf = fixture.members[2]
        .group
        .pending_proposals()
        .find_map(|queued| match queued.proposal() {
            Proposal::Update(update) => {
                Some(update.leaf_node().signature_key().as_slice().to_vec())
            }
            _ => None,
        })
        .unwrap();
    let commit = fixture.commit(0, Change::PendingProposals);
    let decision = fixture.hub.check_commit(&commit.submission()).unwrap();
    assert_eq!(decision.changed_leaves[0].identity, identity(CAROL));
    assert_eq!(decision.changed_leaves[0].signature_key, carol_leaf);
    assert_eq!(decision.changed_leaves[1].identity, identity(ALICE));
    fixture.apply(decision, &commit);

    // A proposal the hub never received cannot be committed by reference: the store
    // belongs to the hub, not to the committer.
    let unseen = fixture.propose_self_update(1);
    deliver_proposal(&mut fixture, 1, &unseen);
    let commit = fixture.commit(0, Change::PendingProposals);
    let error = fixture.hub.check_commit(&commit.submission()).unwrap_err();
    assert!(matches!(error, HubRejection::InvalidCommit(_)), "{error:?}");
    assert!(error.to_string().contains("proposal"), "{error}");
}

#[test]
fn proposals_are_refused_unless_valid_and_from_the_caller() {
    let mut fixture = GroupFixture::with_members(3);
    let stale = fixture.propose_self_update(2);
    fixture.advance(0);
    let valid = fixture.propose_self_update(1);
    let commit = fixture.commit(0, Change::SelfUpdate).commit;
    let Member { device, group } = &mut fixture.members[2];
    let ciphertext = MlsGroupJoinConfig::builder()
        .wire_format_policy(PURE_CIPHERTEXT_WIRE_FORMAT_POLICY)
        .build();
    group
        .set_configuration(device.provider.storage(), &ciphertext)
        .unwrap();
    let private = fixture.propose_self_update(2);

    type Is = fn(&HubRejection) -> bool;
    let rows: [(&str, &str, &[u8], Is, &str); 6] = [
        (
            "garbage",
            BOB,
            b"garbage",
            |e| {
                matches!(
                    e,
                    HubRejection::MalformedMessage {
                        what: "proposal",
                        ..
                    }
                )
            },
            "proposal is not a valid MLSMessage",
        ),
        (
            "a commit",
            ALICE,
            &commit,
            |e| {
                matches!(
                    e,
                    HubRejection::WrongContentType {
                        found: "commit",
                        ..
                    }
                )
            },
            "the message submitted as a proposal carries a commit",
        ),
        (
            "another device's",
            CAROL,
            &valid,
            |e| matches!(e, HubRejection::SenderNotCaller { .. }),
            "proposal is sent by bob@localhost/00000000000000b1 but the caller is carol",
        ),
        (
            "of an ended epoch",
            CAROL,
            &stale,
            |e| {
                matches!(
                    e,
                    HubRejection::StaleEpoch {
                        message_epoch: 1,
                        current_epoch: 2
                    }
                )
            },
            "message is for epoch 1 but the group is at epoch 2",
        ),
        (
            "sent as a PrivateMessage",
            CAROL,
            &private,
            |e| matches!(e, HubRejection::NotPublicMessage { .. }),
            "proposal must be sent as a PublicMessage",
        ),
        (
            "for another group",
            ALICE,
            &GroupFixture::with_members(1).propose_self_update(0),
            |e| matches!(e, HubRejection::WrongGroup { .. }),
            "proposal is for group",
        ),
    ];
    for (name, sender, proposal, is, message) in rows {
        let state = fixture.hub.to_state();
        let error = fixture
            .hub
            .add_proposal(&identity(sender), proposal)
            .unwrap_err();
        assert!(is(&error), "{name}: {error:?}");
        let text = error.to_string();
        assert!(text.contains(message), "{name}: {text:?} lacks {message:?}");
        assert!(
            fixture.hub.to_state() == state,
            "{name}: the refusal changed the group"
        );
    }
    fixture.hub.add_proposal(&identity(BOB), &valid).unwrap();
}

#[test]
fn application_messages_must_be_private_and_recent() {
    let mut fixture = GroupFixture::with_members(2);
    let at_epoch_1 = send(&mut fixture, 0);
    fixture.advance(1);
    let at_epoch_2 = send(&mut fixture, 0);
    fixture.advance(1);
    fixture.advance(0);
    let at_epoch_4 = send(&mut fixture, 1);
    let commit = fixture.commit(0, Change::SelfUpdate).commit;
    let Member { device, group } = &mut fixture.members[0];
    group
        .clear_pending_commit(device.provider.storage())
        .unwrap();
    let public = public_application_message(&fixture.hub.group_id(), 4);
    let other_group = {
        let mut other = GroupFixture::with_members(1);
        send(&mut other, 0)
    };
    // Alice sends her proposals encrypted: a handshake the hub cannot validate.
    let Member { device, group } = &mut fixture.members[0];
    let ciphertext = MlsGroupJoinConfig::builder()
        .wire_format_policy(PURE_CIPHERTEXT_WIRE_FORMAT_POLICY)
        .build();
    group
        .set_configuration(device.provider.storage(), &ciphertext)
        .unwrap();
    let private_proposal = fixture.propose_self_update(0);
    // Bob moves on to epoch 5 without the hub.
    let _ = fixture.commit(1, Change::SelfUpdate);
    let Member { device, group } = &mut fixture.members[1];
    group.merge_pending_commit(&device.provider).unwrap();
    let at_epoch_5 = send(&mut fixture, 1);

    type Is = fn(&HubRejection) -> bool;
    /// The message's epoch, or how it must be refused.
    type Expected<'a> = Result<u64, (Is, &'a str)>;
    let rows: [(&str, &[u8], Expected); 10] = [
        ("current epoch", &at_epoch_4, Ok(4)),
        ("within the window", &at_epoch_2, Ok(2)),
        (
            "beyond the window",
            &at_epoch_1,
            Err((
                |e| {
                    matches!(
                        e,
                        HubRejection::EpochOutsideWindow {
                            message_epoch: 1,
                            current_epoch: 4,
                            window: 2
                        }
                    )
                },
                "accepts only the last 2 past epochs",
            )),
        ),
        (
            "future epoch",
            &at_epoch_5,
            Err((
                |e| {
                    matches!(
                        e,
                        HubRejection::FutureEpoch {
                            message_epoch: 5,
                            current_epoch: 4
                        }
                    )
                },
                "message is for epoch 5 but the group is only at epoch 4",
            )),
        ),
        (
            "a PublicMessage",
            &public,
            Err((
                |e| {
                    matches!(
                        e,
                        HubRejection::NotPrivateMessage {
                            found: "PublicMessage"
                        }
                    )
                },
                "application message must be sent as a PrivateMessage, not as a PublicMessage",
            )),
        ),
        (
            "a commit",
            &commit,
            Err((
                |e| matches!(e, HubRejection::NotPrivateMessage { .. }),
                "not as a PublicMessage",
            )),
        ),
        (
            "an encrypted proposal",
            &private_proposal,
            Err((
                |e| {
                    matches!(
                        e,
                        HubRejection::NotPublicMessage {
                            what: "proposal",
                            ..
                        }
                    )
                },
                "proposal must be sent as a PublicMessage, not as a PrivateMessage",
            )),
        ),
        (
            "for another group",
            &other_group,
            Err((
                |e| matches!(e, HubRejection::WrongGroup { .. }),
                "application message is for group",
            )),
        ),
        (
            "garbage",
            b"garbage",
            Err((
                |e| matches!(e, HubRejection::MalformedMessage { .. }),
                "application message is not a valid MLSMessage",
            )),
        ),
        (
            "empty",
            &[],
            Err((
                |e| matches!(e, HubRejection::MalformedMessage { .. }),
                "it is empty",
            )),
        ),
    ];
    let window = PastEpochWindow(2);
    for (name, message, expect) in rows {
        let by_method = fixture.hub.check_application_message(message, window);
        let by_header = check_application_message(message, &fixture.hub.group_id(), 4, window);
        for result in [by_method, by_header] {
            match (result, &expect) {
                (Ok(epoch), Ok(expected)) => assert_eq!(epoch, *expected, "{name}"),
                (Ok(epoch), Err((_, message))) => {
                    panic!("{name}: accepted at epoch {epoch}, expected {message:?}")
                }
                (Err(error), Ok(_)) => panic!("{name}: refused: {error}"),
                (Err(error), Err((is, message))) => {
                    assert!(is(&error), "{name}: {error:?}");
                    let text = error.to_string();
                    assert!(text.contains(message), "{name}: {text:?} lacks {message:?}");
                }
            }
        }
    }
    // With no window, only the current epoch passes.
    assert!(
        fixture
            .hub
            .check_application_message(&at_epoch_2, PastEpochWindow(0))
            .is_err()
    );
    assert_eq!(
        fixture
            .hub
            .check_application_message(&at_epoch_4, PastEpochWindow(0))
            .unwrap(),
        4
    );
}

const ALICE_THIRD: &str = "alice@localhost/00000000000000a3";
const MALLORY_SECOND: &str = "mallory@localhost/00000000000000f2";
const MALLORY_THIRD: &str = "mallory@localhost/00000000000000f3";

/// A commit from `leaf` of a group run by `impostors` under the victim's group id and
/// at its epoch: well formed and validly signed, by devices that are not members.
fn impostor_commit(victim: &GroupFixture, impostors: &[&str], leaf: usize) -> Submitted {
    let group_id = GroupId::from_slice(&victim.hub.group_id());
    let mut impostor = GroupFixture::with_group_id(group_id, impostors);
    while impostor.hub.epoch() < victim.hub.epoch() {
        impostor.advance(0);
    }
    impostor.commit(leaf, Change::SelfUpdate)
}

/// Every member but the proposer stores a proposal, as from the hub's log.
fn deliver_proposal(fixture: &mut GroupFixture, proposer: usize, proposal: &[u8]) {
    for (index, Member { device, group }) in fixture.members.iter_mut().enumerate() {
        if index == proposer {
            continue;
        }
        let message = decode(proposal).try_into_protocol_message().unwrap();
        let processed = group.process_message(&device.provider, message).unwrap();
        let ProcessedMessageContent::ProposalMessage(queued) = processed.into_content() else {
            panic!("not a proposal");
        };
        group
            .store_pending_proposal(device.provider.storage(), *queued)
            .unwrap();
    }
}

/// A member sends an application message (always a PrivateMessage).
fn send(fixture: &mut GroupFixture, member: usize) -> Vec<u8> {
    let Member { device, group } = &mut fixture.members[member];
    let message = group
        .create_message(&device.provider, &device.signer, b"hello")
        .unwrap();
    bytes(&message)
}

/// The commit's GroupInfo, re-encoded with another signer index, other extensions or
/// another GroupInfo's signature (openmls offers no way to make such a GroupInfo, so
/// it is assembled from its parts: an MLSMessage header, then the GroupInfo).
fn rebuild_group_info(
    submitted: &Submitted,
    signer: u32,
    extensions: Option<Extensions<openmls::messages::group_info::GroupInfo>>,
    signature_of: Option<&[u8]>,
) -> Vec<u8> {
    let group_info = |bytes: &[u8]| match decode(bytes).extract() {
        MlsMessageBodyIn::GroupInfo(group_info) => group_info,
        _ => panic!("not a GroupInfo"),
    };
    let original = group_info(&submitted.group_info);
    let MlsMessageBodyIn::PublicMessage(commit) = decode(&submitted.commit).extract() else {
        panic!("not a PublicMessage");
    };
    let signature = match signature_of {
        Some(other) => group_info(other).signature().clone(),
        None => original.signature().clone(),
    };
    let rebuilt = VerifiableGroupInfo::new(
        original.group_context().clone(),
        extensions.unwrap_or_else(|| original.extensions().clone()),
        commit.confirmation_tag().unwrap().clone(),
        LeafNodeIndex::new(signer),
        signature,
    );
    // MLSMessage: version mls10 (1), wire format group_info (4).
    [
        &[0, 1, 0, 4][..],
        &rebuilt.tls_serialize_detached().unwrap(),
    ]
    .concat()
}

/// An MLSMessage carrying an application message as a PublicMessage, which openmls
/// never produces (RFC 9420 §6.2 forbids it), assembled field by field.
fn public_application_message(group_id: &[u8], epoch: u64) -> Vec<u8> {
    // RFC 9420 §2.1.2 variable-length vector, for lengths below 16384.
    fn vector(bytes: &[u8]) -> Vec<u8> {
        let length = bytes.len();
        let mut out = if length < 64 {
            vec![length as u8]
        } else {
            vec![0x40 | (length >> 8) as u8, length as u8]
        };
        out.extend_from_slice(bytes);
        out
    }
    let mut message = vec![0, 1, 0, 1]; // mls10, public_message
    message.extend(vector(group_id));
    message.extend(epoch.to_be_bytes());
    message.push(1); // sender type member...
    message.extend(0u32.to_be_bytes()); // ...in leaf 0
    message.extend(vector(&[])); // authenticated_data
    message.push(1); // content type application
    message.extend(vector(b"hello"));
    message.extend(vector(&[0; 64])); // signature
    message.extend(vector(&[0; 32])); // membership tag
    message
}
