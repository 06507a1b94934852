//! The console's two files, compiled into the crate: its stylesheet and the
//! vendored htmx. Each is served at a path that changes with its content, so
//! browsers may cache it for a year.

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use std::sync::LazyLock;

/// The vendored htmx's version (see `assets/README.md`).
const HTMX_VERSION: &str = "2.0.11";
const HTMX: &[u8] = include_bytes!("../assets/htmx.min.js");
const STYLESHEET: &[u8] = include_bytes!("../assets/console.css");

/// The file names under `assets/`, with the version or content hash in them.
pub(crate) struct AssetNames {
    pub(crate) htmx: String,
    pub(crate) stylesheet: String,
}

pub(crate) static NAMES: LazyLock<AssetNames> = LazyLock::new(|| AssetNames {
    htmx: format!("htmx-{HTMX_VERSION}.min.js"),
    // The stylesheet changes without a version of its own: name it by content.
    stylesheet: format!(
        "console-{}.css",
        &hex::encode(Sha256::digest(STYLESHEET))[..16]
    ),
});

pub(crate) async fn serve(Path(name): Path<String>) -> Response {
    let (content_type, body) = if name == NAMES.htmx {
        ("text/javascript; charset=utf-8", HTMX)
    } else if name == NAMES.stylesheet {
        ("text/css; charset=utf-8", STYLESHEET)
    } else {
        return (StatusCode::NOT_FOUND, "no such asset\n").into_response();
    };
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        body,
    )
        .into_response()
}
