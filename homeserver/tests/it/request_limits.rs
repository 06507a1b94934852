//! Bounded requests: every repeated field of a request has a documented
//! maximum, and one entry more is refused with INVALID_ARGUMENT naming the field
//! and the limit, before any work, changing nothing. (The upload limit is in
//! `key_package_input`; DeliverEvents' limits are `rules::follower_batch`'s.)

use crate::groups_harness::{form_group, start_with_clients};
use crate::harness::{assert_status, login_request, new_signer, register_request};
use conclave_proto::client::v1 as proto;
use conclave_test_support::DatabaseChoice;
use tonic::Code;

on_both_databases!(
    acks_are_bounded_and_the_limit_itself_works,
    long_input_gets_a_short_precise_error,
);

/// The size of the hostile values: far more than a `grpc-message` header holds.
const LONG: usize = 100 * 1024;
/// Longer than any refusal below may be.
const SHORT: usize = 600;

/// `AckRequest.groups`' documented maximum.
const MAX_ACK_GROUPS: usize = 1000;

async fn acks_are_bounded_and_the_limit_itself_works(database: DatabaseChoice) {
    let (_server, _, [mut alice, mut bob]) = start_with_clients(database, ["alice", "bob"]).await;
    let group_id = form_group(&mut alice, &mut [&mut bob]).await;
    alice.send("one").await;
    let acks = |count: usize| proto::AckRequest {
        groups: vec![
            proto::GroupAck {
                group_id: group_id.clone(),
                seq: 2,
            };
            count
        ],
        inbox_seq: 0,
    };

    let result = bob.try_ack(acks(MAX_ACK_GROUPS + 1)).await;
    assert_status(
        result,
        Code::InvalidArgument,
        "groups has 1001 entries, more than the limit of 1000",
    );
    let unread = bob.fetch(0).await;
    assert_eq!(unread.len(), 1, "the refused ack moved no cursor");

    bob.try_ack(acks(MAX_ACK_GROUPS))
        .await
        .expect("an ack at the limit");
    assert!(
        bob.fetch(0).await.is_empty(),
        "the ack at the limit applied"
    );
}

async fn long_input_gets_a_short_precise_error(database: DatabaseChoice) {
    let (_server, _, [mut alice, mut bob]) = start_with_clients(database, ["alice", "bob"]).await;
    form_group(&mut alice, &mut [&mut bob]).await;
    let short = |status: tonic::Status| {
        assert!(
            status.message().len() < SHORT,
            "a {}-byte message",
            status.message().len()
        );
        status
    };

    let username = "a".repeat(LONG);
    let result = alice
        .api
        .try_register(register_request(&username, &new_signer()))
        .await;
    let status = short(assert_status(
        result,
        Code::InvalidArgument,
        "is invalid: use 1 to 32 lowercase letters",
    ));
    assert!(
        status
            .message()
            .contains(&format!("\"{}…\"", "a".repeat(64)))
    );

    let result = alice.api.try_claim(&alice.device.token, &username).await;
    short(assert_status(
        result,
        Code::InvalidArgument,
        "is invalid: expected name@domain",
    ));

    let ack = proto::AckRequest {
        groups: vec![proto::GroupAck {
            group_id: vec![0xab; LONG],
            seq: 1,
        }],
        inbox_seq: 0,
    };
    let status = short(assert_status(
        bob.try_ack(ack).await,
        Code::NotFound,
        "does not exist",
    ));
    assert!(
        status
            .message()
            .contains(&format!("group {}…", "ab".repeat(32)))
    );

    let ciphertext = alice.encrypt(b"hello");
    let mut message = alice.message_request(ciphertext);
    message.group_id = vec![0xcd; LONG];
    short(assert_status(
        alice.try_send_message(message).await,
        Code::NotFound,
        "does not exist",
    ));

    // Secrets are never echoed: not a wrong password, not a token.
    let password = "a-wrong-password-that-must-not-be-shown";
    let mut login = login_request("alice", &new_signer());
    login.password = password.to_owned();
    let status = assert_status(
        alice.api.try_login(login).await,
        Code::Unauthenticated,
        "wrong username or password",
    );
    assert!(!status.message().contains(password));
    let token = "a-token-that-must-not-be-shown";
    let status = assert_status(
        alice.api.who_am_i(token).await,
        Code::Unauthenticated,
        "invalid or was revoked",
    );
    assert!(!status.message().contains(token));
}
