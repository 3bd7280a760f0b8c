//! The operator console's files, compiled into the binary (`src/web/`): the page at `/`, and
//! its scripts (ES modules) and style sheet under `/ui/`. No external asset, no CDN: the
//! console works offline.
//!
//! The page is served with a Content-Security-Policy that lets it load only its own scripts and
//! style and talk only to its own origin: even a value that slipped into the page as markup
//! could not run a script (and the console inserts every value from an event as text).

use axum::extract::Path;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::ApiError;

/// The page (`src/web/index.html`).
pub const INDEX_HTML: &str = include_str!("../web/index.html");

/// The console's files under `/ui/`: name, content type, body.
pub const ASSETS: &[(&str, &str, &str)] = &[
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("../web/app.css"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../web/app.js"),
    ),
    (
        "dom.js",
        "text/javascript; charset=utf-8",
        include_str!("../web/dom.js"),
    ),
    (
        "list.js",
        "text/javascript; charset=utf-8",
        include_str!("../web/list.js"),
    ),
    (
        "saga.js",
        "text/javascript; charset=utf-8",
        include_str!("../web/saga.js"),
    ),
    (
        "graph.js",
        "text/javascript; charset=utf-8",
        include_str!("../web/graph.js"),
    ),
    (
        "dlq.js",
        "text/javascript; charset=utf-8",
        include_str!("../web/dlq.js"),
    ),
];

/// What the page may load and talk to.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn file(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

pub(super) async fn index() -> Response {
    let mut r = file("text/html; charset=utf-8", INDEX_HTML);
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::REFERRER_POLICY,
        header::HeaderValue::from_static("no-referrer"),
    );
    r
}

pub(super) async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, content_type, body)) => file(content_type, body),
        None => ApiError::NotFound(format!("no file /ui/{name}")).into_response(),
    }
}
