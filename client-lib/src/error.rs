//! The errors of the `Client` API. Every Display is one line that says what failed
//! and why, including the homeserver's own message when it refused a request.

use std::fmt;
use std::time::Duration;

use conclave_core::ids::{DeviceId, IdError, UserId};
use conclave_core::key_package::KeyPackageError;
use tonic::Code;
use tonic_types::StatusExt;

use crate::connection::ConnectError;
use crate::mls::MlsError;
use crate::server_url::ServerUrlError;
use crate::state::StateError;
use crate::trust::CaFileError;

/// Why a `Client` operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The local state could not be read or written.
    #[error(transparent)]
    State(#[from] StateError),
    /// An MLS operation on this device failed.
    #[error(transparent)]
    Mls(#[from] MlsError),
    /// A server URL was refused.
    #[error(transparent)]
    ServerUrl(#[from] ServerUrlError),
    /// A user name, user id or device id given by the caller is malformed.
    #[error(transparent)]
    InvalidId(#[from] IdError),
    /// The homeserver could not be reached.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// A CA file to trust cannot be used.
    #[error(transparent)]
    CaFile(#[from] CaFileError),
    /// The homeserver answered a request with an error status.
    #[error(transparent)]
    Rpc(#[from] RpcError),
    /// The operation needs a session and there is none.
    #[error("not logged in: register or log in first")]
    NotLoggedIn,
    /// Register or login while a session exists; one state holds one device.
    #[error("already logged in as {user_id}; log out first")]
    AlreadyLoggedIn { user_id: UserId },
    /// The homeserver's answer breaks the protocol (a malformed id, a session
    /// for another user, ...). Nothing from it was stored.
    #[error("the server's answer to {operation} is invalid: {reason}")]
    InvalidResponse {
        operation: &'static str,
        reason: String,
    },
    /// RemoveDevice was asked to remove the device making the request.
    #[error("device {0} is this device; log out instead")]
    RemoveCurrentDevice(DeviceId),
    /// A claimed key package failed verification; none of the claim is returned.
    #[error("key package claimed for device {device_id} is invalid: {source}")]
    InvalidClaimedKeyPackage {
        device_id: String,
        source: KeyPackageError,
    },
    /// No group on this device has this id or name.
    #[error("no group {0:?} on this device; `groups` lists them")]
    UnknownGroup(String),
    /// Several groups have this name; the id says which.
    #[error("{count} groups are named {name:?}; give the group id instead: {}", ids.join(", "))]
    AmbiguousGroup {
        name: String,
        count: usize,
        /// The candidates' ids, in hex.
        ids: Vec<String>,
    },
    /// The group name given by the caller is refused.
    #[error("{0}")]
    InvalidGroupName(String),
    /// This device is not (or not yet, or no longer) a member of the group.
    #[error("this device is not a member of group {group} ({status})")]
    NotAMember {
        /// The group's name, or its id if it has none.
        group: String,
        status: crate::state::GroupStatus,
    },
    /// The user to remove has no device in the group.
    #[error("{user_id} is not a member of group {group}")]
    UserNotInGroup { user_id: UserId, group: String },
    /// Removing one's own user: that is leaving.
    #[error("to leave group {group}, use leave instead of removing yourself")]
    RemoveSelf { group: String },
    /// The user to invite has no device whose key package could be claimed.
    #[error("{0} has no device that can be added (no key package to claim)")]
    NoDevicesToAdd(UserId),
    /// This device asked to leave the group; it cannot commit or send meanwhile.
    #[error("this device is leaving group {0}; it can no longer change it or send to it")]
    Leaving(String),
    /// A commit kept losing the race for its epoch.
    #[error("gave up on group {group} after losing the race for {attempts} epochs in a row")]
    TooManyConflicts { group: String, attempts: u32 },
    /// A message was stored but could not be sent now (`source` says why: the
    /// homeserver could not be reached, its certificate was refused, catching
    /// up with the group failed): it stays stored and is sent, once, by the
    /// next send, receive or listener catch-up (or, if the homeserver refuses
    /// it then, reported once by
    /// [`Client::take_refused_submissions`](crate::Client::take_refused_submissions)).
    /// Sending the text again would send it twice.
    #[error(
        "the message to {group} is kept but not sent yet ({source}); it goes out with this device's next send, receive or listen"
    )]
    NotSentYet {
        group: String,
        source: Box<ClientError>,
    },
    /// A stored submission was forgotten before it could be made, its
    /// refusal kept by the step that forgot it (this device was removed from
    /// the group while catching up, say): told to the caller that waited for
    /// it, instead of by [`Client::take_refused_submissions`](crate::Client::take_refused_submissions).
    #[error("could not {action} in {group}: {reason}")]
    NotDone {
        group: String,
        /// What it was to do, in a few words ("send a message").
        action: String,
        reason: String,
    },
    /// A test hook stopped the operation as a crash would.
    #[error("simulated crash ({0})")]
    SimulatedCrash(&'static str),
    /// Register or login succeeded (the session is stored) but the key packages
    /// that let others add the device to groups could not be published.
    #[error(
        "{operation} succeeded as {user_id} (device {device_id}) but publishing key packages failed: {source}; publish them again later"
    )]
    PublishAfterEnrolment {
        operation: &'static str,
        user_id: UserId,
        device_id: DeviceId,
        source: Box<ClientError>,
    },
}

/// Lets a state transaction that runs MLS work return `ClientError` directly.
impl From<rusqlite::Error> for ClientError {
    fn from(error: rusqlite::Error) -> Self {
        ClientError::State(StateError::Sqlite(error))
    }
}

impl ClientError {
    /// The gRPC status code, if the homeserver refused the request.
    pub fn rpc_code(&self) -> Option<Code> {
        match self {
            ClientError::Rpc(error) => Some(error.code),
            ClientError::PublishAfterEnrolment { source, .. } => source.rpc_code(),
            _ => None,
        }
    }
    /// Whether the same call may well succeed if made again later: the
    /// homeserver could not be reached, or is busy or shutting down. Not for
    /// [`ClientError::NotSentYet`], whose message must not be sent again.
    pub fn is_transient(&self) -> bool {
        crate::client::is_transient_error(self)
    }

    /// How long to wait before trying again, when the homeserver said so: a
    /// Register or Login refused by its brute-force limits (RESOURCE_EXHAUSTED
    /// with a `google.rpc.RetryInfo`).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ClientError::Rpc(error) => error.retry_after,
            _ => None,
        }
    }
}

/// A request the homeserver answered with an error status (or that timed out).
#[derive(Debug, Clone, thiserror::Error)]
pub struct RpcError {
    /// The operation, as the user would name it ("register", "claim key packages").
    pub operation: &'static str,
    pub code: Code,
    /// The server's message, flattened to one line.
    pub message: String,
    /// The delay the server asked for before the same request may succeed (a
    /// `google.rpc.RetryInfo` in the status details), if any.
    pub retry_after: Option<Duration>,
}

impl RpcError {
    pub(crate) fn from_status(operation: &'static str, status: &tonic::Status) -> Self {
        // A status the server sent has no source; one tonic made here from a
        // broken connection does. A request refused by a server that is shutting
        // down (HTTP/2 GOAWAY) comes back INTERNAL that way, unprocessed: the
        // server was not reached, so it is worth a retry, not a final refusal.
        let broken_connection = std::error::Error::source(status).is_some()
            && matches!(status.code(), Code::Internal | Code::Unknown);
        RpcError {
            operation,
            code: if broken_connection {
                Code::Unavailable
            } else {
                status.code()
            },
            message: status
                .message()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" "),
            retry_after: status
                .get_details_retry_info()
                .and_then(|retry_info| retry_info.retry_delay),
        }
    }
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let code = code_words(self.code);
        if self.message.is_empty() {
            write!(f, "{} failed: {code}", self.operation)
        } else {
            write!(f, "{} failed: {} ({code})", self.operation, self.message)
        }
    }
}

/// The gRPC code in a few plain words: tonic's own descriptions are whole
/// sentences, too long to follow a server's message on the same line.
fn code_words(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown error",
        Code::InvalidArgument => "invalid argument",
        Code::DeadlineExceeded => "timed out",
        Code::NotFound => "not found",
        Code::AlreadyExists => "already exists",
        Code::PermissionDenied => "permission denied",
        Code::ResourceExhausted => "limit exceeded",
        Code::FailedPrecondition => "failed precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out of range",
        Code::Unimplemented => "not supported by this server",
        Code::Internal => "internal server error",
        Code::Unavailable => "server unavailable",
        Code::DataLoss => "data loss",
        Code::Unauthenticated => "not authenticated",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_errors_are_one_line_with_the_server_message() {
        let status = tonic::Status::already_exists("username \"alice\" is\ntaken");
        let error = ClientError::from(RpcError::from_status("register", &status));
        assert_eq!(
            error.to_string(),
            "register failed: username \"alice\" is taken (already exists)"
        );
        assert_eq!(error.rpc_code(), Some(Code::AlreadyExists));

        let status = tonic::Status::unauthenticated("");
        let error = RpcError::from_status("whoami", &status);
        assert_eq!(error.to_string(), "whoami failed: not authenticated");
    }

    #[test]
    fn a_retry_delay_in_the_status_details_is_kept() {
        let details =
            tonic_types::ErrorDetails::with_retry_info(Some(Duration::from_millis(59_500)));
        let status = tonic::Status::with_error_details(
            Code::ResourceExhausted,
            "too many register and login attempts from this address; try again in 60 s",
            details,
        );
        let error = ClientError::from(RpcError::from_status("login", &status));
        assert_eq!(error.retry_after(), Some(Duration::from_millis(59_500)));
        assert_eq!(
            error.to_string(),
            "login failed: too many register and login attempts from this address; try again in 60 s (limit exceeded)"
        );
        let status = tonic::Status::resource_exhausted("claims per minute");
        assert_eq!(
            ClientError::from(RpcError::from_status("claim", &status)).retry_after(),
            None
        );
    }

    #[test]
    fn a_broken_connection_is_unavailable_but_a_server_s_internal_error_is_not() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "GOAWAY");
        let mut status =
            tonic::Status::internal("connection error received: not a result of an error");
        status.set_source(std::sync::Arc::new(io));
        assert_eq!(
            RpcError::from_status("send", &status).code,
            Code::Unavailable
        );

        let status = tonic::Status::internal("internal error; the server's log has the details");
        assert_eq!(RpcError::from_status("send", &status).code, Code::Internal);
    }
}
