//! `POST /v1/sql` and the async queries: `POST /v1/queries`, `GET`/`DELETE
//! /v1/queries/{id}`, `GET /v1/queries/{id}/results`.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use serde::Deserialize;
use tarn_lake::ErrorKind;
use tarn_query::observe::{Outcome, QueryRecord};
use tarn_query::queries::{QueryManager, QueryRequest};
use tarn_query::{Error, OutputFormat, QueryEngine};
use tokio::time::Instant;

use crate::auth::{get, post, Need, Routes};
use crate::error::ErrorBody;
use crate::openapi::{JsonResult, QueryStatus};
use crate::stream::{stream_body, Limits};
use crate::ApiError;

/// Largest SQL text accepted.
const MAX_SQL_BYTES: usize = 1024 * 1024;

/// Largest SQL text of an async query: its text is kept with its status (in memory, for up to
/// [`tarn_query::QueryConfig::max_tracked_queries`] queries, and in the lake). Athena's bound.
const MAX_ASYNC_SQL_BYTES: usize = 256 * 1024;

/// Header of a page of async results: where the next page starts.
pub const NEXT_PAGE_HEADER: &str = "tarn-next-page-token";

/// What the query handlers share.
#[derive(Clone)]
pub(crate) struct SqlState {
    pub engine: Arc<QueryEngine>,
    pub queries: Arc<QueryManager>,
}

/// The SQL routes: all of them need the `query` scope.
pub(crate) fn routes(routes: Routes<SqlState>) -> Routes<SqlState> {
    let limit = DefaultBodyLimit::max(MAX_SQL_BYTES);
    routes
        .route("/v1/sql", Need::Query, post(sql).layer(limit))
        .route("/v1/queries", Need::Query, post(submit).layer(limit))
        .route("/v1/queries/{id}", Need::Query, get(status).delete(cancel))
        .route("/v1/queries/{id}/results", Need::Query, get(results))
}

/// The body of `POST /v1/sql` as JSON.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SqlRequest {
    /// The SQL text (at most 1 MiB).
    sql: String,
}

fn is_json(headers: &HeaderMap, body: &Bytes) -> bool {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase());
    match content_type.as_deref() {
        Some("application/json") => true,
        Some("text/plain") | Some("application/sql") => false,
        // curl -d sends form-urlencoded; decide by the body.
        _ => body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{'),
    }
}

/// The query request: `{"sql": "...", ...}` as JSON, or the body itself as the SQL text.
fn query_request(headers: &HeaderMap, body: &Bytes) -> Result<QueryRequest, ApiError> {
    if is_json(headers, body) {
        serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!(
                "the body must be {{\"sql\": \"...\", \"reuse\": true|false}}: {e}"
            ))
        })
    } else {
        let sql = String::from_utf8(body.to_vec())
            .map_err(|e| ApiError::bad_request(format!("the SQL text is not UTF-8: {e}")))?;
        Ok(QueryRequest { sql, reuse: true })
    }
}

/// The SQL text of a `POST /v1/sql`.
fn sql_text(headers: &HeaderMap, body: &Bytes) -> Result<String, ApiError> {
    if is_json(headers, body) {
        let request: SqlRequest = serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("the body must be {{\"sql\": \"...\"}}: {e}"))
        })?;
        Ok(request.sql)
    } else {
        String::from_utf8(body.to_vec())
            .map_err(|e| ApiError::bad_request(format!("the SQL text is not UTF-8: {e}")))
    }
}

fn output_format(headers: &HeaderMap) -> Result<OutputFormat, ApiError> {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    OutputFormat::from_accept(accept).ok_or_else(|| {
        ApiError::new(
            ErrorKind::NotAcceptable,
            format!(
                "cannot answer in '{}'; supported: {}",
                accept.unwrap_or(""),
                OutputFormat::supported()
            ),
        )
    })
}

/// Run SQL
///
/// Runs one read-only SQL statement and streams its result in the format `Accept` asks for:
/// `application/json` (the default, cut at the server's row cap), `application/x-ndjson`,
/// `text/csv`, `application/vnd.apache.arrow.stream` or `application/vnd.apache.parquet`. The
/// body is `{"sql": "..."}` as JSON, or the SQL text itself. Errors raised before the first
/// batch get their status; a failure later ends the stream early.
///
/// Scope: `query`.
#[utoipa::path(
    post,
    path = "/v1/sql",
    operation_id = "run_sql",
    tag = "sql",
    request_body(
        description = "The statement",
        content(
            (SqlRequest = "application/json"),
            (String = "text/plain"),
        )
    ),
    responses(
        (status = 200, description = "The result, in the format `Accept` asks for", content(
            (JsonResult = "application/json"),
            (String = "application/x-ndjson"),
            (String = "text/csv"),
            (Vec<u8> = "application/vnd.apache.arrow.stream"),
            (Vec<u8> = "application/vnd.apache.parquet"),
        )),
        (status = 400, description = "The body or the SQL is not valid", body = ErrorBody),
        (status = 403, description = "The key lacks the `query` scope", body = ErrorBody),
        (status = 404, description = "A table the SQL names does not exist", body = ErrorBody),
        (status = 406, description = "`Accept` names no supported format", body = ErrorBody),
        (status = 413, description = "The SQL text is larger than 1 MiB", body = ErrorBody),
        (status = 429, description = "Over the key's rate limit, or the query queue is full", body = ErrorBody),
        (status = 503, description = "Storage is unavailable", body = ErrorBody),
        (status = 504, description = "The query ran past the server's time limit", body = ErrorBody),
    )
)]
async fn sql(
    State(state): State<SqlState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let format = output_format(&headers)?;
    let sql = sql_text(&headers, &body.map_err(ApiError::from_body)?)?;
    let engine = &state.engine;
    let limit = engine.config().timeout;
    // The time limit counts from admission: waiting in the queue is bounded by the queue.
    let ticket = engine.admission().enter()?;
    let permit = ticket.admit().await;
    let mut record = QueryRecord::start("sql");
    let deadline = Instant::now() + limit;
    let started = async {
        let planned = tokio::time::timeout_at(deadline, engine.plan(&sql))
            .await
            .map_err(|_| Error::Timeout(limit))??;
        record.planned(&planned);
        let mut stream = planned.execute()?;
        // Pull the first batch before answering, so that errors raised when execution starts
        // still get a proper status instead of a cut-off 200.
        let first = match tokio::time::timeout_at(deadline, stream.next()).await {
            Err(_) => return Err(Error::Timeout(limit)),
            Ok(Some(Ok(batch))) => Some(batch),
            Ok(Some(Err(e))) => return Err(Error::from(e)),
            Ok(None) => None,
        };
        Ok((stream, first))
    };
    let (stream, first) = match started.await {
        Ok(started) => started,
        Err(e) => {
            record.finish(Outcome::of(&e));
            return Err(e.into());
        }
    };
    let cap = format.is_buffered().then_some(engine.config().max_result_rows as u64);
    let encoder = format.encoder(stream.schema());
    let body = stream_body(
        stream,
        first,
        encoder,
        Limits { max_rows: cap, deadline: Some((deadline, limit)), next_page: None },
        Some(permit),
        Some(record),
    );
    Ok(answer(format, body, &[]))
}

fn answer(format: OutputFormat, body: Body, headers: &[(&'static str, String)]) -> Response {
    let mut response = body.into_response();
    let map = response.headers_mut();
    map.insert(header::CONTENT_TYPE, HeaderValue::from_static(format.content_type()));
    for (name, value) in headers {
        if let Ok(value) = HeaderValue::from_str(value) {
            map.insert(HeaderName::from_static(name), value);
        }
    }
    response
}

/// Submit an async query
///
/// Starts a query that runs in the background and keeps its result (Parquet in the lake)
/// for paging through `GET /v1/queries/{id}/results`. A query whose tables have not changed
/// since an earlier one's may reuse its result (`"reuse": false` to refuse). Answers 202 with
/// the query's status and `Location`.
///
/// Scope: `query`.
#[utoipa::path(
    post,
    path = "/v1/queries",
    operation_id = "submit_query",
    tag = "sql",
    request_body(
        description = "The query",
        content(
            (crate::openapi::QueryRequest = "application/json"),
            (String = "text/plain"),
        )
    ),
    responses(
        (status = 202, description = "Submitted", body = QueryStatus, headers(("Location" = String, description = "`/v1/queries/{id}`"))),
        (status = 400, description = "The body is not valid", body = ErrorBody),
        (status = 403, description = "The key lacks the `query` scope", body = ErrorBody),
        (status = 413, description = "The SQL text is larger than 256 KiB", body = ErrorBody),
        (status = 429, description = "Over the key's rate limit, or too many queries are tracked", body = ErrorBody),
        (status = 503, description = "Storage is unavailable", body = ErrorBody),
    )
)]
async fn submit(
    State(state): State<SqlState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request = query_request(&headers, &body.map_err(ApiError::from_body)?)?;
    if request.sql.len() > MAX_ASYNC_SQL_BYTES {
        return Err(ApiError::new(
            ErrorKind::TooLarge,
            format!(
                "the SQL text of an async query may have at most {MAX_ASYNC_SQL_BYTES} bytes; this one has {}",
                request.sql.len()
            ),
        ));
    }
    let status = state.queries.submit(request)?;
    let location = format!("/v1/queries/{}", status.id);
    let mut response = (StatusCode::ACCEPTED, Json(status)).into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

/// An async query's status
///
/// Where the query is (`queued`, `running`, `succeeded`, `failed`, `cancelled`), what it read
/// and, once it succeeded, its result's columns and rows.
///
/// Scope: `query`.
#[utoipa::path(
    get,
    path = "/v1/queries/{id}",
    operation_id = "query_status",
    tag = "sql",
    params(("id" = String, Path, description = "The query's id")),
    responses(
        (status = 200, description = "The status", body = QueryStatus),
        (status = 403, description = "The key lacks the `query` scope", body = ErrorBody),
        (status = 404, description = "No query with this id (or it expired)", body = ErrorBody),
        (status = 503, description = "Storage is unavailable", body = ErrorBody),
    )
)]
async fn status(
    State(state): State<SqlState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(state.queries.status(&id).await?).into_response())
}

/// Cancel an async query
///
/// Stops a queued or running query; for a finished one, deletes its result now. Answers its
/// status.
///
/// Scope: `query`.
#[utoipa::path(
    delete,
    path = "/v1/queries/{id}",
    operation_id = "cancel_query",
    tag = "sql",
    params(("id" = String, Path, description = "The query's id")),
    responses(
        (status = 200, description = "The status after cancelling", body = QueryStatus),
        (status = 403, description = "The key lacks the `query` scope", body = ErrorBody),
        (status = 404, description = "No query with this id (or it expired)", body = ErrorBody),
        (status = 503, description = "Storage is unavailable", body = ErrorBody),
    )
)]
async fn cancel(
    State(state): State<SqlState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(state.queries.cancel(&id).await?).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PageParams {
    page_token: Option<String>,
    max_rows: Option<u64>,
}

/// An async query's results
///
/// A page of the stored result, in the format `Accept` asks for (the same formats as
/// `POST /v1/sql`). JSON pages hold at most the row cap and name the next page in the
/// document; every format names it in the `Tarn-Next-Page-Token` header.
///
/// Scope: `query`.
#[utoipa::path(
    get,
    path = "/v1/queries/{id}/results",
    operation_id = "query_results",
    tag = "sql",
    params(
        ("id" = String, Path, description = "The query's id"),
        ("page_token" = Option<String>, Query, description = "Where the page starts: the previous page's `next_page_token` (default: the first row)"),
        ("max_rows" = Option<u64>, Query, minimum = 1, description = "Most rows in the page (JSON: at most the row cap; default the cap, or all rows for streamed formats)"),
    ),
    responses(
        (status = 200, description = "A page of the result", content(
            (JsonResult = "application/json"),
            (String = "application/x-ndjson"),
            (String = "text/csv"),
            (Vec<u8> = "application/vnd.apache.arrow.stream"),
            (Vec<u8> = "application/vnd.apache.parquet"),
        ), headers(
            ("Tarn-Total-Rows" = u64, description = "Rows of the whole result"),
            ("Tarn-Next-Page-Token" = String, description = "Where the next page starts (absent on the last page)"),
        )),
        (status = 400, description = "A bad page_token or max_rows", body = ErrorBody),
        (status = 403, description = "The key lacks the `query` scope", body = ErrorBody),
        (status = 404, description = "No query with this id (or it expired)", body = ErrorBody),
        (status = 406, description = "`Accept` names no supported format", body = ErrorBody),
        (status = 409, description = "The query has not succeeded (still running, failed or cancelled)", body = ErrorBody),
        (status = 503, description = "Storage is unavailable", body = ErrorBody),
    )
)]
async fn results(
    State(state): State<SqlState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    params: Result<Query<PageParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = params.map_err(ApiError::from_query)?;
    let format = output_format(&headers)?;
    let offset = match params.page_token.as_deref() {
        None | Some("") => 0,
        Some(token) => parse_page_token(token)?,
    };
    let cap = state.engine.config().max_result_rows as u64;
    let max_rows = match (params.max_rows, format.is_buffered()) {
        (Some(0), _) => return Err(ApiError::bad_request("max_rows must be at least 1")),
        (Some(n), true) => Some(n.min(cap)),
        (Some(n), false) => Some(n),
        (None, true) => Some(cap),
        (None, false) => None,
    };
    let (status, mut stream) = state.queries.page(&id, offset, max_rows).await?;
    let total = status.rows.unwrap_or(0);
    let end = max_rows.map_or(total, |n| offset.saturating_add(n).min(total));
    let next_page = (end < total).then(|| page_token(end));
    let first = match stream.next().await {
        Some(Ok(batch)) => Some(batch),
        Some(Err(e)) => return Err(Error::from(e).into()),
        None => None,
    };
    let encoder = format.encoder(stream.schema());
    let mut extra = vec![("tarn-total-rows", total.to_string())];
    if let Some(token) = &next_page {
        extra.push((NEXT_PAGE_HEADER, token.clone()));
    }
    let body = stream_body(
        stream,
        first,
        encoder,
        Limits { max_rows: None, deadline: None, next_page },
        None,
        None,
    );
    Ok(answer(format, body, &extra))
}

fn page_token(offset: u64) -> String {
    format!("r{offset}")
}

fn parse_page_token(token: &str) -> Result<u64, ApiError> {
    token.strip_prefix('r').and_then(|n| n.parse().ok()).ok_or_else(|| {
        ApiError::bad_request(format!(
            "page_token '{token}' is not one this server gave out (use next_page_token of the previous page)"
        ))
    })
}
