//! The one place where domain errors become gRPC statuses. Codes follow the gRPC
//! documentation; the message always says what was wrong. Server-side failures
//! are logged here and reported without internal detail.

use crate::rules::key_package_upload::UploadRejection;
use crate::service::InternalError;
use crate::service::accounts::AccountError;
use crate::service::key_packages::KeyPackageServiceError;
use tonic::{Code, Status};

impl From<AccountError> for Status {
    fn from(error: AccountError) -> Status {
        let code = match &error {
            AccountError::Invalid(_) => Code::InvalidArgument,
            AccountError::UsernameTaken(_) | AccountError::SignatureKeyTaken => {
                Code::AlreadyExists
            }
            AccountError::RegistrationClosed
            | AccountError::RegistrationTokenMissing
            | AccountError::RegistrationTokenRejected => Code::PermissionDenied,
            AccountError::WrongCredentials
            | AccountError::MissingToken
            | AccountError::InvalidToken => Code::Unauthenticated,
            AccountError::UnknownDevice(_) => Code::NotFound,
            AccountError::Internal(internal) => return internal_status(internal),
        };
        Status::new(code, error.to_string())
    }
}

impl From<KeyPackageServiceError> for Status {
    fn from(error: KeyPackageServiceError) -> Status {
        let code = match &error {
            KeyPackageServiceError::Rejected(UploadRejection::TooMany { .. }) => {
                Code::ResourceExhausted
            }
            KeyPackageServiceError::Rejected(UploadRejection::Duplicate(_)) => Code::AlreadyExists,
            KeyPackageServiceError::Rejected(_) | KeyPackageServiceError::InvalidUserId(_) => {
                Code::InvalidArgument
            }
            KeyPackageServiceError::UnknownUser(_) => Code::NotFound,
            KeyPackageServiceError::ForeignUser { .. } => Code::FailedPrecondition,
            KeyPackageServiceError::RateLimited { .. } => Code::ResourceExhausted,
            KeyPackageServiceError::Internal(internal) => return internal_status(internal),
        };
        Status::new(code, error.to_string())
    }
}

fn internal_status(error: &InternalError) -> Status {
    tracing::error!(%error, "request failed on the server side");
    match error {
        // Most database errors are passing (unreachable, failover, pool timeout):
        // UNAVAILABLE tells the client to retry the same call.
        InternalError::Store(_) => Status::unavailable("the database is unavailable; retry"),
        InternalError::PasswordHashing(_) | InternalError::Corrupt(_) => {
            Status::internal("internal error; the server's log has the details")
        }
    }
}

/// A required message field was left unset.
pub(crate) fn missing_field(field: &str) -> Status {
    Status::invalid_argument(format!("{field} is required"))
}

/// gRPC code OUT_OF_RANGE, as it appears in the `grpc-status` header.
const OUT_OF_RANGE: &str = "11";
/// gRPC code RESOURCE_EXHAUSTED.
const RESOURCE_EXHAUSTED: &str = "8";

/// tonic refuses a request larger than `max_decoding_message_size` with
/// OUT_OF_RANGE, but a size limit is RESOURCE_EXHAUSTED in gRPC's own vocabulary
/// (and in ours). The refusal happens before any handler runs, as a trailers-only
/// response, so the status is in the response headers; this rewrites it there. No
/// handler of ours returns OUT_OF_RANGE, so nothing else is affected.
pub(crate) fn oversize_as_resource_exhausted(
    limit: usize,
) -> impl Fn(http::Response<tonic::body::Body>) -> http::Response<tonic::body::Body> + Clone {
    move |mut response| {
        let headers = response.headers_mut();
        if headers
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
