//! `POST /v1/sql`.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use datafusion::execution::SendableRecordBatchStream;
use futures::StreamExt;
use serde::Deserialize;
use tarn_catalog::{ApiError, ErrorCode};
use tokio::sync::mpsc;

use crate::{BatchEncoder, OutputFormat, QueryEngine};

/// Largest SQL text accepted.
const MAX_SQL_BYTES: usize = 1024 * 1024;

/// Encoded chunks buffered between the query and a slow client; the query pauses when full.
const STREAM_BUFFER_CHUNKS: usize = 2;

/// The query router.
pub fn router(engine: Arc<QueryEngine>) -> Router {
    Router::new()
        .route("/v1/sql", post(sql))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_SQL_BYTES))
        .with_state(engine)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SqlRequest {
    sql: String,
}

/// The SQL text of a request: `{"sql": "..."}` as JSON, or the body itself as text.
fn sql_text(headers: &HeaderMap, body: &Bytes) -> Result<String, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase());
    let is_json = match content_type.as_deref() {
        Some("application/json") => true,
        Some("text/plain") | Some("application/sql") => false,
        // curl -d sends form-urlencoded; decide by the body.
        _ => body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{'),
    };
    if is_json {
        let request: SqlRequest = serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("the body must be {{\"sql\": \"...\"}}: {e}"))
        })?;
        Ok(request.sql)
    } else {
        String::from_utf8(body.to_vec())
            .map_err(|e| ApiError::bad_request(format!("the SQL text is not UTF-8: {e}")))
    }
}

async fn sql(
    State(engine): State<Arc<QueryEngine>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = OutputFormat::from_accept(accept).ok_or_else(|| {
        ApiError::new(
            ErrorCode::NotAcceptable,
            format!(
                "cannot answer in '{}'; supported: {}",
                accept.unwrap_or(""),
                OutputFormat::supported()
            ),
        )
    })?;
    let sql = sql_text(&headers, &body?)?;
    let mut stream = engine.execute(&sql).await?;
    // Pull the first batch before answering, so that errors raised when execution starts
    // still get a proper status instead of a cut-off 200.
    let first = match stream.next().await {
        Some(Ok(batch)) => Some(batch),
        Some(Err(e)) => return Err(crate::Error::from(e).into()),
        None => None,
    };
    let encoder = format.encoder(stream.schema());
    let body = stream_body(stream, first, encoder);
    let mut response = body.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(format.content_type()));
    Ok(response)
}

/// Streams the encoded result with bounded buffering. An error after the answer started
/// aborts the body, so the client sees a failed transfer rather than a silently short result.
fn stream_body(
    mut stream: SendableRecordBatchStream,
    first: Option<arrow::array::RecordBatch>,
    mut encoder: Box<dyn BatchEncoder>,
) -> Body {
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(STREAM_BUFFER_CHUNKS);
    tokio::spawn(async move {
        let schema = stream.schema();
        let mut pending = first.map(Ok);
        let mut chunk = encoder.begin(&schema);
        loop {
            let bytes = match chunk {
                Ok(bytes) => bytes,
                Err(e) => {
                    tracing::warn!(error = %e, "encoding a query result failed");
                    let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                    return;
                }
            };
            if !bytes.is_empty() && tx.send(Ok(Bytes::from(bytes))).await.is_err() {
                return; // the client went away; dropping the stream cancels the query
            }
            let next = match pending.take() {
                Some(batch) => Some(batch),
                None => stream.next().await,
            };
            chunk = match next {
                Some(Ok(batch)) => encoder.batch(&batch),
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "query failed while streaming its result");
                    let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                    return;
                }
                None => {
                    let last = encoder.finish().map(Bytes::from).map_err(|e| {
                        tracing::warn!(error = %e, "encoding a query result failed");
                        std::io::Error::other(e.to_string())
                    });
                    let _ = tx.send(last).await;
                    return;
                }
            };
        }
    });
    Body::from_stream(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}
