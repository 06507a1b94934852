//! The admin web console: server-rendered pages over the admin API
//! (`conclave.admin.v1`), which it calls in-process as one more client of it.
//!
//! The console never touches the database. Every page calls the six admin
//! services' trait methods with a `tonic::Request` that carries the
//! administrator's session token (`authorization: Bearer ...`, from the
//! `conclave_admin` cookie) and the browser's address (the
//! [`conclave_proto::admin::CallerAddress`] extension, for the audit log), so
//! the API's authentication, limits and audit apply to the console exactly as
//! to a remote gRPC client.
//!
//! Every page reads without JavaScript and every action is a plain form POST
//! answered with a redirect (post/redirect/get); the vendored htmx only
//! enhances: boosted links and forms, and the federation doctor's report
//! swapped into its page.
//!
//! # Layout
//! - [`router`] and [`ConsoleSettings`]: what the homeserver mounts under `/admin`.
//! - `console`: the router's state, the per-request `Visitor` (cookie, address,
//!   htmx flags) and `Session` (token, CSRF token) that builds API requests.
//! - `csrf`: the stateless CSRF token and the same-origin checks (pure).
//! - `session_cookie`: the `conclave_admin` cookie, set, cleared and read.
//! - `failure`: what went wrong and the response for it (gRPC code to HTTP status).
//! - `security_headers`: CSP, framing, referrer and caching headers on every response.
//! - `assets`: the stylesheet and htmx, at versioned paths with a long cache.
//! - `view`: formatting of timestamps and states for the templates.
//! - `pages`: one module per page or area (login, overview, users, tokens,
//!   groups, federation, key stock, audit).

use conclave_proto::admin::v1::{
    admin_session_service_server::AdminSessionService, audit_service_server::AuditService,
    federation_admin_service_server::FederationAdminService,
    group_admin_service_server::GroupAdminService,
    registration_token_admin_service_server::RegistrationTokenAdminService,
    user_admin_service_server::UserAdminService,
};
use std::sync::Arc;

mod assets;
mod console;
mod csrf;
mod failure;
mod pages;
mod security_headers;
mod session_cookie;
mod view;

/// The admin API as the console needs it: the six services of
/// `conclave.admin.v1`, implemented by one value (the homeserver's `AdminApi`).
pub trait AdminApi:
    AdminSessionService
    + UserAdminService
    + RegistrationTokenAdminService
    + GroupAdminService
    + FederationAdminService
    + AuditService
    + Send
    + Sync
    + 'static
{
}

impl<T> AdminApi for T where
    T: AdminSessionService
        + UserAdminService
        + RegistrationTokenAdminService
        + GroupAdminService
        + FederationAdminService
        + AuditService
        + Send
        + Sync
        + 'static
{
}

/// How the console is deployed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleSettings {
    /// Marks the session cookie `Secure`: true when browsers reach the console
    /// over HTTPS through a TLS proxy (`[admin] behind_tls_proxy`). Without it a
    /// browser would refuse to send a `Secure` cookie back over plain HTTP.
    pub secure_cookies: bool,
    /// The path the router is nested under, without a trailing slash
    /// (`/admin`): links, redirects and the cookie's `Path` start with it.
    pub base_path: String,
}

impl Default for ConsoleSettings {
    fn default() -> Self {
        ConsoleSettings {
            secure_cookies: false,
            base_path: "/admin".to_owned(),
        }
    }
}

/// The console's routes, to be nested under `settings.base_path` by a server
/// that gives handlers the peer's address (`into_make_service_with_connect_info::<SocketAddr>()`);
/// without it the API sees no caller address.
pub fn router<A: AdminApi>(api: Arc<A>, settings: ConsoleSettings) -> axum::Router {
    pages::routes::<A>()
        .layer(axum::middleware::map_response(
            security_headers::add_security_headers,
        ))
        .with_state(Arc::new(console::Console::new(api, settings)))
}
