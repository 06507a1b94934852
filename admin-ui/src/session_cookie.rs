//! The `conclave_admin` cookie that holds the admin session token.

use crate::ConsoleSettings;
use axum::http::{HeaderMap, HeaderValue, header};
use cookie::{Cookie, SameSite};

/// The cookie's name.
pub(crate) const NAME: &str = "conclave_admin";

/// The `Set-Cookie` value that stores `token`: HttpOnly (no script reads it),
/// SameSite=Strict (no other site's page sends it), scoped to the console's
/// path, and Secure behind a TLS proxy. No expiry: a session cookie, and the
/// server ends the session itself.
pub(crate) fn set(settings: &ConsoleSettings, token: &str) -> HeaderValue {
    to_header(
        Cookie::build((NAME, token.to_owned()))
            .http_only(true)
            .same_site(SameSite::Strict)
            .path(settings.base_path.clone())
            .secure(settings.secure_cookies)
            .build(),
    )
}

/// The `Set-Cookie` value that removes the cookie.
pub(crate) fn clear(settings: &ConsoleSettings) -> HeaderValue {
    let mut cookie = Cookie::build((NAME, ""))
        .http_only(true)
        .same_site(SameSite::Strict)
        .path(settings.base_path.clone())
        .secure(settings.secure_cookies)
        .build();
    cookie.make_removal();
    to_header(cookie)
}

fn to_header(cookie: Cookie<'_>) -> HeaderValue {
    HeaderValue::try_from(cookie.to_string())
        .expect("a cookie of a token in a header value is a header value")
}

/// The session token from the request's `Cookie` headers, if any.
pub(crate) fn read(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|cookie| cookie.name() == NAME && !cookie.value().is_empty())
        .map(|cookie| cookie.value().to_owned())
}
