//! `conclave.client.v1` requests as the homeserver judges them, short of the
//! database: each function mirrors its use case's checks in order (see
//! `service/`), against the fixture group and a fixture member as the caller.

use super::fixture::{Fixture, with_fixture};
use super::split_selector;
use crate::config::Config;
use crate::grpc::{StatusParts, ToStatusParts as _, missing_field};
use crate::rules::account::{AccountRuleError, check_device, check_password, parse_login_name};
use crate::rules::delivery::check_ack;
use crate::rules::enrolment::{PossessionProof, PossessionRefusal, check_possession};
use crate::rules::hub::{
    CommitSubmission, HubGroup, PastEpochWindow, check_application_message, check_group_size,
    check_proposal_room, plan_commit,
};
use crate::rules::ids::{GroupId, Seq};
use crate::rules::key_package_claim::{Reach, route_device_claim};
use crate::rules::key_package_upload::{not_after_ms, upload_policy, verify_upload};
use crate::rules::limits::{MAX_ACK_GROUPS, check_count};
use crate::rules::registration::admit;
use crate::service::accounts::AccountError;
use crate::service::delivery::DeliveryError;
use crate::service::groups::GroupError;
use crate::service::idempotency::Submission;
use crate::service::key_packages::{ClaimError, UploadError};
use conclave_core::ids::{CredentialIdentity, DeviceId, UserId, Username};
use conclave_core::key_package::ExpectedOwner;
use conclave_proto::client::v1 as proto;
use prost::Message;

/// How far a fuzzed request got: `Ok` if it passed every check made without
/// the database, else the status the caller would receive.
pub(super) type Judged = Result<(), StatusParts>;

/// A client request: the first byte chooses the RPC and the calling member,
/// the rest is the request message as prost decodes it from the wire.
pub fn client_request(data: &[u8]) {
    with_fixture(|fixture| {
        let _ = judge_client_request(fixture, data);
    });
}

pub(super) fn judge_client_request(fixture: &Fixture, data: &[u8]) -> Judged {
    let Some((selector, message)) = split_selector(data) else {
        return Ok(());
    };
    let config = Config::default();
    let caller = fixture.caller(selector / CLIENT_RPCS);
    match selector % CLIENT_RPCS {
        0 => register(fixture, &config, &decode(message)?),
        1 => login(fixture, decode(message)?),
        2 => upload(fixture, &config, caller, decode(message)?),
        3 => claim(fixture, decode(message)?),
        4 => create_group(caller, decode(message)?),
        5 => submit_commit(fixture, &config, caller, decode(message)?),
        6 => submit_proposal(fixture, caller, decode(message)?),
        7 => send_message(fixture, &config, caller, decode(message)?),
        8 => get_group_info(fixture, decode(message)?),
        9 => ack(fixture, decode(message)?),
        _ => remove_device(decode(message)?),
    }
}

/// How many RPCs [`client_request`] chooses among.
const CLIENT_RPCS: u8 = 11;

/// A key-package upload by a fixture member (chosen by the first byte), whose
/// credential and signature key the packages must carry.
pub fn key_package_upload(data: &[u8]) {
    with_fixture(|fixture| {
        let _ = judge_key_package_upload(fixture, data);
    });
}

pub(super) fn judge_key_package_upload(fixture: &Fixture, data: &[u8]) -> Judged {
    let Some((selector, message)) = split_selector(data) else {
        return Ok(());
    };
    let caller = fixture.caller(selector);
    upload(fixture, &Config::default(), caller, decode(message)?)
}

/// A handshake or message for the fixture group: the first byte chooses what
/// (commit, proposal, application message, a new group) and the calling
/// member; the rest is the request that carries it.
pub fn hub_handshake(data: &[u8]) {
    with_fixture(|fixture| {
        let _ = judge_hub_handshake(fixture, data);
    });
}

pub(super) fn judge_hub_handshake(fixture: &Fixture, data: &[u8]) -> Judged {
    let Some((selector, message)) = split_selector(data) else {
        return Ok(());
    };
    let config = Config::default();
    let caller = fixture.caller(selector / HUB_INPUTS);
    match selector % HUB_INPUTS {
        0 => submit_commit(fixture, &config, caller, decode(message)?),
        1 => submit_proposal(fixture, caller, decode(message)?),
        2 => send_message(fixture, &config, caller, decode(message)?),
        _ => create_group(caller, decode(message)?),
    }
}

/// How many kinds of input [`hub_handshake`] chooses among.
const HUB_INPUTS: u8 = 4;

/// The request message, or the status tonic answers for bytes that are not one.
pub(super) fn decode<M: Message + Default>(message: &[u8]) -> Result<M, StatusParts> {
    M::decode(message).map_err(|error| StatusParts::undecodable(&error))
}

fn register(fixture: &Fixture, config: &Config, request: &proto::RegisterRequest) -> Judged {
    let device = request
        .device
        .as_ref()
        .ok_or_else(|| missing_field("device").status_parts())?;
    let checks = || -> Result<(), AccountError> {
        let username: Username = request.username.parse().map_err(AccountRuleError::from)?;
        check_password(&request.password)?;
        check_device(&device.signature_public_key, &device.display_name)?;
        admit(config.registration.policy, &request.registration_token)?;
        check_proof(fixture, &username, device)?;
        Ok(())
    };
    checks().map_err(|error| error.status_parts())
}

fn login(fixture: &Fixture, request: proto::LoginRequest) -> Judged {
    let device = request
        .device
        .ok_or_else(|| missing_field("device").status_parts())?;
    let checks = || -> Result<(), AccountError> {
        let username = parse_login_name(&request.username, &fixture.own_domain)?;
        check_device(&device.signature_public_key, &device.display_name)?;
        check_proof(fixture, &username, &device)?;
        Ok(())
    };
    checks().map_err(|error| error.status_parts())
}

/// The proof of possession, as Register and Login check it before the database
/// says whether its challenge was used.
fn check_proof(
    fixture: &Fixture,
    username: &Username,
    device: &proto::DeviceEnrolment,
) -> Result<(), PossessionRefusal> {
    let proof = PossessionProof {
        challenge: &device.challenge,
        signature: &device.possession_signature,
        signature_public_key: &device.signature_public_key,
        display_name: &device.display_name,
    };
    let key = &fixture.challenge_key;
    check_possession(key, fixture.now_ms, &fixture.own_domain, username, proof)?;
    Ok(())
}

fn upload(
    fixture: &Fixture,
    config: &Config,
    caller: &CredentialIdentity,
    request: proto::UploadKeyPackagesRequest,
) -> Judged {
    let signature_public_key = fixture
        .members
        .iter()
        .find(|member| &member.identity == caller)
        .map(|member| member.signature_key.as_slice())
        .unwrap_or_default();
    let owner = ExpectedOwner {
        identity: caller,
        signature_public_key,
    };
    let settings = &config.key_packages;
    let upload = verify_upload(
        &request.key_packages,
        request.last_resort_key_package.as_deref(),
        &owner,
        &upload_policy(fixture.now_ms, settings.max_lifetime_days),
        settings.max_per_upload,
    )
    .map_err(|rejection| UploadError::from(rejection).status_parts())?;
    // What the store is given for each package.
    for package in upload.ordinary.iter().chain(&upload.last_resort) {
        not_after_ms(package.not_after_unix_seconds);
    }
    upload.hash_refs();
    Ok(())
}

fn claim(fixture: &Fixture, request: proto::ClaimKeyPackagesRequest) -> Judged {
    if request.user_id.is_empty() {
        return Err(missing_field("user_id").status_parts());
    }
    let checks = || -> Result<(), ClaimError> {
        let user_id: UserId = request.user_id.parse()?;
        conclave_core::mls::CipherSuite::from_wire(request.cipher_suite)?;
        route_device_claim::<()>(&user_id, &fixture.own_domain, Reach::FederationOff)?;
        Ok(())
    };
    checks().map_err(|error| error.status_parts())
}

fn create_group(caller: &CredentialIdentity, request: proto::CreateGroupRequest) -> Judged {
    let checks = || -> Result<(), GroupError> {
        let identity = caller.to_string();
        Submission::new(
            &identity,
            &request.idempotency_key,
            "create",
            &[&request.group_info, &request.ratchet_tree],
        )?;
        let hub_group = HubGroup::create(&request.group_info, &request.ratchet_tree, caller)?;
        // What the service stores for the new group.
        GroupId::new(hub_group.group_id());
        hub_group.to_state();
        Ok(())
    };
    checks().map_err(|error| error.status_parts())
}

/// The commit as `service::groups::submit_commit` judges it, then applied to a
/// copy of the group as an accepted one is.
pub(super) fn submit_commit(
    fixture: &Fixture,
    config: &Config,
    caller: &CredentialIdentity,
    request: proto::SubmitCommitRequest,
) -> Judged {
    let checks = || -> Result<(), GroupError> {
        if request.commit.is_empty() {
            return Err(GroupError::MissingField("commit"));
        }
        if request.group_info.is_empty() {
            return Err(GroupError::MissingField("group_info"));
        }
        let identity = caller.to_string();
        let welcome = request.welcome.as_deref().unwrap_or_default();
        Submission::new(
            &identity,
            &request.idempotency_key,
            "commit",
            &[
                &request.group_id,
                &request.commit,
                &[u8::from(request.welcome.is_some())],
                welcome,
                &request.group_info,
            ],
        )?;
        if !fixture.is_the_group(&request.group_id) {
            return Err(GroupError::UnknownGroup(GroupId::new(request.group_id)));
        }
        let decision = fixture.hub.check_commit(&CommitSubmission {
            sender: caller,
            commit: &request.commit,
            welcome: request.welcome.as_deref(),
            group_info: &request.group_info,
        })?;
        check_group_size(
            fixture.hub.member_count(),
            &decision,
            config.groups.max_members,
        )?;
        plan_commit(
            &decision,
            caller,
            &fixture.own_domain,
            request.welcome.is_some(),
        );
        let mut hub_group = fixture.fresh_copy();
        hub_group.apply_commit(decision)?;
        hub_group.to_state();
        hub_group.ratchet_tree();
        Ok(())
    };
    checks().map_err(|error| error.status_parts())
}

/// The proposal as `service::groups::submit_proposal` judges it, kept in a copy
/// of the group.
pub(super) fn submit_proposal(
    fixture: &Fixture,
    caller: &CredentialIdentity,
    request: proto::SubmitProposalRequest,
) -> Judged {
    let checks = || -> Result<(), GroupError> {
        if request.proposal.is_empty() {
            return Err(GroupError::MissingField("proposal"));
        }
        let identity = caller.to_string();
        Submission::new(
            &identity,
            &request.idempotency_key,
            "proposal",
            &[&request.group_id, &request.proposal],
        )?;
        if !fixture.is_the_group(&request.group_id) {
            return Err(GroupError::UnknownGroup(GroupId::new(request.group_id)));
        }
        check_proposal_room(0)?;
        let mut hub_group = fixture.fresh_copy();
        hub_group.add_proposal(caller, &request.proposal)?;
        hub_group.to_state();
        Ok(())
    };
    checks().map_err(|error| error.status_parts())
}

/// The message as `service::groups::send_message` judges it (every fixture
/// member is a current member).
pub(super) fn send_message(
    fixture: &Fixture,
    config: &Config,
    caller: &CredentialIdentity,
    request: proto::SendMessageRequest,
) -> Judged {
    let checks = || -> Result<(), GroupError> {
        if request.message.is_empty() {
            return Err(GroupError::MissingField("message"));
        }
        if request.group_id.is_empty() {
            return Err(GroupError::MissingField("group_id"));
        }
        let identity = caller.to_string();
        Submission::new(
            &identity,
            &request.idempotency_key,
            "message",
            &[&request.group_id, &request.message],
        )?;
        if !fixture.is_the_group(&request.group_id) {
            return Err(GroupError::UnknownGroup(GroupId::new(request.group_id)));
        }
        check_application_message(
            &request.message,
            &request.group_id,
            fixture.hub.epoch(),
            PastEpochWindow(config.groups.past_epoch_window),
        )?;
        Ok(())
    };
    checks().map_err(|error| error.status_parts())
}

fn get_group_info(fixture: &Fixture, request: proto::GetGroupInfoRequest) -> Judged {
    if !fixture.is_the_group(&request.group_id) {
        let unknown = GroupError::UnknownGroup(GroupId::new(request.group_id));
        return Err(unknown.status_parts());
    }
    fixture.hub.group_info();
    fixture.hub.ratchet_tree();
    Ok(())
}

/// Acknowledgements, against a log of the fixture group that ends at
/// [`FIXTURE_LOG_END`] and an empty inbox.
fn ack(fixture: &Fixture, request: proto::AckRequest) -> Judged {
    check_count("groups", request.groups.len(), MAX_ACK_GROUPS)
        .map_err(|refusal| refusal.status_parts())?;
    let checks = || -> Result<(), DeliveryError> {
        for group_ack in request.groups {
            if !fixture.is_the_group(&group_ack.group_id) {
                return Err(DeliveryError::UnknownGroup(GroupId::new(
                    group_ack.group_id,
                )));
            }
            let seq = Seq::new(group_ack.seq);
            check_ack("group sequence number", seq, Seq::new(FIXTURE_LOG_END))?;
        }
        let inbox_seq = Seq::new(request.inbox_seq);
        if inbox_seq > Seq::ZERO {
            check_ack("inbox sequence number", inbox_seq, Seq::ZERO)?;
        }
        Ok(())
    };
    checks().map_err(|error| error.status_parts())
}

/// Where the fixture group's log ends: its creation and one commit.
const FIXTURE_LOG_END: u64 = 2;

fn remove_device(request: proto::RemoveDeviceRequest) -> Judged {
    if request.device_id.is_empty() {
        return Err(missing_field("device_id").status_parts());
    }
    let _: DeviceId = request
        .device_id
        .parse()
        .map_err(|_| AccountError::UnknownDevice(request.device_id.clone()).status_parts())?;
    Ok(())
}
