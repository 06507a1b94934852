//! The router's state and what each request brings: the `Visitor` (cookie,
//! address, htmx flags) and, once signed in, the `Session` that turns a
//! message into an authenticated in-process API request.

use crate::failure::Failure;
use crate::{AdminApi, ConsoleSettings, csrf, session_cookie};
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use conclave_proto::admin::CallerAddress;
use serde::de::DeserializeOwned;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use tonic::metadata::MetadataValue;

/// The router's state: the API and how the console is deployed.
pub(crate) struct Console<A> {
    pub(crate) api: Arc<A>,
    pub(crate) settings: ConsoleSettings,
}

impl<A> Console<A> {
    pub(crate) fn new(api: Arc<A>, settings: ConsoleSettings) -> Self {
        Console { api, settings }
    }
}

/// Whoever sent this request, signed in or not.
#[derive(Debug, Clone)]
pub(crate) struct Visitor {
    pub(crate) settings: ConsoleSettings,
    /// The session token from the cookie, if there is one (it may have expired).
    pub(crate) token: Option<String>,
    /// The browser's address, for the audit log.
    pub(crate) address: Option<IpAddr>,
    /// Sent by htmx (`HX-Request`): redirects go in `HX-Redirect`.
    pub(crate) htmx: bool,
    /// A boosted link or form (`HX-Boosted`): htmx swaps the whole body, so it
    /// gets whole pages; other htmx requests get fragments.
    pub(crate) boosted: bool,
    /// `Sec-Fetch-Site` and `Origin` say the request came from another site.
    pub(crate) cross_site: bool,
}

impl Visitor {
    fn from_parts(parts: &Parts, settings: &ConsoleSettings) -> Visitor {
        let headers = &parts.headers;
        Visitor {
            settings: settings.clone(),
            token: session_cookie::read(headers),
            address: parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(address)| address.ip()),
            htmx: header_is_true(headers, "hx-request"),
            boosted: header_is_true(headers, "hx-boosted"),
            cross_site: !csrf::same_origin(
                header_text(headers, "sec-fetch-site"),
                header_text(headers, "origin"),
            ),
        }
    }

    /// The signed-in session, or `SignedOut` without a cookie.
    pub(crate) fn session(&self) -> Result<Session, Failure> {
        let token = self.token.clone().ok_or(Failure::SignedOut)?;
        Ok(Session {
            csrf: csrf::token_for(&token),
            token,
            address: self.address,
        })
    }

    /// A path under the console, e.g. `path("/users")` is `/admin/users`.
    pub(crate) fn path(&self, path: &str) -> String {
        format!("{}{path}", self.settings.base_path)
    }

    /// The response for `result`: the page, or the failure's page.
    pub(crate) fn finish(&self, result: Result<Response, Failure>) -> Response {
        match result {
            Ok(response) => response,
            Err(failure) => failure.into_response_for(self),
        }
    }
}

fn header_text<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

fn header_is_true(headers: &HeaderMap, name: &str) -> bool {
    header_text(headers, name) == Some("true")
}

impl<A: AdminApi> FromRequestParts<Arc<Console<A>>> for Visitor {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        console: &Arc<Console<A>>,
    ) -> Result<Self, Self::Rejection> {
        Ok(Visitor::from_parts(parts, &console.settings))
    }
}

/// A signed-in administrator's session, as far as the console knows: the API
/// decides on each call whether it is still valid.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    token: String,
    /// The CSRF token every form of this session carries.
    pub(crate) csrf: String,
    address: Option<IpAddr>,
}

impl Session {
    /// `message` as an API request of this session, from the browser's address.
    pub(crate) fn request<T>(&self, message: T) -> Result<tonic::Request<T>, Failure> {
        let mut request = tonic::Request::new(message);
        // A cookie that is no valid header value was not made by us: treat it
        // as an ended session, which sends the browser to the login page.
        let authorization = MetadataValue::try_from(format!("Bearer {}", self.token))
            .map_err(|_| Failure::Expired)?;
        request
            .metadata_mut()
            .insert("authorization", authorization);
        if let Some(address) = self.address {
            request.extensions_mut().insert(CallerAddress(address));
        }
        Ok(request)
    }

    /// True if `presented` is this session's CSRF token.
    fn csrf_matches(&self, presented: &str) -> bool {
        csrf::matches(&self.token, presented)
    }
}

/// A state-changing request: a same-origin POST of a signed-in session with
/// its CSRF token, and its form. Extracting it refuses anything else before
/// the handler runs, so a refused request changes nothing.
pub(crate) struct Posted<T> {
    pub(crate) visitor: Visitor,
    pub(crate) session: Session,
    pub(crate) form: T,
}

/// The CSRF token as a form field; every other field is the handler's.
#[derive(serde::Deserialize)]
struct CsrfField {
    csrf: Option<String>,
}

/// The header htmx sends the CSRF token in (set with `hx-headers` on the body).
const CSRF_HEADER: &str = "x-csrf-token";

impl<A: AdminApi, T: DeserializeOwned + Send> FromRequest<Arc<Console<A>>> for Posted<T> {
    type Rejection = Response;

    async fn from_request(
        request: Request,
        console: &Arc<Console<A>>,
    ) -> Result<Self, Self::Rejection> {
        let (parts, body) = request.into_parts();
        let visitor = Visitor::from_parts(&parts, &console.settings);
        let refuse = |failure: Failure| failure.into_response_for(&visitor);
        if visitor.cross_site {
            return Err(refuse(Failure::CrossSite));
        }
        let session = visitor.session().map_err(refuse)?;
        let bytes = axum::body::Bytes::from_request(Request::from_parts(parts.clone(), body), &())
            .await
            .map_err(|rejection| rejection.into_response())?;
        let from_header = header_text(&parts.headers, CSRF_HEADER).map(str::to_owned);
        let from_form = serde_urlencoded::from_bytes::<CsrfField>(&bytes)
            .ok()
            .and_then(|field| field.csrf);
        // Either will do: the form's field is the page's own, the header
        // htmx's copy of it.
        let presented = [from_form, from_header];
        if !presented
            .iter()
            .flatten()
            .any(|token| session.csrf_matches(token))
        {
            return Err(refuse(Failure::Csrf));
        }
        let form = serde_urlencoded::from_bytes::<T>(&bytes)
            .map_err(|error| refuse(Failure::BadInput(format!("malformed form: {error}"))))?;
        Ok(Posted {
            visitor,
            session,
            form,
        })
    }
}
