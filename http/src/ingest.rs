//! `POST /v1/ingest/{table}` (records as JSON, NDJSON, CSV or a browser form) and
//! `POST /v1/tables/{table}/files` (a whole file).
//!
//! Browser forms may come from other origins: the table's `forms.allowed_origins` (and the
//! origins of publishable API keys allowed to ingest into it) get CORS answers, and
//! `?redirect=<url>` (or the table's `forms.success_url`) sends the browser on with a 303.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use futures::TryStreamExt;
use tarn_catalog::TableName;
use tarn_ingest::{
    FileFormat, FormAnswer, Format, IngestOptions, Ingestor, Loader, Source, Upload,
};
use tarn_lake::ErrorKind;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::auth::{get, options, post, Need, Routes};
use crate::error::ErrorBody;
use crate::openapi::{FormRejected, IngestAccepted, IngestReceipt, LoadReport};
use crate::ApiError;

/// What the ingest handlers share.
#[derive(Clone)]
pub(crate) struct IngestState {
    pub ingestor: Arc<Ingestor>,
    pub loader: Arc<Loader>,
}

/// The ingest routes: records need `ingest:<table>`, preflights nothing.
pub(crate) fn routes(routes: Routes<IngestState>, state: &IngestState) -> Routes<IngestState> {
    let limit = state.ingestor.config().max_body_bytes;
    routes
        // OPTIONS has a route of its own so that the CORS layer sees preflights whatever
        // fallback the application installs for unrouted methods. CORS is outside the key
        // check, so a page's script can read a refusal (a 429 of its publishable key) too.
        .route_within(
            "/v1/ingest/{table}",
            Need::IngestInto,
            post(ingest).layer(DefaultBodyLimit::max(limit)),
            |guarded| guarded.layer(cors(&state.ingestor)),
        )
        .route("/v1/ingest/{table}", Need::Open, options(preflight).layer(cors(&state.ingestor)))
        .route("/v1/tables/{table}/files", Need::IngestInto, post(upload))
        .route("/v1/ingest", Need::Query, get(status))
}

/// CORS preflight of a browser form
///
/// 204; the CORS headers allow `POST` from the origins the table's `forms.allowed_origins` (or
/// a publishable key allowed to ingest into it) names.
///
/// Scope: `open`.
#[utoipa::path(
    options,
    path = "/v1/ingest/{table}",
    operation_id = "ingest_preflight",
    tag = "ingest",
    security(()),
    params(("table" = String, Path, description = "The table: `name` or `namespace.name`")),
    responses((status = 204, description = "Preflight answered (with CORS headers when the origin is allowed)"))
)]
async fn preflight() -> StatusCode {
    StatusCode::NO_CONTENT
}

/// Ingest status
///
/// Per table, what ingest took since the server started (records, rejected rows, bytes,
/// commits, the last commit, rows buffered now), and the write-ahead log's depth.
///
/// Scope: `query`.
#[utoipa::path(
    get,
    path = "/v1/ingest",
    operation_id = "ingest_status",
    tag = "ingest",
    responses(
        (status = 200, description = "Ingest since the start", body = crate::openapi::IngestStatus),
        (status = 403, description = "The key lacks the `query` scope", body = ErrorBody),
    )
)]
async fn status(State(state): State<IngestState>) -> axum::Json<tarn_ingest::IngestStatus> {
    axum::Json(state.ingestor.status())
}

/// CORS for browser forms: an origin is allowed when the table (or a publishable key) says so.
fn cors(ingestor: &Arc<Ingestor>) -> CorsLayer {
    let ingestor = ingestor.clone();
    CorsLayer::new()
        .allow_origin(AllowOrigin::async_predicate(move |origin, parts| {
            let ingestor = ingestor.clone();
            let table = parts.uri.path().strip_prefix("/v1/ingest/").map(String::from);
            async move {
                match (origin.to_str(), table.and_then(|t| TableName::parse(&t).ok())) {
                    (Ok(origin), Some(name)) => ingestor.origin_allowed(&name, origin).await,
                    _ => false,
                }
            }
        }))
        .allow_methods([Method::POST])
        .allow_headers([
            header::CONTENT_TYPE,
            header::CONTENT_ENCODING,
            header::AUTHORIZATION,
            "x-tarn-key".parse().expect("header name"),
            "idempotency-key".parse().expect("header name"),
        ])
        .max_age(std::time::Duration::from_secs(3600))
}

/// Longest accepted `Idempotency-Key`.
const MAX_KEY_LEN: usize = 255;

/// The `Idempotency-Key` header, checked.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value.to_str().ok().filter(|k| {
        !k.is_empty() && k.len() <= MAX_KEY_LEN && k.bytes().all(|b| b.is_ascii_graphic())
    });
    key.map(|k| Some(k.to_string())).ok_or_else(|| {
        ApiError::bad_request(format!(
            "Idempotency-Key must be 1 to {MAX_KEY_LEN} visible ASCII characters"
        ))
    })
}

/// Upload a file
///
/// A whole file (CSV, NDJSON, JSON array or Parquet) as the body, streamed to local disk and
/// loaded like `tarn load`. The format comes from `?format=`, the content type, or the
/// extension of `?name=`. With an `Idempotency-Key`, a retried upload resumes the earlier load
/// instead of loading the file twice. Answers 200 with the load's report once every row is
/// committed. The body is taken uncompressed.
///
/// Scope: `ingest:<table>`.
#[utoipa::path(
    post,
    path = "/v1/tables/{table}/files",
    operation_id = "upload_file",
    tag = "ingest",
    params(
        ("table" = String, Path, description = "The table: `name` or `namespace.name`; created on first load"),
        ("format" = Option<String>, Query, description = "`csv`, `ndjson`, `json` or `parquet`; default from the content type or the name's extension"),
        ("name" = Option<String>, Query, description = "The file's name (its extension may give the format); default `upload`"),
        ("Idempotency-Key" = Option<String>, Header, description = "1 to 255 visible ASCII characters: a retry with the same key resumes the earlier load"),
    ),
    request_body(
        description = "The file",
        content(
            ("text/csv"),
            ("application/x-ndjson"),
            ("application/json"),
            ("application/vnd.apache.parquet"),
            ("application/octet-stream"),
        )
    ),
    responses(
        (status = 200, description = "Every row committed", body = LoadReport),
        (status = 400, description = "A bad table name, parameter, Idempotency-Key or file", body = ErrorBody),
        (status = 403, description = "The key lacks `ingest:<table>`", body = ErrorBody),
        (status = 409, description = "The load conflicts with the table (e.g. another load with the same Idempotency-Key runs)", body = ErrorBody),
        (status = 413, description = "The file is larger than the server takes", body = ErrorBody),
        (status = 415, description = "The format is not known or the body is compressed", body = ErrorBody),
        (status = 422, description = "The file does not fit the table's schema", body = ErrorBody),
        (status = 503, description = "Storage or the write-ahead log is unavailable", body = ErrorBody),
    )
)]
async fn upload(
    State(state): State<IngestState>,
    Path(table): Path<String>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    let name = TableName::parse(&table)?;
    let Query(query) = query.map_err(ApiError::from_query)?;
    let file_name = query.get("name").cloned().unwrap_or_else(|| "upload".into());
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let format = match query.get("format") {
        Some(f) => FileFormat::parse(f).ok_or_else(|| {
            ApiError::bad_request(format!("format={f} is not one of csv, ndjson, json, parquet"))
        })?,
        None => content_type
            .and_then(FileFormat::from_content_type)
            .or_else(|| FileFormat::from_name(&file_name))
            .ok_or_else(|| {
                ApiError::new(
                    ErrorKind::UnsupportedFormat,
                    "say what the file is: a content type (text/csv, application/x-ndjson, \
                     application/json, application/vnd.apache.parquet), ?format= or ?name= with \
                     an extension",
                )
            })?,
    };
    if headers.get(header::CONTENT_ENCODING).is_some_and(|v| v.as_bytes() != b"identity") {
        return Err(ApiError::new(
            ErrorKind::UnsupportedFormat,
            "uploads are taken uncompressed (Content-Encoding: identity)",
        ));
    }
    let upload = Upload {
        table: name,
        file_name,
        format,
        key: idempotency_key(&headers)?,
        body: Box::pin(body.into_data_stream().map_err(std::io::Error::other)),
    };
    let report = state.loader.load_upload(upload).await?;
    Ok((StatusCode::OK, Json(report)).into_response())
}

/// Ingest records
///
/// Records as JSON (an object or an array of objects), NDJSON, CSV with a header line, or a
/// browser form (`application/x-www-form-urlencoded`, `multipart/form-data`; a body that
/// starts like JSON is JSON whatever its type). Bodies may be gzip- or zstd-compressed
/// (`Content-Encoding`). The table is created from the first records
/// unless it is declared. 202 once the records are durable in the write-ahead log; with
/// `?wait=commit`, 200 once they are in a Delta commit. A form with a success URL (or
/// `?redirect=`) answers 303. A retry with the same `Idempotency-Key` answers the first
/// receipt again with `Idempotent-Replayed: true`. Browser forms from other origins get CORS
/// answers when the table allows their origin.
///
/// Scope: `ingest:<table>` (a publishable key may come as `?key=`).
#[utoipa::path(
    post,
    path = "/v1/ingest/{table}",
    operation_id = "ingest",
    tag = "ingest",
    params(
        ("table" = String, Path, description = "The table: `name` or `namespace.name`"),
        ("wait" = Option<String>, Query, description = "`commit`: answer after the Delta commit that holds the records"),
        ("redirect" = Option<String>, Query, description = "Forms: where to send the browser after the record is taken (303)"),
        ("Idempotency-Key" = Option<String>, Header, description = "1 to 255 visible ASCII characters: a retry with the same key is not ingested twice"),
        ("Content-Encoding" = Option<String>, Header, description = "`gzip`, `zstd` or `identity`"),
    ),
    request_body(
        description = "The records",
        content(
            (Object = "application/json"),
            ("application/x-ndjson"),
            ("text/csv"),
            (Object = "application/x-www-form-urlencoded"),
            (Object = "multipart/form-data"),
        )
    ),
    responses(
        (status = 200, description = "Committed (`?wait=commit`)", body = IngestReceipt),
        (status = 202, description = "Durable in the write-ahead log, not committed yet; or a form taken", body = IngestAccepted),
        (status = 303, description = "A form's record taken: the browser is sent on to the success URL", headers(("Location" = String, description = "The success URL"))),
        (status = 400, description = "A bad table name, parameter, Idempotency-Key or body", body = ErrorBody),
        (status = 403, description = "The key lacks `ingest:<table>`", body = ErrorBody),
        (status = 409, description = "The same Idempotency-Key with another body, or a table being changed", body = ErrorBody),
        (status = 413, description = "The body (decompressed) is larger than the server takes", body = ErrorBody),
        (status = 415, description = "A content type or encoding the server does not read", body = ErrorBody),
        (status = 422, description = "Records that do not fit the table (a form: its receipt, with the rejections)", body = FormRejected),
        (status = 429, description = "Over the key's rate limit (requests or ingest bytes)", body = ErrorBody),
        (status = 503, description = "The write-ahead log is full or storage is unavailable", body = ErrorBody),
    )
)]
async fn ingest(
    State(state): State<IngestState>,
    Path(table): Path<String>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let ingestor = &state.ingestor;
    let name = TableName::parse(&table)?;
    let Query(query) = query.map_err(ApiError::from_query)?;
    let wait_for_commit = match query.get("wait").map(String::as_str) {
        None => false,
        Some("commit") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "wait={other} is not understood; use wait=commit to answer after the Delta commit"
            )))
        }
    };
    let key = idempotency_key(&headers)?;
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase());
    let limit = ingestor.config().max_body_bytes;
    let body = body.map_err(ApiError::from_body)?;
    let body = match encoding.as_deref() {
        None | Some("identity") | Some("") => body,
        _ => tokio::task::spawn_blocking(move || {
            tarn_ingest::encoding::decompress(encoding.as_deref(), body, limit)
        })
        .await
        .map_err(ApiError::internal)??,
    };
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let essence = content_type
        .map(|c| c.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
        .unwrap_or_default();
    let options = IngestOptions {
        key,
        wait_for_commit,
        source: Source::Http,
        content_type: content_type.map(String::from),
        original: None,
    };
    let fields = match essence.as_str() {
        "application/x-www-form-urlencoded" if !looks_like_json(&body) => {
            Some(tarn_ingest::form::urlencoded_fields(&body))
        }
        "multipart/form-data" => Some(
            tarn_ingest::form::multipart_fields(content_type.unwrap_or_default(), body.clone())
                .await?,
        ),
        _ => None,
    };
    if let Some(fields) = fields {
        let options = IngestOptions { original: Some(body), ..options };
        let answer =
            ingestor.submit_form(&name, fields, query.get("redirect").map(String::as_str), options);
        return Ok(form_response(&name, answer.await?));
    }
    let format = Format::from_content_type(content_type, &body)?;
    let receipt = ingestor.ingest(&name, body, format, options).await?;
    // 200 once committed (wait=commit), 202 when durable but not committed yet.
    let status = if receipt.version.is_some() { StatusCode::OK } else { StatusCode::ACCEPTED };
    let replayed = receipt.replayed;
    let mut response = (status, Json(receipt)).into_response();
    if replayed {
        response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// `curl -d` sends JSON as a form unless told otherwise: a body that starts like JSON is JSON.
fn looks_like_json(body: &[u8]) -> bool {
    matches!(body.iter().find(|b| !b.is_ascii_whitespace()), Some(b'{') | Some(b'['))
}

/// A browser form's answer: a 303 to the page the form flow names, or JSON when it names none.
fn form_response(name: &TableName, answer: FormAnswer) -> Response {
    if let Some(url) = &answer.next {
        return Redirect::to(url).into_response();
    }
    match answer.receipt {
        None => (
            StatusCode::ACCEPTED,
            Json(serde_json::json!({"table": name.to_string(), "accepted": 1})),
        )
            .into_response(),
        Some(receipt) if receipt.rejected > 0 => {
            (StatusCode::UNPROCESSABLE_ENTITY, Json(receipt)).into_response()
        }
        Some(receipt) => {
            let status =
                if receipt.version.is_some() { StatusCode::OK } else { StatusCode::ACCEPTED };
            (status, Json(receipt)).into_response()
        }
    }
}
