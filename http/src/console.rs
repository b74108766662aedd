//! The web console: `GET /` (its page) and `GET /console/{*path}` (its scripts, styles and
//! vendored libraries), plain files from `http/console/` with no build step.
//!
//! Release builds embed the files in the binary; debug builds read them from the source tree
//! at each request (rust-embed's behaviour), so editing the console needs a reload, not a
//! rebuild. Every answer carries a strong `ETag` (the file's SHA-256) and honours
//! `If-None-Match` with 304; compression is the router's (gzip when the client takes it). The
//! assets are open: what the console shows comes from the API, which checks the key.
//!
//! The page runs under a strict Content-Security-Policy: scripts, styles, data and images only
//! from this server (inline styles allowed, which CodeMirror and uPlot set), no inline
//! scripts, no frames; so data shown by the console cannot run as script even if it were
//! inserted as markup.

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use rust_embed::RustEmbed;
use tarn_lake::ErrorKind;

use crate::auth::{get, Need, Routes};
use crate::error::ErrorBody;
use crate::ApiError;

/// What the console's page may load and run.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; connect-src 'self'; \
     object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

/// The files of `http/console/`.
#[derive(RustEmbed)]
#[folder = "console/"]
struct Assets;

/// The console's routes, open to everyone.
pub(crate) fn routes<S: Clone + Send + Sync + 'static>(routes: Routes<S>) -> Routes<S> {
    routes.route("/", Need::Open, get(index)).route("/console/{*path}", Need::Open, get(file))
}

/// The web console
///
/// The console's page (HTML). What it shows comes from the API, which checks the key.
///
/// Scope: `open`.
#[utoipa::path(
    get,
    path = "/",
    operation_id = "console",
    tag = "console",
    security(()),
    params(("If-None-Match" = Option<String>, Header, description = "An ETag of an earlier answer")),
    responses(
        (status = 200, description = "The page", body = String, content_type = "text/html",
            headers(("ETag" = String, description = "The file's version"))),
        (status = 304, description = "Not modified since the ETag given"),
    )
)]
pub(crate) async fn index(headers: HeaderMap) -> Response {
    asset("index.html", &headers)
}

/// A file of the web console
///
/// The console's scripts, styles and vendored libraries, with their media types.
///
/// Scope: `open`.
#[utoipa::path(
    get,
    path = "/console/{path}",
    operation_id = "console_file",
    tag = "console",
    security(()),
    params(
        ("path" = String, Path, description = "The file's path under the console (may hold `/`)"),
        ("If-None-Match" = Option<String>, Header, description = "An ETag of an earlier answer"),
    ),
    responses(
        (status = 200, description = "The file", content(("application/octet-stream")),
            headers(("ETag" = String, description = "The file's version"))),
        (status = 304, description = "Not modified since the ETag given"),
        (status = 404, description = "The console has no such file", body = ErrorBody),
    )
)]
pub(crate) async fn file(Path(path): Path<String>, headers: HeaderMap) -> Response {
    asset(&path, &headers)
}

/// The file at `path` under `http/console/`, or 304 when the client has this version.
fn asset(path: &str, headers: &HeaderMap) -> Response {
    let Some(file) = Assets::get(path) else {
        return ApiError::new(ErrorKind::NotFound, format!("the console has no file '{path}'"))
            .into_response();
    };
    let hash = file.metadata.sha256_hash();
    let etag = format!("\"{}\"", hex(&hash[..16]));
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|tag| tag.trim() == etag || tag.trim() == "*"));
    let etag = HeaderValue::from_str(&etag).expect("hex digits and quotes");
    // Revalidated at each load (a new binary may bring new files under the same name).
    let cache = HeaderValue::from_static("no-cache");
    if matches {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag), (header::CACHE_CONTROL, cache)])
            .into_response();
    }
    let mime = HeaderValue::from_str(file.metadata.mimetype())
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    (
        [
            (header::CONTENT_TYPE, mime),
            (header::ETAG, etag),
            (header::CACHE_CONTROL, cache),
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
            (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY)),
            (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
        ],
        file.data,
    )
        .into_response()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
