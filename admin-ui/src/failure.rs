//! What can go wrong with a console request, and the response for each: the
//! admin API's gRPC codes map to HTTP statuses here and nowhere else.

use crate::console::Visitor;
use crate::pages::{ErrorPage, Layout, render_with_status};
use crate::session_cookie;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use tonic::Code;
use tonic_types::StatusExt;

/// Why a request got no page of its own.
#[derive(Debug)]
pub(crate) enum Failure {
    /// No session cookie: to the login page.
    SignedOut,
    /// The API answered UNAUTHENTICATED (the session expired or ended): to the
    /// login page, saying so.
    Expired,
    /// A POST without this session's CSRF token.
    Csrf,
    /// A POST the browser marked as coming from another site.
    CrossSite,
    /// Input the console itself could not read (e.g. a malformed date).
    BadInput(String),
    /// The API refused or failed.
    Api(tonic::Status),
    /// A template failed to render.
    Render(askama::Error),
}

impl From<tonic::Status> for Failure {
    fn from(status: tonic::Status) -> Self {
        if status.code() == Code::Unauthenticated {
            Failure::Expired
        } else {
            Failure::Api(status)
        }
    }
}

impl From<askama::Error> for Failure {
    fn from(error: askama::Error) -> Self {
        Failure::Render(error)
    }
}

/// The HTTP status for an admin API error code. UNAUTHENTICATED never gets
/// here (it sends the browser to the login page).
pub(crate) fn http_status(code: Code) -> StatusCode {
    match code {
        Code::InvalidArgument => StatusCode::BAD_REQUEST,
        Code::NotFound | Code::Unimplemented => StatusCode::NOT_FOUND,
        Code::FailedPrecondition => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// What a person is told about an API error, and the status it is sent with.
pub(crate) fn explain(status: &tonic::Status) -> (StatusCode, String) {
    let http = http_status(status.code());
    let message = match status.code() {
        Code::ResourceExhausted => match retry_after_seconds(status) {
            Some(seconds) => format!("too many attempts: try again in {seconds} seconds"),
            None => format!("too many attempts: {}", status.message()),
        },
        Code::Unimplemented => "the admin API is turned off on this server".to_owned(),
        _ if http == StatusCode::INTERNAL_SERVER_ERROR => {
            // The details may be internal; they go to the log, not the page.
            tracing::error!(code = ?status.code(), message = status.message(), "admin API call failed");
            "something went wrong on the server; the details are in its log".to_owned()
        }
        _ => status.message().to_owned(),
    };
    (http, message)
}

/// The delay a RESOURCE_EXHAUSTED status asks for, rounded up to whole seconds.
pub(crate) fn retry_after_seconds(status: &tonic::Status) -> Option<u64> {
    let delay = status.get_details_retry_info()?.retry_delay?;
    Some(delay.as_secs() + u64::from(delay.subsec_nanos() > 0))
}

impl Failure {
    /// The response for this failure to `visitor`.
    pub(crate) fn into_response_for(self, visitor: &Visitor) -> Response {
        let (status, message, retry_after) = match self {
            Failure::SignedOut => return to_login(visitor, false),
            Failure::Expired => return to_login(visitor, true),
            Failure::Csrf => (
                StatusCode::FORBIDDEN,
                "invalid or missing CSRF token: reload the page and try again".to_owned(),
                None,
            ),
            Failure::CrossSite => (
                StatusCode::FORBIDDEN,
                "cross-site request refused".to_owned(),
                None,
            ),
            Failure::BadInput(message) => (StatusCode::BAD_REQUEST, message, None),
            Failure::Api(status) => {
                let retry_after = retry_after_seconds(&status);
                let (http, message) = explain(&status);
                (http, message, retry_after)
            }
            Failure::Render(error) => {
                tracing::error!(%error, "admin console template failed to render");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "something went wrong on the server; the details are in its log".to_owned(),
                    None,
                )
            }
        };
        let mut response = error_response(visitor, status, &message);
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// The error page (or, for an htmx fragment request, the message alone).
pub(crate) fn error_response(visitor: &Visitor, status: StatusCode, message: &str) -> Response {
    if visitor.htmx && !visitor.boosted {
        let fragment = crate::pages::ErrorFragment { message };
        return render_with_status(status, &fragment).unwrap_or_else(|_| status.into_response());
    }
    let page = ErrorPage {
        layout: Layout::new(visitor, "Error", ""),
        status: status.as_u16(),
        message,
    };
    render_with_status(status, &page).unwrap_or_else(|_| status.into_response())
}

/// To the login page, the cookie cleared; `expired` says the session ended.
/// An htmx request gets `HX-Redirect`, which htmx follows with a full page
/// load (a plain redirect would swap the login page into a fragment).
fn to_login(visitor: &Visitor, expired: bool) -> Response {
    let target = if expired {
        visitor.path("/login?expired=1")
    } else {
        visitor.path("/login")
    };
    let mut response = if visitor.htmx {
        let mut response = StatusCode::UNAUTHORIZED.into_response();
        if let Ok(value) = HeaderValue::try_from(target) {
            response.headers_mut().insert("hx-redirect", value);
        }
        response
    } else {
        Redirect::to(&target).into_response()
    };
    if visitor.token.is_some() {
        response
            .headers_mut()
            .insert(header::SET_COOKIE, session_cookie::clear(&visitor.settings));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_codes_map_to_http_statuses() {
        let cases = [
            (Code::InvalidArgument, 400),
            (Code::NotFound, 404),
            (Code::FailedPrecondition, 409),
            (Code::PermissionDenied, 403),
            (Code::Unimplemented, 404),
            (Code::ResourceExhausted, 429),
            (Code::Internal, 500),
            (Code::Unavailable, 500),
            (Code::AlreadyExists, 500),
        ];
        for (code, expected) in cases {
            assert_eq!(http_status(code).as_u16(), expected, "{code:?}");
        }
    }

    #[test]
    fn internal_errors_are_not_shown() {
        let (status, message) = explain(&tonic::Status::internal("database at 10.0.0.5 refused"));
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!message.contains("10.0.0.5"));
    }

    #[test]
    fn retry_delay_is_rounded_up_to_seconds() {
        let status = tonic::Status::with_error_details(
            Code::ResourceExhausted,
            "too many login attempts",
            tonic_types::ErrorDetails::with_retry_info(Some(std::time::Duration::from_millis(
                2500,
            ))),
        );
        assert_eq!(retry_after_seconds(&status), Some(3));
        let (http, message) = explain(&status);
        assert_eq!(http, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(message, "too many attempts: try again in 3 seconds");
    }
}
