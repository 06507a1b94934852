//! The console's pages: routes, the layout every page shares, and rendering.
//! One module per page or area.

use crate::console::{Console, Visitor};
use crate::failure::Failure;
use crate::{AdminApi, assets};
use askama::Template;
use axum::Router;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Serialize;
use std::sync::Arc;

mod audit;
mod federation;
mod groups;
mod key_stock;
mod login;
mod overview;
mod tokens;
mod users;

pub(crate) fn routes<A: AdminApi>() -> Router<Arc<Console<A>>> {
    Router::new()
        .route("/", get(overview::show::<A>))
        .route("/login", get(login::form).post(login::submit::<A>))
        .route("/logout", post(login::logout::<A>))
        .route("/users", get(users::list::<A>))
        .route("/users/{user_id}", get(users::detail::<A>))
        .route("/users/{user_id}/suspend", post(users::suspend::<A>))
        .route("/users/{user_id}/unsuspend", post(users::unsuspend::<A>))
        .route(
            "/users/{user_id}/deactivate",
            get(users::confirm_deactivation::<A>).post(users::deactivate::<A>),
        )
        .route(
            "/users/{user_id}/devices/{device_id}/revoke",
            post(users::revoke_device::<A>),
        )
        .route("/tokens", get(tokens::list::<A>).post(tokens::create::<A>))
        .route("/tokens/{id}/revoke", post(tokens::revoke::<A>))
        .route("/groups", get(groups::list::<A>))
        .route("/groups/{group_id}", get(groups::inspect::<A>))
        .route("/federation", get(federation::peers::<A>))
        .route("/federation/doctor", post(federation::doctor::<A>))
        .route(
            "/federation/own-certificate",
            post(federation::own_certificate::<A>),
        )
        .route("/key-stock", get(key_stock::list::<A>))
        .route("/audit", get(audit::list::<A>))
        .route("/audit/export", get(audit::export::<A>))
        .route("/assets/{name}", get(assets::serve))
}

/// What the base layout needs: where the console lives, the page's title and
/// section (for the navigation), and the session's CSRF token when signed in
/// (the navigation and the logout button appear only then).
pub(crate) struct Layout {
    pub(crate) base: String,
    pub(crate) title: String,
    pub(crate) section: &'static str,
    pub(crate) csrf: Option<String>,
    pub(crate) htmx: &'static str,
    pub(crate) stylesheet: &'static str,
}

impl Layout {
    pub(crate) fn new(visitor: &Visitor, title: &str, section: &'static str) -> Layout {
        Layout {
            base: visitor.settings.base_path.clone(),
            title: title.to_owned(),
            section,
            csrf: visitor.session().ok().map(|session| session.csrf),
            htmx: &assets::NAMES.htmx,
            stylesheet: &assets::NAMES.stylesheet,
        }
    }
}

/// The page for any failure: its status and what to do.
#[derive(Template)]
#[template(path = "error.html")]
pub(crate) struct ErrorPage<'a> {
    pub(crate) layout: Layout,
    pub(crate) status: u16,
    pub(crate) message: &'a str,
}

/// A failure as a fragment, for an htmx request that swaps part of a page.
#[derive(Template)]
#[template(path = "error_fragment.html")]
pub(crate) struct ErrorFragment<'a> {
    pub(crate) message: &'a str,
}

/// `template` as a 200 HTML response.
pub(crate) fn render(template: &impl Template) -> Result<Response, Failure> {
    Ok(render_with_status(StatusCode::OK, template)?)
}

pub(crate) fn render_with_status(
    status: StatusCode,
    template: &impl Template,
) -> Result<Response, askama::Error> {
    Ok((status, Html(template.render()?)).into_response())
}

/// The redirect after a successful POST: 303, so the browser GETs `target`.
pub(crate) fn see_other(target: &str) -> Response {
    Redirect::to(target).into_response()
}

/// `path?query` with `query` form-encoded (without `?` when empty).
pub(crate) fn with_query(path: String, query: &impl Serialize) -> String {
    match serde_urlencoded::to_string(query) {
        Ok(encoded) if !encoded.is_empty() => format!("{path}?{encoded}"),
        _ => path,
    }
}

/// Links to the next page (and back to the first) of a paged list.
pub(crate) struct Paging {
    pub(crate) first: Option<String>,
    pub(crate) next: Option<String>,
}

impl Paging {
    /// `link(token)` is the list's URL with `page=token`; `current` is this
    /// page's token (empty on the first page).
    pub(crate) fn new(current: &str, next_token: &str, link: impl Fn(&str) -> String) -> Paging {
        Paging {
            first: (!current.is_empty()).then(|| link("")),
            next: (!next_token.is_empty()).then(|| link(next_token)),
        }
    }
}
