//! Submissions the hub must refuse: each with the exact gRPC code, a message that
//! names the problem, and nothing changed (the group's epoch and log as ListGroups
//! reports them, and nothing new for any other device to fetch). Also idempotent
//! retries, and the request size limit.

use crate::groups_harness::{
    Change, Client, assert_in_sync, commit_conflict, form_group, start_with_clients, texts,
    welcomes,
};
use crate::harness::{KeyPackageBuilder, assert_refused, channel, new_signer};
use conclave_proto::client::v1 as proto;
use conclave_test_support::{DatabaseChoice, TestHomeserver, TestOptions};
use openmls::prelude::{GroupId, MlsGroup};
use tonic::Code;

on_both_databases!(
    handshakes_must_be_public_and_for_the_current_epoch,
    commits_come_from_members_and_add_registered_claimed_devices,
    welcomes_travel_only_with_the_adds_they_welcome,
    garbage_and_unknown_groups_are_refused,
    idempotency_keys_make_retries_safe,
    replayed_messages_are_refused,
    oversize_requests_are_refused,
    proposals_per_epoch_are_bounded,
    groups_are_bounded_in_size,
);

/// Asserts that a refusal changed nothing: `owner` (a synced member) lists the
/// group exactly as before, and none of `others` (synced devices) has anything new
/// to fetch, no Welcome included.
async fn assert_unchanged(owner: &Client, before: &proto::GroupSummary, others: &[&Client]) {
    assert_eq!(
        &owner.summary().await,
        before,
        "the refusal changed the group"
    );
    owner.assert_nothing_new().await;
    for other in others {
        other.assert_nothing_new().await;
    }
}

async fn handshakes_must_be_public_and_for_the_current_epoch(database: DatabaseChoice) {
    let (_server, _, [mut alice, mut bob, mut carol]) =
        start_with_clients(database, ["alice", "bob", "carol"]).await;
    form_group(&mut alice, &mut [&mut bob, &mut carol]).await;
    let before = alice.summary().await;

    // Handshakes the hub cannot read.
    bob.encrypt_handshakes(true);
    let commit = bob.stage(Change::SelfUpdate);
    let request = bob.commit_request(&commit);
    assert_refused(
        "an encrypted commit",
        bob.try_submit_commit(request).await,
        Code::InvalidArgument,
        "commit must be sent as a PublicMessage, not as a PrivateMessage",
    );
    bob.discard();
    let proposal = bob.propose_self_update();
    let request = bob.proposal_request(proposal);
    assert_refused(
        "an encrypted proposal",
        bob.try_submit_proposal(request).await,
        Code::InvalidArgument,
        "proposal must be sent as a PublicMessage, not as a PrivateMessage",
    );
    bob.forget_proposals();
    bob.encrypt_handshakes(false);
    assert_unchanged(&alice, &before, &[&bob, &carol]).await;

    // A commit for an epoch another commit ended.
    let stale = bob.stage(Change::SelfUpdate);
    let won = alice.commit(Change::SelfUpdate).await;
    alice.sync().await;
    carol.sync().await;
    let before = alice.summary().await;
    let request = bob.commit_request(&stale);
    let status = assert_refused(
        "a commit of an ended epoch",
        bob.try_submit_commit(request).await,
        Code::Aborted,
        "commit is for epoch 1 but the group is at epoch 2",
    );
    let conflict = commit_conflict(&status);
    assert_eq!(
        (conflict.current_epoch, conflict.winning_commit_seq),
        (2, won.seq)
    );
    assert_unchanged(&alice, &before, &[&carol]).await;
    bob.discard();
    bob.sync().await;
    assert_in_sync(&[&alice, &bob, &carol]).await;

    // A commit for an epoch the group has not reached: Bob merges a commit the hub
    // never saw and commits on top of it.
    bob.stage(Change::SelfUpdate);
    bob.merge();
    let ahead = bob.stage(Change::SelfUpdate);
    let request = bob.commit_request(&ahead);
    assert_refused(
        "a commit of a future epoch",
        bob.try_submit_commit(request).await,
        Code::FailedPrecondition,
        "message is for epoch 3 but the group is only at epoch 2",
    );
    assert_unchanged(&alice, &before, &[&carol]).await;
}

/// Mallory's own group under `group_id`, advanced to `epoch`: her commits to it are
/// well formed and validly signed, but she is no member of the hub's group.
fn impostor_group(mallory: &mut Client, group_id: &[u8], epoch: u64) {
    let group = MlsGroup::new_with_group_id(
        &mallory.provider,
        &mallory.device.signer,
        &crate::groups_harness::create_config(),
        GroupId::from_slice(group_id),
        mallory.credential_with_key(),
    )
    .expect("openmls creates the impostor group");
    mallory.group = Some(group);
    while mallory.epoch() < epoch {
        mallory.stage(Change::SelfUpdate);
        mallory.merge();
    }
}

async fn commits_come_from_members_and_add_registered_claimed_devices(database: DatabaseChoice) {
    let (_server, _, [mut alice, mut bob, mut erin, mut mallory]) =
        start_with_clients(database, ["alice", "bob", "erin", "mallory"]).await;
    let group_id = form_group(&mut alice, &mut [&mut bob]).await;
    let before = alice.summary().await;

    // A validly signed commit by somebody who is not a member.
    impostor_group(&mut mallory, &group_id, before.epoch);
    let impostor = mallory.stage(Change::SelfUpdate);
    let request = mallory.commit_request(&impostor);
    assert_refused(
        "a non-member's commit",
        mallory.try_submit_commit(request).await,
        Code::PermissionDenied,
        &format!(
            "commit is sent by {} but the caller is {}",
            alice.identity(),
            mallory.identity()
        ),
    );
    // A member's genuine commit, submitted by somebody else.
    let genuine = alice.stage(Change::SelfUpdate);
    let mut request = alice.commit_request(&genuine);
    request.idempotency_key = mallory.new_key();
    assert_refused(
        "a member's commit submitted by another device",
        mallory.try_submit_commit(request).await,
        Code::PermissionDenied,
        &format!("but the caller is {}", mallory.identity()),
    );
    alice.discard();
    assert_unchanged(&alice, &before, &[&bob, &erin, &mallory]).await;

    // Adds the directory did not hand out.
    let stranger_key = new_signer();
    let unregistered_identity = "erin@localhost/00000000000000ff";
    let rows = [
        (
            "an unregistered device",
            KeyPackageBuilder::new(&erin.device)
                .identity(unregistered_identity)
                .signer(&stranger_key)
                .build(),
            format!("{unregistered_identity} is not a registered device with this signature key"),
        ),
        (
            "a registered device with another key",
            KeyPackageBuilder::new(&erin.device)
                .signer(&stranger_key)
                .build(),
            format!(
                "{} is not a registered device with this signature key",
                erin.identity()
            ),
        ),
        (
            "a package that was never claimed",
            erin.fresh_key_package(),
            format!(
                "the key package added for {} was not claimed through the directory",
                erin.identity()
            ),
        ),
    ];
    for (case, key_package, fragment) in rows {
        let key_package = crate::groups_harness::key_package(&key_package);
        let add = alice.stage(Change::Add(vec![key_package]));
        let request = alice.commit_request(&add);
        assert_refused(
            case,
            alice.try_submit_commit(request).await,
            Code::FailedPrecondition,
            &fragment,
        );
        alice.discard();
        assert_unchanged(&alice, &before, &[&bob, &erin]).await;
    }

    // Through the directory, Erin is added and welcomed once.
    let added = alice.invite(&["erin@localhost"]).await;
    let events = erin.fetch(0).await;
    assert_eq!(events.len(), 1);
    assert_eq!(welcomes(&events)[0].commit_seq, added.seq);
    erin.sync().await;
    bob.sync().await;
    assert_in_sync(&[&alice, &bob, &erin]).await;
}

async fn welcomes_travel_only_with_the_adds_they_welcome(database: DatabaseChoice) {
    let (_server, _, [mut alice, mut bob, mut erin]) =
        start_with_clients(database, ["alice", "bob", "erin"]).await;
    form_group(&mut alice, &mut [&mut bob]).await;
    let before = alice.summary().await;
    let claimed = alice.claim(&["erin@localhost"]).await;
    let other_claim = alice.claim(&["erin@localhost"]).await;

    let other_add = alice.stage(Change::Add(other_claim));
    alice.discard();
    let add = alice.stage(Change::Add(claimed.clone()));
    let cases = [
        (
            "an Add without its Welcome",
            None,
            "the commit adds 1 members but no welcome was submitted",
        ),
        (
            "an Add with garbage for its Welcome",
            Some(b"garbage".to_vec()),
            "welcome is invalid: it is not a valid MLSMessage",
        ),
        (
            "an Add with the Welcome of another Add",
            other_add.welcome.clone(),
            "the welcome is addressed to 1 key packages that are not exactly the 1 key packages the commit adds",
        ),
    ];
    for (case, welcome, fragment) in cases {
        let mut request = alice.commit_request(&add);
        request.welcome = welcome;
        assert_refused(
            case,
            alice.try_submit_commit(request).await,
            Code::InvalidArgument,
            fragment,
        );
    }
    alice.discard();

    let update = alice.stage(Change::SelfUpdate);
    let mut request = alice.commit_request(&update);
    request.welcome = add.welcome.clone();
    assert_refused(
        "a Welcome with a commit that adds nobody",
        alice.try_submit_commit(request).await,
        Code::InvalidArgument,
        "a welcome was submitted but the commit adds no members",
    );
    alice.discard();

    // A Welcome cannot travel without a commit at all.
    let mut request = alice.commit_request(&add);
    request.commit = Vec::new();
    assert_refused(
        "a Welcome alone",
        alice.try_submit_commit(request).await,
        Code::InvalidArgument,
        "commit is required",
    );
    // No Welcome reached any inbox: Erin has nothing to fetch.
    assert_unchanged(&alice, &before, &[&bob, &erin]).await;

    // Once its commit is accepted, the Welcome reaches Erin, once.
    let added = alice.commit(Change::Add(claimed)).await;
    let events = erin.fetch(0).await;
    assert_eq!(events.len(), 1);
    assert_eq!(welcomes(&events)[0].commit_seq, added.seq);
    erin.sync().await;
    bob.sync().await;
    assert_in_sync(&[&alice, &bob, &erin]).await;
}

async fn garbage_and_unknown_groups_are_refused(database: DatabaseChoice) {
    let (_server, _, [mut alice, mut bob, mut erin]) =
        start_with_clients(database, ["alice", "bob", "erin"]).await;
    let group_id = form_group(&mut alice, &mut [&mut bob]).await;
    let before = alice.summary().await;
    let garbage = b"garbage".to_vec();

    // Unknown groups, with otherwise valid requests.
    let unknown = b"no such group".to_vec();
    let not_found = format!("group {} does not exist", hex::encode(&unknown));
    assert_refused(
        "GetGroupInfo",
        alice.try_group_info(&unknown).await,
        Code::NotFound,
        &not_found,
    );
    let commit = alice.stage(Change::SelfUpdate);
    let mut request = alice.commit_request(&commit);
    request.group_id = unknown.clone();
    assert_refused(
        "SubmitCommit",
        alice.try_submit_commit(request).await,
        Code::NotFound,
        &not_found,
    );
    alice.discard();
    let proposal = alice.propose_self_update();
    let mut request = alice.proposal_request(proposal);
    alice.forget_proposals();
    request.group_id = unknown.clone();
    assert_refused(
        "SubmitProposal",
        alice.try_submit_proposal(request).await,
        Code::NotFound,
        &not_found,
    );
    let message = alice.encrypt(b"lost");
    let mut request = alice.message_request(message);
    request.group_id = unknown.clone();
    assert_refused(
        "SendMessage",
        alice.try_send_message(request).await,
        Code::NotFound,
        &not_found,
    );

    // Garbage and empty bytes in each field of each submission.
    let create = erin.new_group();
    let create_cases = [
        (
            "CreateGroup.group_info garbage",
            proto::CreateGroupRequest {
                group_info: garbage.clone(),
                ..create.clone()
            },
            "group creation is invalid: the group info is not a valid MLSMessage",
        ),
        (
            "CreateGroup.group_info empty",
            proto::CreateGroupRequest {
                group_info: Vec::new(),
                ..create.clone()
            },
            "the group info is not a valid MLSMessage: it is empty",
        ),
        (
            "CreateGroup.ratchet_tree garbage",
            proto::CreateGroupRequest {
                ratchet_tree: garbage.clone(),
                ..create.clone()
            },
            "group creation is invalid: the ratchet tree does not decode",
        ),
        (
            "CreateGroup.ratchet_tree empty",
            proto::CreateGroupRequest {
                ratchet_tree: Vec::new(),
                ..create.clone()
            },
            "group creation is invalid: the ratchet tree is empty",
        ),
    ];
    for (index, (case, mut request, fragment)) in create_cases.into_iter().enumerate() {
        request.idempotency_key = format!("create-{index}").into_bytes();
        assert_refused(
            case,
            erin.try_create_group(request).await,
            Code::InvalidArgument,
            fragment,
        );
    }
    assert!(erin.try_list_groups().await.unwrap().is_empty());

    let update = alice.stage(Change::SelfUpdate);
    let valid = alice.commit_request(&update);
    let commit_cases = [
        (
            "commit garbage",
            proto::SubmitCommitRequest {
                commit: garbage.clone(),
                ..valid.clone()
            },
            "commit is not a valid MLSMessage",
        ),
        (
            "commit empty",
            proto::SubmitCommitRequest {
                commit: Vec::new(),
                ..valid.clone()
            },
            "commit is required",
        ),
        (
            "group_info garbage",
            proto::SubmitCommitRequest {
                group_info: garbage.clone(),
                ..valid.clone()
            },
            "group info is invalid: it is not a valid MLSMessage",
        ),
        (
            "group_info empty",
            proto::SubmitCommitRequest {
                group_info: Vec::new(),
                ..valid.clone()
            },
            "group_info is required",
        ),
        (
            "group_id empty",
            proto::SubmitCommitRequest {
                group_id: Vec::new(),
                ..valid.clone()
            },
            "group_id is required",
        ),
        (
            "welcome garbage",
            proto::SubmitCommitRequest {
                welcome: Some(garbage.clone()),
                ..valid.clone()
            },
            "a welcome was submitted but the commit adds no members",
        ),
        (
            "a proposal as the commit",
            proto::SubmitCommitRequest {
                commit: bob.propose_self_update(),
                ..valid.clone()
            },
            "the message submitted as a commit carries a proposal",
        ),
    ];
    bob.forget_proposals();
    for (index, (case, mut request, fragment)) in commit_cases.into_iter().enumerate() {
        request.idempotency_key = format!("commit-{index}").into_bytes();
        assert_refused(
            case,
            alice.try_submit_commit(request).await,
            Code::InvalidArgument,
            fragment,
        );
    }
    alice.discard();

    let proposal = bob.propose_self_update();
    bob.forget_proposals();
    let valid = bob.proposal_request(proposal);
    let proposal_cases = [
        (
            "proposal garbage",
            proto::SubmitProposalRequest {
                proposal: garbage.clone(),
                ..valid.clone()
            },
            "proposal is not a valid MLSMessage",
        ),
        (
            "proposal empty",
            proto::SubmitProposalRequest {
                proposal: Vec::new(),
                ..valid.clone()
            },
            "proposal is required",
        ),
        (
            "group_id empty",
            proto::SubmitProposalRequest {
                group_id: Vec::new(),
                ..valid.clone()
            },
            "group_id is required",
        ),
    ];
    for (index, (case, mut request, fragment)) in proposal_cases.into_iter().enumerate() {
        request.idempotency_key = format!("proposal-{index}").into_bytes();
        assert_refused(
            case,
            bob.try_submit_proposal(request).await,
            Code::InvalidArgument,
            fragment,
        );
    }

    let message = bob.encrypt(b"never sent");
    let valid = bob.message_request(message);
    let message_cases = [
        (
            "message garbage",
            proto::SendMessageRequest {
                message: garbage.clone(),
                ..valid.clone()
            },
            "application message is not a valid MLSMessage",
        ),
        (
            "message empty",
            proto::SendMessageRequest {
                message: Vec::new(),
                ..valid.clone()
            },
            "message is required",
        ),
        (
            "group_id empty",
            proto::SendMessageRequest {
                group_id: Vec::new(),
                ..valid.clone()
            },
            "group_id is required",
        ),
        (
            "a commit as the message",
            proto::SendMessageRequest {
                message: update.commit.clone(),
                ..valid.clone()
            },
            "application message must be sent as a PrivateMessage, not as a PublicMessage",
        ),
    ];
    for (index, (case, mut request, fragment)) in message_cases.into_iter().enumerate() {
        request.idempotency_key = format!("message-{index}").into_bytes();
        assert_refused(
            case,
            bob.try_send_message(request).await,
            Code::InvalidArgument,
            fragment,
        );
    }
    assert_refused(
        "GetGroupInfo with an empty group id",
        alice.try_group_info(&[]).await,
        Code::InvalidArgument,
        "group_id is required",
    );
    assert_unchanged(&alice, &before, &[&bob, &erin]).await;

    // The group still works.
    bob.send("after all that").await;
    assert_eq!(texts(&alice.sync().await), ["after all that"]);
    assert_eq!(alice.group_id(), group_id);
}

/// The same MLS message bytes enter a group's log once: a member cannot resubmit
/// another's ciphertext as its own, nor a device its own message under a new
/// idempotency key (issue 10, finding 5); the original key still returns the
/// original result.
async fn replayed_messages_are_refused(database: DatabaseChoice) {
    let (_server, _, [mut alice, mut bob, mut carol]) =
        start_with_clients(database, ["alice", "bob", "carol"]).await;
    form_group(&mut alice, &mut [&mut bob, &mut carol]).await;

    let message = alice.encrypt(b"only once");
    let original = alice.message_request(message.clone());
    let sent = alice
        .try_send_message(original.clone())
        .await
        .expect("sent");
    assert_eq!(texts(&bob.sync().await), ["only once"]);
    carol.sync().await;
    alice.sync().await;
    let before = alice.summary().await;
    let replayed = format!(
        "this message is already in the group's log at sequence number {}",
        sent.seq
    );

    // Bob replays Alice's ciphertext under his own, new idempotency key.
    let request = bob.message_request(message.clone());
    assert_refused(
        "another member's message replayed",
        bob.try_send_message(request).await,
        Code::AlreadyExists,
        &replayed,
    );
    assert_unchanged(&alice, &before, &[&bob, &carol]).await;

    // Alice resubmits her own message under a new key.
    let request = alice.message_request(message);
    assert_refused(
        "an own message under a new key",
        alice.try_send_message(request).await,
        Code::AlreadyExists,
        &replayed,
    );
    assert_unchanged(&alice, &before, &[&bob, &carol]).await;

    // Her retry with the original key still gets the original result.
    let again = alice.try_send_message(original).await.expect("retried");
    assert_eq!(again, sent);
    assert_unchanged(&alice, &before, &[&bob, &carol]).await;

    // A proposal is accepted once in its epoch, too: the proposer under a new
    // key gets ALREADY_EXISTS; another member cannot submit it at all.
    let proposal = bob.propose_self_update();
    let request = bob.proposal_request(proposal.clone());
    let proposed = bob.try_submit_proposal(request).await.expect("proposed");
    alice.sync().await;
    bob.sync().await;
    carol.sync().await;
    let before = alice.summary().await;
    let request = bob.proposal_request(proposal.clone());
    assert_refused(
        "an own proposal under a new key",
        bob.try_submit_proposal(request).await,
        Code::AlreadyExists,
        &format!(
            "this message is already in the group's log at sequence number {}",
            proposed.seq
        ),
    );
    let request = carol.proposal_request(proposal);
    assert_refused(
        "another member's proposal replayed",
        carol.try_submit_proposal(request).await,
        Code::PermissionDenied,
        "but the caller is",
    );
    assert_unchanged(&alice, &before, &[&bob, &carol]).await;
    alice.commit(Change::PendingProposals).await;
    bob.sync().await;
    carol.sync().await;
    assert_in_sync(&[&alice, &bob, &carol]).await;
}

async fn idempotency_keys_make_retries_safe(database: DatabaseChoice) {
    let (_server, _, [mut alice, mut bob, mut erin]) =
        start_with_clients(database, ["alice", "bob", "erin"]).await;
    form_group(&mut alice, &mut [&mut bob]).await;

    // A message, retried with its key, lands once.
    let message = alice.encrypt(b"once");
    let request = alice.message_request(message);
    let first = alice.try_send_message(request.clone()).await.expect("sent");
    let again = alice
        .try_send_message(request.clone())
        .await
        .expect("retried");
    assert_eq!(again, first);
    assert_eq!(alice.summary().await.last_seq, first.seq);
    assert_eq!(texts(&bob.sync().await), ["once"]);
    let other = proto::SendMessageRequest {
        message: alice.encrypt(b"twice"),
        ..request.clone()
    };
    assert_refused(
        "a message under a used key",
        alice.try_send_message(other).await,
        Code::InvalidArgument,
        "idempotency_key was already used for a different request",
    );
    assert_eq!(alice.summary().await.last_seq, first.seq);
    bob.assert_nothing_new().await;

    // A commit, retried after it was accepted (and after the group moved on),
    // returns where it landed and is not applied again.
    let commit = alice.stage(Change::SelfUpdate);
    let request = alice.commit_request(&commit);
    let accepted = alice
        .try_submit_commit(request.clone())
        .await
        .expect("accepted");
    alice.merge();
    bob.sync().await;
    alice.send("moving on").await;
    let before = alice.summary().await;
    let again = alice
        .try_submit_commit(request.clone())
        .await
        .expect("retried");
    assert_eq!(again, accepted);
    let changed = proto::SubmitCommitRequest {
        group_info: b"another body".to_vec(),
        ..request
    };
    assert_refused(
        "a commit under a used key",
        alice.try_submit_commit(changed).await,
        Code::InvalidArgument,
        "idempotency_key was already used for a different request",
    );
    assert_eq!(alice.summary().await, before);
    assert_eq!(texts(&bob.sync().await), ["moving on"]);

    // A proposal, likewise.
    let proposal = bob.propose_self_update();
    let request = bob.proposal_request(proposal);
    let proposed = bob
        .try_submit_proposal(request.clone())
        .await
        .expect("proposed");
    let again = bob.try_submit_proposal(request).await.expect("retried");
    assert_eq!(again, proposed);
    assert_eq!(alice.summary().await.last_seq, proposed.seq);
    alice.sync().await;
    assert_eq!(alice.log.last().map(|event| event.seq), Some(proposed.seq));
    alice.assert_nothing_new().await;
    // openmls sends no application message while a proposal is pending.
    alice.commit(Change::PendingProposals).await;
    bob.sync().await;

    // A group creation, likewise.
    let create = erin.new_group();
    let created = erin
        .try_create_group(create.clone())
        .await
        .expect("created");
    let again = erin.try_create_group(create).await.expect("retried");
    assert_eq!(again, created);
    assert_eq!(erin.try_list_groups().await.unwrap().len(), 1);

    // Keys are 1 to 64 bytes.
    let before = alice.summary().await;
    for length in [0, 65] {
        let message = alice.encrypt(b"bad key");
        let mut request = alice.message_request(message);
        request.idempotency_key = vec![7; length];
        assert_refused(
            "a key of the wrong length",
            alice.try_send_message(request).await,
            Code::InvalidArgument,
            &format!("idempotency_key must be 1 to 64 bytes, got {length}"),
        );
    }
    assert_eq!(alice.summary().await, before);
    let message = alice.encrypt(b"longest key");
    let mut request = alice.message_request(message);
    request.idempotency_key = vec![7; 64];
    let longest = alice
        .try_send_message(request.clone())
        .await
        .expect("a 64-byte key");
    assert_eq!(longest.seq, before.last_seq + 1);

    // Keys belong to a device: Bob's use of the same key is a new submission.
    let message = bob.encrypt(b"same key, other device");
    let request = proto::SendMessageRequest { message, ..request };
    let bobs = bob.try_send_message(request).await.expect("bob's message");
    assert_eq!(bobs.seq, longest.seq + 1);
    assert_eq!(texts(&alice.sync().await), ["same key, other device"]);
}

/// The request size limit of the oversize test: small, so the test sends little.
const MAX_MESSAGE_BYTES: usize = 64 * 1024;

async fn oversize_requests_are_refused(database: DatabaseChoice) {
    let server = TestHomeserver::start_with(
        TestOptions::on(database)
            .configure(|config| config.client_api.max_message_bytes = MAX_MESSAGE_BYTES),
    )
    .await;
    let channel = channel(&server).await;
    let mut alice = Client::register(&channel, "alice").await;
    let mut bob = Client::register(&channel, "bob").await;
    form_group(&mut alice, &mut [&mut bob]).await;
    let before = alice.summary().await;

    let request = alice.message_request(vec![0; MAX_MESSAGE_BYTES]);
    assert_refused(
        "a message over the limit",
        alice.try_send_message(request).await,
        Code::ResourceExhausted,
        &format!("request message is larger than the limit of {MAX_MESSAGE_BYTES} bytes"),
    );
    assert_unchanged(&alice, &before, &[&bob]).await;

    // A large message within the limit goes through.
    let text = "x".repeat(MAX_MESSAGE_BYTES - 4096);
    alice.send(&text).await;
    assert_eq!(texts(&bob.sync().await), [text]);
}

/// The hub keeps proposals in the group's state until a commit covers them, so it
/// takes at most 100 per epoch (counted from the commit that began the epoch).
async fn proposals_per_epoch_are_bounded(database: DatabaseChoice) {
    let (_server, _, [mut alice, mut bob]) = start_with_clients(database, ["alice", "bob"]).await;
    form_group(&mut alice, &mut [&mut bob]).await;
    for _ in 0..100 {
        let proposal = bob.propose_self_update();
        let request = bob.proposal_request(proposal);
        bob.try_submit_proposal(request).await.expect("proposed");
    }
    alice.sync().await;
    let before = alice.summary().await;
    let proposal = bob.propose_self_update();
    let request = bob.proposal_request(proposal);
    assert_refused(
        "the 101st proposal of an epoch",
        bob.try_submit_proposal(request).await,
        Code::ResourceExhausted,
        "the group already has 100 proposals waiting for a commit in this epoch",
    );
    assert_unchanged(&alice, &before, &[]).await;
}

/// A group holds at most `groups.max_members` devices, counted in the tree as
/// the commit would leave it: an Add past the limit is refused, and the room a
/// Remove makes, a blank leaf in the middle of the tree, can be filled again.
async fn groups_are_bounded_in_size(database: DatabaseChoice) {
    let server = TestHomeserver::start_with(
        TestOptions::on(database).configure(|config| config.groups.max_members = 3),
    )
    .await;
    let channel = channel(&server).await;
    let mut alice = Client::register(&channel, "alice").await;
    let mut bob = Client::register(&channel, "bob").await;
    let mut carol = Client::register(&channel, "carol").await;
    let mut dave = Client::register(&channel, "dave").await;
    form_group(&mut alice, &mut [&mut bob, &mut carol]).await;
    let before = alice.summary().await;

    let dave_user = dave.device.user_id.clone();
    let key_packages = alice.claim(&[dave_user.as_str()]).await;
    assert_refused(
        "an Add past the limit",
        alice.try_commit(Change::Add(key_packages)).await,
        Code::ResourceExhausted,
        "the group would have 4 members, more than the limit of 3",
    );
    assert_unchanged(&alice, &before, &[&bob, &carol, &dave]).await;

    // Bob's leaf is between alice's and carol's: removed, it stays a blank
    // leaf, which is no member.
    let bob_leaf = alice.leaf_of(bob.identity());
    assert!(bob_leaf.u32() < alice.leaf_of(carol.identity()).u32());
    alice.commit(Change::Remove(vec![bob_leaf])).await;
    alice.invite(&[dave_user.as_str()]).await;
    dave.sync().await;
    assert!(dave.group.is_some(), "dave joined in the room bob left");
    assert_eq!(alice.summary().await.member_count, 3);
}
