//! The one place where domain errors become gRPC statuses. Codes follow the gRPC
//! documentation; the message always says what was wrong. Server-side failures
//! are logged here and reported without internal detail.

use crate::rules::attempt_limits::AttemptRefusal;
use crate::rules::enrolment::PossessionRefusal;
use crate::rules::hub::HubRejection;
use crate::rules::key_package_upload::UploadRejection;
use crate::rules::limits::TooManyEntries;
use crate::service::InternalError;
use crate::service::accounts::AccountError;
use crate::service::admin::AdminError;
use crate::service::delivery::DeliveryError;
use crate::service::departures::AnnouncementError;
use crate::service::follower::FollowerError;
use crate::service::groups::GroupError;
use crate::service::key_packages::{ClaimError, UploadError};
use crate::service::outbox::FetchEventsError;
use crate::service::secrets::PasswordHashError;
use crate::service::verify_credential::CredentialCheckError;
use crate::store::StoreError;
use conclave_federation::client::{CallError, RefusalKind};
use conclave_federation::identity::PeerRefusal;
use prost::Message;
use std::time::Duration;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

impl From<AccountError> for Status {
    fn from(error: AccountError) -> Status {
        let code = match &error {
            AccountError::Invalid(_) => Code::InvalidArgument,
            // A stale challenge: the request is right but needs a new one.
            AccountError::Possession(
                PossessionRefusal::Expired { .. } | PossessionRefusal::AlreadyUsed,
            ) => Code::FailedPrecondition,
            AccountError::Possession(_) => Code::InvalidArgument,
            AccountError::UsernameTaken(_) | AccountError::SignatureKeyTaken => Code::AlreadyExists,
            AccountError::RegistrationRefused(_) => Code::PermissionDenied,
            AccountError::WrongCredentials
            | AccountError::MissingToken
            | AccountError::InvalidToken
            | AccountError::AccountSuspended
            | AccountError::AccountDeactivated => Code::Unauthenticated,
            AccountError::UnknownDevice(_) => Code::NotFound,
            AccountError::TooManyAttempts(refusal) => return too_many_attempts(refusal),
            AccountError::PasswordHash(hashing) => return password_hash_status(hashing),
            AccountError::Store(store) => return store_status(store),
        };
        status(code, error.to_string())
    }
}

/// The admin API's errors (`conclave.admin.v1`, whose codes session.proto
/// lists): a login limit's refusal as the client API's, with its RetryInfo.
impl From<AdminError> for Status {
    fn from(error: AdminError) -> Status {
        let code = match &error {
            AdminError::Invalid(_) => Code::InvalidArgument,
            AdminError::NotFound(_) => Code::NotFound,
            AdminError::FailedPrecondition(_) => Code::FailedPrecondition,
            AdminError::Unauthenticated(_) => Code::Unauthenticated,
            AdminError::PermissionDenied(_) => Code::PermissionDenied,
            AdminError::TooManyAttempts(refusal) => return too_many_attempts(refusal),
            AdminError::PasswordHash(hashing) => return password_hash_status(hashing),
            AdminError::Store(store) => return store_status(store),
            AdminError::Internal(_) => {
                tracing::error!(%error, "admin request failed on the server side");
                return server_fault();
            }
        };
        status(code, error.to_string())
    }
}

impl From<UploadError> for Status {
    fn from(error: UploadError) -> Status {
        let code = match &error {
            UploadError::Rejected(UploadRejection::Duplicate(_)) => Code::AlreadyExists,
            UploadError::Rejected(_) => Code::InvalidArgument,
            UploadError::Store(store) => return store_status(store),
        };
        status(code, error.to_string())
    }
}

impl From<ClaimError> for Status {
    fn from(error: ClaimError) -> Status {
        let code = match &error {
            ClaimError::InvalidUserId(_) | ClaimError::UnknownSuite(_) => Code::InvalidArgument,
            ClaimError::UnknownUser(_) => Code::NotFound,
            ClaimError::Refused(_)
            | ClaimError::SuiteRefused(_)
            | ClaimError::NoPackageInSuite { .. }
            | ClaimError::PeerSuiteMismatch { .. } => Code::FailedPrecondition,
            ClaimError::RateLimited { .. } => Code::ResourceExhausted,
            ClaimError::Remote(remote) => return remote_status(remote),
            ClaimError::Store(store) => return store_status(store),
        };
        status(code, error.to_string())
    }
}

/// A repeated field over its documented limit: the request's shape is wrong.
impl From<TooManyEntries> for Status {
    fn from(error: TooManyEntries) -> Status {
        status(Code::InvalidArgument, error.to_string())
    }
}

impl From<StoreError> for Status {
    fn from(error: StoreError) -> Status {
        store_status(&error)
    }
}

/// A call to a peer failed: the status the calling device gets.
fn remote_status(error: &CallError) -> Status {
    let code = match error {
        CallError::UnknownPeer(_) => Code::FailedPrecondition,
        CallError::Unavailable { .. } => Code::Unavailable,
        CallError::Refused { kind, .. } => match kind {
            RefusalKind::InvalidArgument => Code::InvalidArgument,
            RefusalKind::NotFound => Code::NotFound,
            RefusalKind::FailedPrecondition => Code::FailedPrecondition,
            RefusalKind::ResourceExhausted => Code::ResourceExhausted,
            // The peer does not accept this homeserver (certificate, pin, peer
            // list): its operators must act; a retry changes nothing.
            RefusalKind::PermissionDenied | RefusalKind::Unauthenticated => {
                Code::FailedPrecondition
            }
            RefusalKind::OutOfRange | RefusalKind::Other => Code::Unavailable,
        },
        // The peer broke the protocol; not the device's fault, nor ours, and
        // the message names the peer.
        CallError::InvalidResponse { .. } => Code::Internal,
        CallError::ForeignRequester { .. } => {
            tracing::error!(%error, "request failed on the server side");
            return Status::internal("internal error; the server's log has the details");
        }
    };
    status(code, error.to_string())
}

/// A peer's request refused before any use case ran: UNAUTHENTICATED without a
/// usable client certificate, PERMISSION_DENIED when the certificate does not
/// speak for the domain the request names.
pub(crate) fn peer_refusal(refusal: PeerRefusal) -> Status {
    let code = match &refusal {
        PeerRefusal::NoClientCertificate | PeerRefusal::UnreadableCertificate { .. } => {
            Code::Unauthenticated
        }
        PeerRefusal::NotValidForDomain { .. }
        | PeerRefusal::UnknownPeer { .. }
        | PeerRefusal::PinMismatch { .. } => Code::PermissionDenied,
        PeerRefusal::RateLimited { .. } => Code::ResourceExhausted,
    };
    status(code, refusal.to_string())
}

impl From<CredentialCheckError> for Status {
    fn from(error: CredentialCheckError) -> Status {
        let code = match &error {
            CredentialCheckError::InvalidIdentity(_) | CredentialCheckError::Rejected(_) => {
                Code::InvalidArgument
            }
            CredentialCheckError::Store(store) => return store_status(store),
        };
        status(code, error.to_string())
    }
}

fn internal_status(error: &InternalError) -> Status {
    match error {
        InternalError::Store(store) => store_status(store),
        InternalError::Corrupt(_) => {
            tracing::error!(%error, "request failed on the server side");
            server_fault()
        }
    }
}

fn store_status(error: &StoreError) -> Status {
    tracing::error!(%error, "request failed on the server side");
    match error {
        // Most database errors are passing (unreachable, failover, pool timeout):
        // UNAVAILABLE tells the client to retry the same call.
        StoreError::Database(_) => Status::unavailable("the database is unavailable; retry"),
        // A retry would read the same corrupt row. A schema too new is refused
        // at start; it can reach a request only if a newer release migrated
        // the database under a running replica.
        StoreError::Corrupt(_) | StoreError::SchemaTooNew { .. } => server_fault(),
    }
}

fn password_hash_status(error: &PasswordHashError) -> Status {
    // Overload passes: the same call may succeed later.
    if let PasswordHashError::Busy { .. } = error {
        tracing::warn!(%error, "password hashing is saturated");
        return Status::unavailable(error.to_string());
    }
    tracing::error!(%error, "request failed on the server side");
    server_fault()
}

/// RESOURCE_EXHAUSTED with a `google.rpc.RetryInfo` in the rich-error details:
/// the delay after which the same attempt would be let through.
fn too_many_attempts(refusal: &AttemptRefusal) -> Status {
    let details =
        ErrorDetails::with_retry_info(Some(Duration::from_millis(refusal.retry_after_ms)));
    Status::with_error_details(
        Code::ResourceExhausted,
        bounded_message(refusal.to_string()),
        details,
    )
}

/// INTERNAL, with no detail: the server's log has it.
fn server_fault() -> Status {
    Status::internal("internal error; the server's log has the details")
}

/// Longest status message sent, in characters. Messages say what was wrong and
/// echo input cut short at its source (`conclave_core::ids::echo`, `GroupId`'s
/// display); this bound catches everything else (a peer's refusal relayed, an
/// MLS library's error), so that no message outgrows the `grpc-message` header
/// (up to 3 bytes sent per byte, percent-encoded).
pub(crate) const MAX_STATUS_MESSAGE_CHARS: usize = 512;

/// `message`, cut to [`MAX_STATUS_MESSAGE_CHARS`] with an ellipsis if longer.
fn bounded_message(message: String) -> String {
    match message.char_indices().nth(MAX_STATUS_MESSAGE_CHARS) {
        Some((cut, _)) => format!("{}…", &message[..cut]),
        None => message,
    }
}

/// The status with `code` and `message`, the message bounded: every status the
/// homeserver makes is made here.
fn status(code: Code, message: String) -> Status {
    Status::new(code, bounded_message(message))
}

/// INVALID_ARGUMENT with a message made by the conversion layer.
pub(crate) fn invalid_argument(message: String) -> Status {
    status(Code::InvalidArgument, message)
}

/// A status reduced to what the fuzzing entry points (`crate::fuzzing`) look
/// at: the code (as its number) and the message. Making one runs the same
/// conversion a served request's error goes through, so the fuzzers cover it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StatusParts {
    pub(crate) code: i32,
    pub(crate) message: String,
}

impl StatusParts {
    /// What tonic answers for a request that does not decode as its message
    /// (INTERNAL, as the gRPC documentation prescribes for parse failures),
    /// before any handler runs.
    pub(crate) fn undecodable(error: &prost::DecodeError) -> StatusParts {
        Status::internal(error.to_string()).status_parts()
    }
}

/// Any error the gRPC layer turns into a status, as its [`StatusParts`].
pub(crate) trait ToStatusParts {
    fn status_parts(self) -> StatusParts;
}

impl<E> ToStatusParts for E
where
    Status: From<E>,
{
    fn status_parts(self) -> StatusParts {
        let status = Status::from(self);
        StatusParts {
            code: status.code() as i32,
            message: status.message().to_owned(),
        }
    }
}

/// A required message field was left unset.
pub(crate) fn missing_field(field: &str) -> Status {
    Status::invalid_argument(format!("{field} is required"))
}

/// DEADLINE_EXCEEDED: a call was not answered within `deadline`, the server's
/// own (`limits.call_deadline_seconds`) or the caller's shorter `grpc-timeout`.
pub(crate) fn deadline_exceeded(deadline: std::time::Duration) -> Status {
    status(
        Code::DeadlineExceeded,
        format!(
            "the call was not answered within its deadline of {} ms (limits.call_deadline_seconds, or the caller's shorter grpc-timeout)",
            deadline.as_millis()
        ),
    )
}

/// gRPC code OUT_OF_RANGE, as it appears in the `grpc-status` header.
const OUT_OF_RANGE: &str = "11";
/// gRPC code RESOURCE_EXHAUSTED.
const RESOURCE_EXHAUSTED: &str = "8";

/// tonic refuses a request larger than `max_decoding_message_size` with
/// OUT_OF_RANGE, but a size limit is RESOURCE_EXHAUSTED in gRPC's own vocabulary
/// (and in ours). The refusal happens before any handler runs, as a trailers-only
/// response, so the status is in the response headers; this rewrites it there.
/// Only tonic's size refusal is rewritten (recognised by its message): a
/// handler's own OUT_OF_RANGE (FetchEvents of pruned events) stays.
pub(crate) fn oversize_as_resource_exhausted(
    limit: usize,
) -> impl Fn(http::Response<tonic::body::Body>) -> http::Response<tonic::body::Body> + Clone {
    move |mut response| {
        let headers = response.headers_mut();
        let is_size_refusal = headers.get("grpc-message").is_some_and(|message| {
            String::from_utf8_lossy(message.as_bytes())
                .replace("%20", " ")
                .contains("message length too large")
        });
        if is_size_refusal
            && headers
                .get("grpc-status")
                .is_some_and(|status| status == OUT_OF_RANGE)
        {
            headers.insert(
                "grpc-status",
                http::HeaderValue::from_static(RESOURCE_EXHAUSTED),
            );
            let message = format!("request message is larger than the limit of {limit} bytes");
            if let Ok(value) = http::HeaderValue::from_str(&message) {
                headers.insert("grpc-message", value);
            }
        }
        response
    }
}

impl From<GroupError> for Status {
    fn from(error: GroupError) -> Status {
        let code = match &error {
            GroupError::Rejected(rejection) => hub_rejection_code(rejection),
            GroupError::Idempotency(_) | GroupError::MissingField(_) => Code::InvalidArgument,
            GroupError::UnknownGroup(_) => Code::NotFound,
            GroupError::GroupExists(_) | GroupError::Replayed { .. } => Code::AlreadyExists,
            GroupError::CommitConflict {
                current_epoch,
                winning_commit_seq,
                ..
            } => {
                return commit_conflict(&error, current_epoch.get(), winning_commit_seq.get());
            }
            GroupError::NotAMember(_) => Code::PermissionDenied,
            GroupError::UnregisteredDevice { .. } | GroupError::UnclaimedKeyPackage { .. } => {
                Code::FailedPrecondition
            }
            GroupError::ForeignDevice { .. }
            | GroupError::HubNotAPeer { .. }
            | GroupError::SuiteRefused(_) => Code::FailedPrecondition,
            GroupError::HubRateLimited { .. } => Code::ResourceExhausted,
            GroupError::RemoteCheckFailed { .. }
            | GroupError::HubUnavailable { .. }
            | GroupError::SubmissionInterrupted => Code::Unavailable,
            GroupError::RejectedByHub(rejected) => {
                let message = rejected.message.clone();
                return match &rejected.commit_conflict {
                    Some(conflict) => commit_conflict_status(
                        message,
                        conflict.current_epoch,
                        conflict.winning_commit_seq,
                    ),
                    None => status(Code::from_i32(rejected.code), message),
                };
            }
            GroupError::Store(store) => return store_status(store),
            GroupError::Internal(internal) => return internal_status(internal),
        };
        status(code, error.to_string())
    }
}

fn hub_rejection_code(rejection: &HubRejection) -> Code {
    match rejection {
        HubRejection::SenderNotCaller { .. }
        | HubRejection::NotAMember { .. }
        | HubRejection::NonMemberProposal { .. }
        | HubRejection::ExternalJoinNotAllowed(_) => Code::PermissionDenied,
        // A stale epoch is normally turned into ABORTED with the winning commit by
        // the service; these are the cases a retry on the same state cannot fix.
        HubRejection::FutureEpoch { .. }
        | HubRejection::StaleEpoch { .. }
        | HubRejection::EpochOutsideWindow { .. } => Code::FailedPrecondition,
        // The hub's own state disagreed with itself: not the client's fault.
        HubRejection::TooManyProposals { .. } | HubRejection::TooManyMembers { .. } => {
            Code::ResourceExhausted
        }
        HubRejection::DecisionMismatch(_) | HubRejection::Storage(_) => Code::Internal,
        HubRejection::MalformedMessage { .. }
        | HubRejection::NotPublicMessage { .. }
        | HubRejection::NotPrivateMessage { .. }
        | HubRejection::WrongContentType { .. }
        | HubRejection::WrongGroup { .. }
        | HubRejection::InvalidCommit(_)
        | HubRejection::InvalidProposal(_)
        | HubRejection::MissingWelcome { .. }
        | HubRejection::UnexpectedWelcome
        | HubRejection::WelcomeRecipientsMismatch { .. }
        | HubRejection::InvalidWelcome(_)
        | HubRejection::InvalidGroupInfo(_)
        | HubRejection::InvalidCreation(_) => Code::InvalidArgument,
    }
}

/// ABORTED, with a `CommitConflict` in the standard rich-error details (a
/// `google.rpc.Status` whose `details` holds it as an `Any`), so the loser can find
/// the winning commit without parsing the message.
fn commit_conflict(error: &GroupError, current_epoch: u64, winning_commit_seq: u64) -> Status {
    commit_conflict_status(error.to_string(), current_epoch, winning_commit_seq)
}

fn commit_conflict_status(message: String, current_epoch: u64, winning_commit_seq: u64) -> Status {
    let message = bounded_message(message);
    let conflict = conclave_proto::client::v1::CommitConflict {
        current_epoch,
        winning_commit_seq,
    };
    let details = tonic_types::pb::Status {
        code: Code::Aborted as i32,
        message: message.clone(),
        details: vec![prost_types::Any {
            type_url: COMMIT_CONFLICT_TYPE_URL.to_owned(),
            value: conflict.encode_to_vec(),
        }],
    };
    Status::with_details(Code::Aborted, message, details.encode_to_vec().into())
}

/// Type URL of `CommitConflict` inside status details.
pub(crate) const COMMIT_CONFLICT_TYPE_URL: &str =
    "type.googleapis.com/conclave.client.v1.CommitConflict";

impl From<FollowerError> for Status {
    fn from(error: FollowerError) -> Status {
        let code = match &error {
            FollowerError::InvalidBatch(_) | FollowerError::UnclaimedWelcome { .. } => {
                Code::InvalidArgument
            }
            // FAILED_PRECONDITION, not PERMISSION_DENIED: the refusal is about
            // this group, and the hub's outbox ends only such refusals' groups
            // (PERMISSION_DENIED is the gate refusing the peer as a whole).
            FollowerError::NotTheHub { .. } | FollowerError::NotFollowed { .. } => {
                Code::FailedPrecondition
            }
            FollowerError::RepairFailed { .. } | FollowerError::Busy(_) => Code::Unavailable,
            FollowerError::Store(store) => return store_status(store),
            FollowerError::Internal(internal) => return internal_status(internal),
        };
        status(code, error.to_string())
    }
}

impl From<FetchEventsError> for Status {
    fn from(error: FetchEventsError) -> Status {
        let code = match &error {
            FetchEventsError::UnknownGroup(_) => Code::NotFound,
            FetchEventsError::Pruned { .. } => Code::OutOfRange,
            FetchEventsError::Store(store) => return store_status(store),
            FetchEventsError::Internal(internal) => return internal_status(internal),
        };
        status(code, error.to_string())
    }
}

impl From<AnnouncementError> for Status {
    fn from(error: AnnouncementError) -> Status {
        let code = match &error {
            AnnouncementError::Refused(_) => Code::PermissionDenied,
            AnnouncementError::UnknownGroup(_) => Code::NotFound,
            AnnouncementError::Store(store) => return store_status(store),
        };
        status(code, error.to_string())
    }
}

impl From<DeliveryError> for Status {
    fn from(error: DeliveryError) -> Status {
        // The refusal the device's next call would get (UNAUTHENTICATED).
        let error = match error {
            DeliveryError::AccessEnded(access) => return access.into(),
            error => error,
        };
        let code = match &error {
            DeliveryError::UnknownGroup(_) => Code::NotFound,
            DeliveryError::NotAMember(_) => Code::PermissionDenied,
            DeliveryError::AckBeyondEnd(_) => Code::InvalidArgument,
            DeliveryError::TooManyStreams(_) | DeliveryError::StreamReplaced { .. } => {
                Code::ResourceExhausted
            }
            // Passing, and another replica serves the same streams.
            DeliveryError::ServerStopping | DeliveryError::StreamClosed => Code::Unavailable,
            DeliveryError::AccessEnded(_) => unreachable!("handled above"),
            DeliveryError::Store(store) => return store_status(store),
            DeliveryError::Internal(internal) => return internal_status(internal),
        };
        status(code, error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_errors_have_the_codes_session_proto_lists() {
        use crate::rules::attempt_limits::Limit;
        let check = |error: AdminError, code: Code, message: &str| {
            let status = Status::from(error);
            assert_eq!(status.code(), code, "{status:?}");
            assert_eq!(status.message(), message, "{status:?}");
        };
        let say = |text: &str| text.to_owned();
        check(
            AdminError::Invalid(say("page_size 501 is above the limit of 500")),
            Code::InvalidArgument,
            "page_size 501 is above the limit of 500",
        );
        check(
            AdminError::NotFound(say("there is no user bob@a.example")),
            Code::NotFound,
            "there is no user bob@a.example",
        );
        check(
            AdminError::FailedPrecondition(say("bob@a.example is not suspended")),
            Code::FailedPrecondition,
            "bob@a.example is not suspended",
        );
        check(
            AdminError::Unauthenticated(say("wrong username or password")),
            Code::Unauthenticated,
            "wrong username or password",
        );
        check(
            AdminError::PermissionDenied(say("alice@a.example is not an administrator")),
            Code::PermissionDenied,
            "alice@a.example is not an administrator",
        );
        check(
            AdminError::Internal(say("a secret detail")),
            Code::Internal,
            "internal error; the server's log has the details",
        );
        let refusal = AttemptRefusal {
            limit: Limit::LoginBackoff,
            retry_after_ms: 4000,
        };
        let message = refusal.to_string();
        let status = Status::from(AdminError::TooManyAttempts(refusal));
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(status.message(), message);
        assert_eq!(
            status
                .get_details_retry_info()
                .and_then(|retry| retry.retry_delay),
            Some(Duration::from_secs(4))
        );
    }

    #[test]
    fn long_messages_are_cut_with_an_ellipsis() {
        assert_eq!(bounded_message("short".to_owned()), "short");
        let long = status(Code::InvalidArgument, "x".repeat(100_000));
        assert_eq!(long.message().chars().count(), MAX_STATUS_MESSAGE_CHARS + 1);
        assert!(long.message().ends_with('…'));
        let multibyte = bounded_message("é".repeat(MAX_STATUS_MESSAGE_CHARS + 1));
        assert_eq!(
            multibyte,
            format!("{}…", "é".repeat(MAX_STATUS_MESSAGE_CHARS))
        );
    }
}
