//! `POST /v1/ingest/{table}`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap};
use axum::routing::post;
use axum::{Json, Router};
use tarn_catalog::{ApiError, ErrorCode, TableName};

use crate::{Format, IngestReceipt, Ingestor};

/// The ingest router.
pub fn router(ingestor: Arc<Ingestor>) -> Router {
    let limit = ingestor.config().max_body_bytes;
    Router::new()
        .route("/v1/ingest/{table}", post(ingest))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(ingestor)
}

async fn ingest(
    State(ingestor): State<Arc<Ingestor>>,
    Path(table): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<IngestReceipt>, ApiError> {
    let name = TableName::parse(&table)?;
    if let Some(encoding) = headers.get(header::CONTENT_ENCODING) {
        let encoding = encoding.to_str().unwrap_or("?");
        if !encoding.eq_ignore_ascii_case("identity") {
            return Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                format!(
                    "Content-Encoding '{encoding}' is not supported; send the body uncompressed"
                ),
            ));
        }
    }
    let body = body?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let format = Format::from_content_type(content_type, &body)?;
    Ok(Json(ingestor.ingest(&name, body, format).await?))
}
