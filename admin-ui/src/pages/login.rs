//! Logging in (the login page and its form) and out.

use crate::console::{Console, Posted, Visitor};
use crate::failure::{Failure, explain, retry_after_seconds};
use crate::pages::{Layout, render_with_status, see_other};
use crate::{AdminApi, session_cookie};
use askama::Template;
use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use conclave_proto::admin::CallerAddress;
use conclave_proto::admin::v1::admin_session_service_server::AdminSessionService;
use conclave_proto::admin::v1::{AdminLoginRequest, AdminLogoutRequest};
use std::sync::Arc;
use tonic::Code;

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    layout: Layout,
    /// Why the form is shown again, if it is.
    message: Option<String>,
    username: String,
}

#[derive(serde::Deserialize)]
pub(crate) struct LoginQuery {
    #[serde(default)]
    expired: Option<String>,
}

pub(crate) async fn form(visitor: Visitor, Query(query): Query<LoginQuery>) -> Response {
    let message = query
        .expired
        .map(|_| "your session expired: log in again".to_owned());
    login_page(&visitor, StatusCode::OK, message, String::new())
}

fn login_page(
    visitor: &Visitor,
    status: StatusCode,
    message: Option<String>,
    username: String,
) -> Response {
    let mut layout = Layout::new(visitor, "Log in", "login");
    // The login page never shows the navigation, even with a stale cookie.
    layout.csrf = None;
    let page = LoginPage {
        layout,
        message,
        username,
    };
    render_with_status(status, &page).unwrap_or_else(|error| visitor.finish(Err(error.into())))
}

#[derive(serde::Deserialize)]
pub(crate) struct LoginForm {
    username: String,
    password: String,
}

pub(crate) async fn submit<A: AdminApi>(
    State(console): State<Arc<Console<A>>>,
    visitor: Visitor,
    Form(login): Form<LoginForm>,
) -> Response {
    if visitor.cross_site {
        return visitor.finish(Err(Failure::CrossSite));
    }
    let mut request = tonic::Request::new(AdminLoginRequest {
        username: login.username.clone(),
        password: login.password,
    });
    if let Some(address) = visitor.address {
        request.extensions_mut().insert(CallerAddress(address));
    }
    match AdminSessionService::login(console.api.as_ref(), request).await {
        Ok(session) => {
            let mut response = see_other(&visitor.settings.base_path);
            response.headers_mut().insert(
                header::SET_COOKIE,
                session_cookie::set(&visitor.settings, &session.into_inner().token),
            );
            response
        }
        Err(status) => {
            let (http, message) = match status.code() {
                Code::Unauthenticated => (
                    StatusCode::UNAUTHORIZED,
                    "wrong username or password".to_owned(),
                ),
                Code::PermissionDenied => (
                    StatusCode::FORBIDDEN,
                    "this account is not an administrator".to_owned(),
                ),
                _ => explain(&status),
            };
            let mut response = login_page(&visitor, http, Some(message), login.username);
            if let Some(seconds) = retry_after_seconds(&status) {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            }
            response
        }
    }
}

/// Any form field but the CSRF token is ignored.
#[derive(serde::Deserialize)]
pub(crate) struct NoFields {}

pub(crate) async fn logout<A: AdminApi>(
    State(console): State<Arc<Console<A>>>,
    posted: Posted<NoFields>,
) -> Response {
    let result = async {
        let request = posted.session.request(AdminLogoutRequest {})?;
        match AdminSessionService::logout(console.api.as_ref(), request).await {
            // Already ended: logging out is done either way.
            Ok(_) => Ok(()),
            Err(status) if status.code() == Code::Unauthenticated => Ok(()),
            Err(status) => Err(Failure::from(status)),
        }
    }
    .await;
    match result {
        Ok(()) => {
            let mut response = see_other(&posted.visitor.path("/login"));
            response.headers_mut().insert(
                header::SET_COOKIE,
                session_cookie::clear(&posted.visitor.settings),
            );
            response
        }
        Err(failure) => failure.into_response_for(&posted.visitor),
    }
}
