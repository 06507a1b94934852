//! Conformance with `docs/protocol.md`: a foreign client
//! ([`crate::conformance_client`], built from the specification and the
//! `.proto` files alone, on openmls) follows the specification step by step
//! next to client-library users, and every documented rejection it provokes
//! must come back with the code and message the specification's error table
//! ("Errors") gives for it. The table is read from the document itself, so a
//! change of the server that the document does not follow (or the other way
//! round) fails here.
//!
//! - In [`a_foreign_client_follows_the_specification`], the foreign client
//!   registers, publishes key packages (and has the malformed ones refused), is
//!   invited by a client-library user, joins, exchanges messages both ways,
//!   reads a Fetch page that ends at a commit, loses a commit race and wins the
//!   next epoch, adds another client-library user, is removed and reads
//!   nothing more.
//! - In [`a_group_made_by_a_foreign_client_serves_the_client_library`], it
//!   creates a group, invites a client-library user, chats (with envelopes of
//!   newer clients too) and removes them.
//! - [`the_error_table_is_well_formed`] checks that every row of the table
//!   parses, and names a code and a message fragment.

use std::collections::HashSet;

use conclave_client::{GroupId, GroupStatus};
use conclave_core::ids::UserId;
use conclave_proto::client::v1 as proto;
use conclave_proto::client::v1::delivery_event::Event;
use conclave_test_support::{DatabaseChoice, TestNetwork};
use openmls::prelude::tls_codec::Deserialize as _;
use openmls::prelude::{ContentType, MlsMessageIn};
use tonic::{Code, Status};

use crate::conformance_client::{Change, ForeignClient, KeyPackageShape};
use crate::harness::User;

on_both_databases!(
    a_foreign_client_follows_the_specification,
    a_group_made_by_a_foreign_client_serves_the_client_library,
);

/// The specification, as the repository holds it.
const PROTOCOL_MD: &str = include_str!("../../../docs/protocol.md");

/// One row of the specification's error table.
#[derive(Debug)]
struct Documented {
    id: String,
    code: Code,
    /// Text the status message contains.
    fragment: String,
}

/// The rows of the table under the heading "Errors": `| \`id\` | RPCs | CODE |
/// \`fragment\` |`.
fn error_table() -> Vec<Documented> {
    let section = PROTOCOL_MD
        .split("\n## ")
        .find(|section| section.starts_with("Errors"))
        .expect("docs/protocol.md has a section \"Errors\"");
    section
        .lines()
        .filter(|line| line.starts_with("| `"))
        .map(|line| {
            let cells: Vec<&str> = line.trim_matches('|').split(" | ").map(str::trim).collect();
            let [id, _rpcs, code, fragment] = cells.as_slice() else {
                panic!("an error row has four cells: {line}");
            };
            Documented {
                id: id.trim_matches('`').to_owned(),
                code: code_named(code).unwrap_or_else(|| panic!("unknown code {code} in {line}")),
                fragment: fragment.trim_matches('`').to_owned(),
            }
        })
        .collect()
}

fn code_named(name: &str) -> Option<Code> {
    Some(match name {
        "INVALID_ARGUMENT" => Code::InvalidArgument,
        "UNAUTHENTICATED" => Code::Unauthenticated,
        "NOT_FOUND" => Code::NotFound,
        "PERMISSION_DENIED" => Code::PermissionDenied,
        "FAILED_PRECONDITION" => Code::FailedPrecondition,
        "ABORTED" => Code::Aborted,
        "RESOURCE_EXHAUSTED" => Code::ResourceExhausted,
        "ALREADY_EXISTS" => Code::AlreadyExists,
        "UNAVAILABLE" => Code::Unavailable,
        "DEADLINE_EXCEEDED" => Code::DeadlineExceeded,
        "OUT_OF_RANGE" => Code::OutOfRange,
        "INTERNAL" => Code::Internal,
        _ => return None,
    })
}

/// The call was refused as the error table's row `id` says.
#[track_caller]
fn assert_documented<T: std::fmt::Debug>(id: &str, result: Result<T, Status>) -> Status {
    let table = error_table();
    let row = table
        .iter()
        .find(|row| row.id == id)
        .unwrap_or_else(|| panic!("docs/protocol.md's error table has no row `{id}`"));
    let status = match result {
        Err(status) => status,
        Ok(answer) => panic!("`{id}`: expected {:?}, got {answer:?}", row.code),
    };
    assert_eq!(status.code(), row.code, "`{id}`: {status:?}");
    assert!(
        status.message().contains(&row.fragment),
        "`{id}`: {:?} does not contain the documented {:?}",
        status.message(),
        row.fragment
    );
    status
}

#[test]
fn the_error_table_is_well_formed() {
    let table = error_table();
    assert!(table.len() >= 20, "the table has {} rows", table.len());
    let mut ids = HashSet::new();
    for row in &table {
        assert!(ids.insert(row.id.as_str()), "`{}` twice", row.id);
        assert!(!row.fragment.is_empty(), "`{}` has no message", row.id);
    }
}

/// The content type of a delivered group event's MLSMessage.
fn content_type(event: &proto::GroupEvent) -> ContentType {
    MlsMessageIn::tls_deserialize_exact(&event.message)
        .expect("an MLSMessage")
        .try_into_protocol_message()
        .expect("a PublicMessage or PrivateMessage")
        .content_type()
}

/// The group events of a page, with their group.
fn group_events(page: &[proto::DeliveryEvent]) -> Vec<&proto::GroupEvent> {
    page.iter()
        .filter_map(|event| match &event.event {
            Some(Event::GroupEvent(group_event)) => Some(group_event),
            _ => None,
        })
        .collect()
}

/// "Key packages": the documented refusals of malformed uploads, then a
/// valid upload of ordinary packages and a last-resort one.
async fn publish_key_packages(fox: &ForeignClient) {
    assert_documented("upload-empty", fox.upload(Vec::new(), None).await);

    // An MLSMessage wrapping the package (version mls10, wire format
    // mls_key_package) instead of the bare KeyPackage.
    let wrapped = [
        &[0x00, 0x01, 0x00, 0x05][..],
        &fox.key_package(KeyPackageShape::ORDINARY),
    ]
    .concat();
    assert_documented(
        "upload-not-a-key-package",
        fox.upload(vec![wrapped], None).await,
    );

    let no_capability = fox.key_package(KeyPackageShape {
        last_resort: false,
        lists_group_metadata: false,
    });
    assert_documented(
        "upload-missing-capability",
        fox.upload(vec![no_capability], None).await,
    );

    let unmarked = fox.key_package(KeyPackageShape::ORDINARY);
    assert_documented(
        "upload-not-last-resort",
        fox.upload(Vec::new(), Some(unmarked)).await,
    );

    let another_device = fox.key_package_as(
        KeyPackageShape::ORDINARY,
        openmls::prelude::CredentialWithKey {
            credential: openmls::prelude::BasicCredential::new(
                format!("{}/ffffffffffffffff", fox.user_id).into_bytes(),
            )
            .into(),
            signature_key: fox.signature_public_key().into(),
        },
    );
    assert_documented(
        "upload-wrong-device",
        fox.upload(vec![another_device], None).await,
    );

    // Nothing of the refused uploads was stored.
    let stock = fox.stock().await;
    assert_eq!((stock.available, stock.has_last_resort), (0, false));

    let ordinary: Vec<Vec<u8>> = (0..3)
        .map(|_| fox.key_package(KeyPackageShape::ORDINARY))
        .collect();
    let last_resort = fox.key_package(KeyPackageShape::LAST_RESORT);
    let stock = fox
        .upload(ordinary.clone(), Some(last_resort))
        .await
        .expect("a valid upload");
    assert_eq!((stock.available, stock.has_last_resort), (3, true));
    assert!(stock.earliest_expiry.is_some());
    assert_documented(
        "upload-duplicate",
        fox.upload(vec![ordinary[0].clone()], None).await,
    );
}

async fn a_foreign_client_follows_the_specification(database: DatabaseChoice) {
    let network = TestNetwork::start(&["a.example"], database).await;
    let url = network.client_url("a.example");

    // "Accounts and devices", then "Key packages".
    let mut fox = ForeignClient::register(&url, "fox").await;
    publish_key_packages(&fox).await;
    let alice = User::register(&network, "alice@a.example").await;
    let bob = User::register(&network, "bob@a.example").await;
    let fox_user: UserId = fox.user_id.parse().expect("a user id");

    // "Transport and authentication".
    let unauthenticated = proto::FetchRequest { limit: 0 };
    assert_documented(
        "unauthenticated",
        fox.delivery_api()
            .fetch(tonic::Request::new(unauthenticated))
            .await,
    );
    assert_documented("claim-unknown-user", fox.claim("nobody@a.example").await);

    // "Welcome": a client-library user invites the foreign client, which joins
    // from its inbox with the ratchet tree beside the Welcome.
    let group_id = alice.create_group("spec").await;
    alice
        .client
        .invite(&group_id, std::slice::from_ref(&fox_user))
        .await
        .expect("alice invites fox");
    let gid = group_id.as_bytes().to_vec();
    fox.receive().await;
    assert_eq!(fox.epoch(&gid), 1);
    assert_eq!(fox.group_name(&gid).as_deref(), Some("spec"));
    assert_eq!(fox.stock().await.available, 2, "one package was claimed");

    // "Application messages", both ways.
    let sent_by_alice = alice.send(&group_id, "hello fox").await;
    fox.receive().await;
    let received = fox.received.last().expect("alice's message").clone();
    assert_eq!(received.seq, sent_by_alice.seq);
    assert_eq!(received.mls_sender, alice.identity().to_string());
    assert_eq!(
        received.server_sender,
        (
            alice.user_id().to_string(),
            alice.identity().device_id().to_string()
        )
    );
    assert_eq!(received.envelope["v"], 1);
    assert_eq!(received.envelope["type"], "text");
    assert_eq!(received.envelope["body"], "hello fox");
    let sent = fox
        .send_text(&gid, "hello alice")
        .await
        .expect("SendMessage");
    alice.receive().await;
    let history = alice.history(&group_id);
    assert_eq!(
        history.last(),
        Some(&(
            sent.seq,
            fox.identity.parse().expect("an identity"),
            "hello alice".to_owned()
        )),
        "the client library reads the foreign envelope"
    );

    // "Idempotency".
    let message = fox.encrypt(&gid, &ForeignClient::text_envelope("once"));
    let key = fox.new_key();
    let request = |key: &[u8], message: &[u8]| proto::SendMessageRequest {
        idempotency_key: key.to_vec(),
        group_id: gid.clone(),
        message: message.to_vec(),
    };
    let first = fox
        .send_message(request(&key, &message))
        .await
        .expect("sent");
    let retried = fox
        .send_message(request(&key, &message))
        .await
        .expect("retried");
    assert_eq!(first, retried, "a retry returns the first result");
    let other = fox.encrypt(&gid, &ForeignClient::text_envelope("other"));
    assert_documented(
        "idempotency-reused",
        fox.send_message(request(&key, &other)).await,
    );
    let new_key = fox.new_key();
    assert_documented(
        "message-replayed",
        fox.send_message(request(&new_key, &message)).await,
    );
    assert_documented(
        "idempotency-key-length",
        fox.send_message(request(b"", &other)).await,
    );
    let key = fox.new_key();
    assert_documented(
        "unknown-group",
        fox.send_message(proto::SendMessageRequest {
            idempotency_key: key,
            group_id: b"no such group".to_vec(),
            message: other.clone(),
        })
        .await,
    );
    alice.receive().await;

    // "Commits": the hub's refusals.
    let encrypted = fox.stage(&gid, Change::SelfUpdate, true);
    assert_documented("commit-private-message", fox.submit(&gid, &encrypted).await);
    // "Wire formats": the same through SendMessage, and a PublicMessage there.
    let key = fox.new_key();
    assert_documented(
        "commit-private-message",
        fox.send_message(request(&key, &encrypted.commit)).await,
    );
    fox.discard(&gid);
    let staged = fox.stage(&gid, Change::SelfUpdate, false);
    let without_group_info = proto::SubmitCommitRequest {
        idempotency_key: fox.new_key(),
        group_id: gid.clone(),
        commit: staged.commit.clone(),
        welcome: None,
        group_info: Vec::new(),
    };
    assert_documented(
        "commit-missing-field",
        fox.submit_request(without_group_info).await,
    );
    let key = fox.new_key();
    assert_documented(
        "message-not-private",
        fox.send_message(request(&key, &staged.commit)).await,
    );
    let with_welcome = proto::SubmitCommitRequest {
        idempotency_key: fox.new_key(),
        group_id: gid.clone(),
        commit: staged.commit.clone(),
        welcome: Some(b"not a welcome".to_vec()),
        group_info: staged.group_info.clone(),
    };
    assert_documented(
        "commit-unexpected-welcome",
        fox.submit_request(with_welcome).await,
    );
    fox.discard(&gid);
    let bob_packages = fox.claim(&bob.user_id().to_string()).await.expect("claim");
    let mut add = fox.stage(&gid, Change::Add(bob_packages), false);
    add.welcome = None;
    assert_documented("commit-missing-welcome", fox.submit(&gid, &add).await);
    fox.discard(&gid);

    // A lost race: the status details name the winning commit ("Commits").
    let losing = fox.stage(&gid, Change::SelfUpdate, false);
    let winner = alice.rotate(&group_id).await;
    let status = assert_documented("commit-lost-epoch", fox.submit(&gid, &losing).await);
    let conflict = crate::conformance_client::commit_conflict(&status);
    assert_eq!(conflict.current_epoch, winner.epoch);
    assert_eq!(conflict.winning_commit_seq, winner.seq);
    fox.discard(&gid);
    fox.receive().await;
    assert_eq!(fox.epoch(&gid), winner.epoch, "fox merged the winner");

    // The foreign client commits: it adds bob, whose client joins.
    let bob_packages = fox.claim(&bob.user_id().to_string()).await.expect("claim");
    let added = fox
        .commit(&gid, Change::Add(bob_packages))
        .await
        .expect("fox adds bob");
    bob.receive_until("the Welcome", |user| {
        user.epoch(&group_id) == Some(added.epoch)
    })
    .await;
    assert_eq!(bob.group(&group_id).name, "spec");
    alice.receive().await;
    crate::harness::assert_same_state(&[&alice, &bob], &group_id, 3);
    bob.send(&group_id, "hi all").await;
    fox.receive().await;
    assert_eq!(
        fox.received.last().expect("bob's").envelope["body"],
        "hi all"
    );

    // "Paging": a page ends at a group's first commit, and a Fetch without an
    // Ack serves the same page again.
    alice.send(&group_id, "before").await;
    let rotation = alice.rotate(&group_id).await;
    alice.send(&group_id, "after").await;
    let page = fox.fetch(0).await.expect("Fetch");
    let events = group_events(&page);
    let last = events.last().expect("group events");
    assert_eq!(last.seq, rotation.seq, "the page ends at the commit");
    assert_eq!(content_type(last), ContentType::Commit);
    assert!(events.iter().all(|event| event.seq <= rotation.seq));
    assert_eq!(
        fox.fetch(0).await.expect("Fetch"),
        page,
        "no Ack, same page"
    );
    assert_documented(
        "ack-beyond-end",
        fox.ack(proto::AckRequest {
            groups: vec![proto::GroupAck {
                group_id: gid.clone(),
                seq: 1_000_000,
            }],
            inbox_seq: 0,
        })
        .await,
    );
    let ack = fox.apply_page(page);
    fox.ack(ack).await.expect("Ack");
    let next = fox.fetch(0).await.expect("Fetch");
    assert!(
        group_events(&next)
            .iter()
            .any(|event| event.seq > rotation.seq),
        "after the Ack, the events past the commit"
    );
    fox.receive().await;
    let bodies: Vec<String> = fox
        .received
        .iter()
        .map(|received| {
            received.envelope["body"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert!(
        bodies.ends_with(&["before".to_owned(), "after".to_owned()]),
        "{bodies:?}"
    );
    assert_eq!(fox.epoch(&gid), rotation.epoch);

    // "Removal": the removing commit is the last event the device reads.
    alice
        .client
        .remove(&group_id, &fox_user)
        .await
        .expect("alice removes fox");
    fox.receive().await;
    assert_eq!(fox.removed_from, vec![gid.clone()]);
    alice.send(&group_id, "without fox").await;
    assert_eq!(fox.receive().await, 0, "nothing after the removal");
    let key = fox.new_key();
    assert_documented(
        "not-a-member",
        fox.send_message(proto::SendMessageRequest {
            idempotency_key: key,
            group_id: gid.clone(),
            message,
        })
        .await,
    );
    assert_documented("group-info-not-member", fox.group_info(&gid).await);
    bob.receive().await;
    crate::harness::assert_same_state(&[&alice, &bob], &group_id, 2);
}

async fn a_group_made_by_a_foreign_client_serves_the_client_library(database: DatabaseChoice) {
    let network = TestNetwork::start(&["a.example"], database).await;
    let mut fox = ForeignClient::register(&network.client_url("a.example"), "fox").await;
    let packages = (0..2)
        .map(|_| fox.key_package(KeyPackageShape::ORDINARY))
        .collect();
    fox.upload(packages, None).await.expect("upload");
    let alice = User::register(&network, "alice@a.example").await;

    // "Creating a group".
    let gid = fox.create_group("foreign made").await.expect("CreateGroup");
    let group_id = GroupId::from_bytes(gid.clone());
    let info = fox.group_info(&gid).await.expect("GetGroupInfo");
    assert_eq!(info.epoch, 0);

    let alice_packages = fox
        .claim(&alice.user_id().to_string())
        .await
        .expect("claim");
    fox.commit(&gid, Change::Add(alice_packages))
        .await
        .expect("fox adds alice");
    alice
        .receive_until("the Welcome", |user| user.epoch(&group_id) == Some(1))
        .await;
    assert_eq!(alice.group(&group_id).name, "foreign made");

    alice.send(&group_id, "hello from the library").await;
    fox.receive().await;
    let received = fox.received.last().expect("alice's message");
    assert_eq!(received.envelope["body"], "hello from the library");
    // The client library writes the sender's clock (docs/protocol.md, "Application messages").
    assert!(
        received.envelope["sent_at_ms"].as_u64().is_some(),
        "{}",
        received.envelope
    );
    let sent = fox
        .send_text(&gid, "hello from elsewhere")
        .await
        .expect("sent");
    alice.receive().await;
    let (seq, sender, text) = alice.history(&group_id).pop().expect("fox's message");
    assert_eq!(
        (seq, sender.to_string(), text.as_str()),
        (sent.seq, fox.identity.clone(), "hello from elsewhere")
    );

    // "Application messages": readers ignore fields they do not know, and
    // show a kind they do not know as unsupported.
    let newer = serde_json::json!({
        "v": 1, "type": "text", "body": "with more fields",
        "sent_at_ms": crate::conformance_client::now_ms(), "format": "markdown",
    });
    let unknown_kind = serde_json::json!({
        "v": 1, "type": "reaction", "emoji": "+1",
        "sent_at_ms": crate::conformance_client::now_ms(),
    });
    for envelope in [newer, unknown_kind] {
        let plaintext = serde_json::to_vec(&envelope).expect("JSON");
        fox.send_plaintext(&gid, &plaintext).await.expect("sent");
    }
    alice.receive().await;
    let shown: Vec<(String, Option<String>)> = alice
        .client
        .messages(&group_id, 2)
        .expect("alice's messages")
        .iter()
        .map(|message| {
            let text = message.body.text().map(str::to_owned);
            (message.body.kind().to_owned(), text)
        })
        .collect();
    assert_eq!(
        shown,
        [
            ("text".to_owned(), Some("with more fields".to_owned())),
            ("reaction".to_owned(), None),
        ]
    );

    // The hub's GroupInfo after a commit is the committer's, for the new epoch.
    let info = fox.group_info(&gid).await.expect("GetGroupInfo");
    assert_eq!(info.epoch, 1);

    let alice_leaf = fox.leaf_of(&gid, &alice.identity().to_string());
    fox.commit(&gid, Change::Remove(vec![alice_leaf]))
        .await
        .expect("fox removes alice");
    alice
        .receive_until("the removal", |user| {
            user.status(&group_id) == Some(GroupStatus::Removed)
        })
        .await;
}
