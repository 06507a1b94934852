//! Cross-site request forgery: the stateless CSRF token, and the same-origin
//! check of the browser's fetch metadata. Pure functions.
//!
//! The token is HMAC-SHA256 keyed with the session token over a fixed
//! message: a page of the session can carry it, another site cannot compute
//! it without the (HttpOnly) cookie, and any replica can check it without
//! shared state.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// What the HMAC is computed over; it names its purpose so the same key never
/// signs anything else.
const CSRF_MESSAGE: &[u8] = b"conclave-admin-csrf";

fn keyed(session_token: &str) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(session_token.as_bytes())
        .expect("HMAC accepts a key of any length");
    mac.update(CSRF_MESSAGE);
    mac
}

/// The CSRF token of the session whose token is `session_token`, in lowercase hex.
pub(crate) fn token_for(session_token: &str) -> String {
    hex::encode(keyed(session_token).finalize().into_bytes())
}

/// True if `presented` is the CSRF token of `session_token` (compared in
/// constant time).
pub(crate) fn matches(session_token: &str, presented: &str) -> bool {
    match hex::decode(presented) {
        Ok(bytes) => keyed(session_token).verify_slice(&bytes).is_ok(),
        Err(_) => false,
    }
}

/// True unless the browser says the request came from another site: a
/// `Sec-Fetch-Site` other than `same-origin` (or `none`, typed by the user),
/// or, from a browser without fetch metadata, an opaque `Origin` (`null`).
/// `Sec-Fetch-Site` decides when present: under the console's
/// `Referrer-Policy: no-referrer`, Chromium sends `Origin: null` with every
/// POST of its own forms (the admin_console browser test found this). Browsers
/// without either pass: the CSRF token is the defence, this is depth.
pub(crate) fn same_origin(sec_fetch_site: Option<&str>, origin: Option<&str>) -> bool {
    match sec_fetch_site {
        Some(site) => site == "same-origin" || site == "none",
        None => origin != Some("null"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_the_hmac_of_the_session_token_and_only_it_matches() {
        let token = token_for("session-a");
        assert_eq!(token.len(), 64);
        assert!(matches("session-a", &token));
        assert!(!matches("session-b", &token));
        assert!(!matches("session-a", ""));
        assert!(!matches("session-a", "not hex"));
        assert!(!matches("session-a", &token[..62]));
        assert_ne!(token_for("session-a"), token_for("session-b"));
    }

    #[test]
    fn same_origin_refuses_what_the_browser_marks_cross_site() {
        let cases = [
            (None, None, true),
            (Some("same-origin"), None, true),
            (Some("none"), None, true),
            (Some("same-site"), None, false),
            (Some("cross-site"), None, false),
            (None, Some("https://a.example"), true),
            (None, Some("null"), false),
            // Chromium's own form POST under Referrer-Policy: no-referrer.
            (Some("same-origin"), Some("null"), true),
            (Some("cross-site"), Some("null"), false),
        ];
        for (site, origin, expected) in cases {
            assert_eq!(same_origin(site, origin), expected, "{site:?} {origin:?}");
        }
    }
}
