//! Headers on every response of the console: a content security policy that
//! allows only the console's own files (no inline script, no framing), no
//! referrer, no MIME sniffing, and no caching of pages (which show accounts
//! and may show a token's secret).

use axum::http::{HeaderName, HeaderValue, header};
use axum::response::Response;

/// `default-src 'self'` forbids inline scripts and styles; htmx reads its
/// configuration from a `<meta>` tag and injects no style (its indicator
/// styles are turned off there). `form-action 'self'` keeps an injected form
/// from posting elsewhere.
const CONTENT_SECURITY_POLICY: &str =
    "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

pub(crate) async fn add_security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    let fixed: [(HeaderName, &'static str); 4] = [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    ];
    for (name, value) in fixed {
        headers.insert(name, HeaderValue::from_static(value));
    }
    // Assets set their own long cache; everything else is a page.
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}
