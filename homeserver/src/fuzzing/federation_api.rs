//! `conclave.federation.v1` requests as the homeserver judges them, short of the
//! database and of the peer gate (whether the connection's certificate speaks
//! for the named domain: `conclave_federation::identity`, tested there): each
//! mirrors `grpc/federation.rs` and the use case it calls, in order.

use super::client_api::{Judged, decode, send_message, submit_commit, submit_proposal};
use super::fixture::{Fixture, with_fixture};
use super::split_selector;
use crate::config::Config;
use crate::grpc::{StatusParts, ToStatusParts as _, invalid_argument, missing_field};
use crate::rules::credential_check::check_credential_query;
use crate::rules::follower_batch::InvalidBatch;
use crate::rules::ids::GroupId;
use crate::rules::key_package_claim::check_peer_claim;
use crate::service::follower::{FollowerError, check_wire_batch};
use crate::service::groups::GroupError;
use crate::service::key_packages::ClaimError;
use crate::service::outbox::FetchEventsError;
use crate::service::verify_credential::CredentialCheckError;
use conclave_core::ids::{CredentialIdentity, Domain, IdError, UserId};
use conclave_proto::client::v1 as client_proto;
use conclave_proto::federation::v1 as proto;
use proto::submit_to_hub_request::Submission as Relayed;
use std::str::FromStr;

/// A peer's request: the first byte chooses the RPC, the rest is the request
/// message as prost decodes it from the wire.
pub fn federation_request(data: &[u8]) {
    with_fixture(|fixture| {
        let _ = judge_federation_request(fixture, data);
    });
}

pub(super) fn judge_federation_request(fixture: &Fixture, data: &[u8]) -> Judged {
    let Some((selector, message)) = split_selector(data) else {
        return Ok(());
    };
    let config = Config::default();
    match selector % FEDERATION_RPCS {
        0 => claim_key_packages(fixture, decode(message)?),
        1 => verify_credential(fixture, decode(message)?),
        2 => submit_to_hub(fixture, &config, decode(message)?),
        3 => deliver_events(fixture, decode(message)?),
        4 => fetch_events(fixture, decode(message)?),
        5 => fetch_group_info(fixture, decode(message)?),
        _ => get_server_info(decode(message)?),
    }
}

/// How many RPCs [`federation_request`] chooses among.
const FEDERATION_RPCS: u8 = 7;

/// GetServerInfo reads nothing but the naming field (and the clock).
fn get_server_info(request: proto::GetServerInfoRequest) -> Judged {
    let _: Domain = naming_field("asking_domain", &request.asking_domain)?;
    Ok(())
}

/// A hub's batch of a group's events (`DeliverEvents`) as a follower of the
/// fixture's domain checks it.
pub fn follower_batch(data: &[u8]) {
    with_fixture(|fixture| {
        let _ = judge_follower_batch(fixture, data);
    });
}

pub(super) fn judge_follower_batch(fixture: &Fixture, data: &[u8]) -> Judged {
    deliver_events(fixture, decode(data)?)
}

/// The field naming the domain a request is made for, as
/// `grpc::federation::parse_naming_field` parses it.
fn naming_field<T: FromStr<Err = IdError>>(field: &str, value: &str) -> Result<T, StatusParts> {
    if value.is_empty() {
        return Err(missing_field(field).status_parts());
    }
    value
        .parse()
        .map_err(|error| invalid_argument(format!("{field}: {error}")).status_parts())
}

fn claim_key_packages(fixture: &Fixture, request: proto::ClaimKeyPackagesRequest) -> Judged {
    let _: CredentialIdentity = naming_field("requester", &request.requester)?;
    if request.user_id.is_empty() {
        return Err(missing_field("user_id").status_parts());
    }
    let checks = || -> Result<(), ClaimError> {
        let user_id: UserId = request.user_id.parse()?;
        conclave_core::mls::CipherSuite::from_wire(request.cipher_suite)?;
        check_peer_claim(&user_id, &fixture.own_domain)?;
        Ok(())
    };
    checks().map_err(|error| error.status_parts())
}

fn verify_credential(fixture: &Fixture, request: proto::VerifyCredentialRequest) -> Judged {
    let _: Domain = naming_field("asking_domain", &request.asking_domain)?;
    if request.credential_identity.is_empty() {
        return Err(missing_field("credential_identity").status_parts());
    }
    let checks = || -> Result<(), CredentialCheckError> {
        let identity: CredentialIdentity = request.credential_identity.parse()?;
        check_credential_query(
            &identity,
            &request.signature_public_key,
            &fixture.own_domain,
        )?;
        Ok(())
    };
    checks().map_err(|error| error.status_parts())
}

/// A follower relays its device's submission: judged as the same submission
/// from one of this homeserver's devices, with the relayed sender as caller.
fn submit_to_hub(fixture: &Fixture, config: &Config, request: proto::SubmitToHubRequest) -> Judged {
    let sender: CredentialIdentity = naming_field("sender", &request.sender)?;
    let Some(submission) = request.submission else {
        return Err(missing_field("submission").status_parts());
    };
    let (idempotency_key, group_id) = (request.idempotency_key, request.group_id);
    match submission {
        Relayed::Commit(bundle) => submit_commit(
            fixture,
            config,
            &sender,
            client_proto::SubmitCommitRequest {
                idempotency_key,
                group_id,
                commit: bundle.commit,
                welcome: bundle.welcome,
                group_info: bundle.group_info,
            },
        ),
        Relayed::Proposal(proposal) => submit_proposal(
            fixture,
            &sender,
            client_proto::SubmitProposalRequest {
                idempotency_key,
                group_id,
                proposal,
            },
        ),
        Relayed::ApplicationMessage(message) => send_message(
            fixture,
            config,
            &sender,
            client_proto::SendMessageRequest {
                idempotency_key,
                group_id,
                message,
            },
        ),
    }
}

/// A batch for a follower whose own domain is the fixture's.
fn deliver_events(fixture: &Fixture, request: proto::DeliverEventsRequest) -> Judged {
    let _: Domain = naming_field("hub_domain", &request.hub_domain)?;
    if request.group_id.is_empty() {
        return Err(missing_field("group_id").status_parts());
    }
    let checks = || -> Result<(), FollowerError> {
        let group = GroupId::new(request.group_id.clone());
        check_wire_batch(&fixture.own_domain, &group, request.events)?;
        let member_count = request.member_count;
        if i64::try_from(member_count).is_err() {
            return Err(
                InvalidBatch(format!("member_count {member_count} is out of range")).into(),
            );
        }
        Ok(())
    };
    checks().map_err(|error| error.status_parts())
}

fn fetch_events(fixture: &Fixture, request: proto::FetchEventsRequest) -> Judged {
    let _: Domain = naming_field("follower_domain", &request.follower_domain)?;
    if !fixture.is_the_group(&request.group_id) {
        let unknown = FetchEventsError::UnknownGroup(GroupId::new(request.group_id));
        return Err(unknown.status_parts());
    }
    Ok(())
}

fn fetch_group_info(fixture: &Fixture, request: proto::FetchGroupInfoRequest) -> Judged {
    let _: CredentialIdentity = naming_field("requester", &request.requester)?;
    if !fixture.is_the_group(&request.group_id) {
        let unknown = GroupError::UnknownGroup(GroupId::new(request.group_id));
        return Err(unknown.status_parts());
    }
    fixture.hub.group_info();
    fixture.hub.ratchet_tree();
    Ok(())
}
