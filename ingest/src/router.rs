//! `POST /v1/ingest/{table}`.

use std::collections::HashMap;
use std::io::Read;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use tarn_catalog::{ApiError, TableName};

use crate::{Error, Format, IngestOptions, Ingestor};

/// The ingest router.
pub fn router(ingestor: Arc<Ingestor>) -> Router {
    let limit = ingestor.config().max_body_bytes;
    Router::new()
        .route("/v1/ingest/{table}", post(ingest))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(ingestor)
}

/// Longest accepted `Idempotency-Key`.
const MAX_KEY_LEN: usize = 255;

async fn ingest(
    State(ingestor): State<Arc<Ingestor>>,
    Path(table): Path<String>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let name = TableName::parse(&table)?;
    let Query(query) = query?;
    let wait_for_commit = match query.get("wait").map(String::as_str) {
        None => false,
        Some("commit") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "wait={other} is not understood; use wait=commit to answer after the Delta commit"
            )))
        }
    };
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(value) => {
            let key = value.to_str().ok().filter(|k| {
                !k.is_empty() && k.len() <= MAX_KEY_LEN && k.bytes().all(|b| b.is_ascii_graphic())
            });
            Some(key.ok_or_else(|| {
                ApiError::bad_request(format!(
                    "Idempotency-Key must be 1 to {MAX_KEY_LEN} visible ASCII characters"
                ))
            })?)
        }
    };
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase());
    let limit = ingestor.config().max_body_bytes;
    let body = body?;
    let body = match encoding.as_deref() {
        None | Some("identity") | Some("") => body,
        _ => tokio::task::spawn_blocking(move || decompress(encoding.as_deref(), body, limit))
            .await
            .expect("decompression does not panic")?,
    };
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let format = Format::from_content_type(content_type, &body)?;
    let options = IngestOptions { key: key.map(String::from), wait_for_commit };
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

/// Undoes `Content-Encoding` (gzip, zstd), refusing results larger than `limit`.
fn decompress(encoding: Option<&str>, body: Bytes, limit: usize) -> Result<Bytes, Error> {
    let read = |reader: &mut dyn Read, name: &str| {
        let mut out = Vec::with_capacity((body.len() * 4).min(limit));
        reader
            .take(limit as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| Error::BadEncoding { encoding: name.into(), reason: e.to_string() })?;
        if out.len() > limit {
            return Err(Error::TooLarge { limit });
        }
        Ok(Bytes::from(out))
    };
    match encoding {
        None | Some("identity") | Some("") => Ok(body),
        Some("gzip") | Some("x-gzip") => {
            read(&mut flate2::read::MultiGzDecoder::new(&body[..]), "gzip")
        }
        Some("zstd") => {
            let mut decoder = zstd::stream::read::Decoder::new(&body[..]).map_err(|e| {
                Error::BadEncoding { encoding: "zstd".into(), reason: e.to_string() }
            })?;
            read(&mut decoder, "zstd")
        }
        Some(other) => Err(Error::UnsupportedMediaType(format!(
            "Content-Encoding '{other}' is not supported; send gzip, zstd or an uncompressed body"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn gzip_and_zstd_bodies() {
        let text = b"{\"a\": 1}\n".repeat(100);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&text).unwrap();
        let gz = Bytes::from(gz.finish().unwrap());
        assert_eq!(decompress(Some("gzip"), gz.clone(), 10_000).unwrap(), text);
        assert!(matches!(decompress(Some("gzip"), gz, 100), Err(Error::TooLarge { limit: 100 })));
        let zst = Bytes::from(zstd::encode_all(&text[..], 1).unwrap());
        assert_eq!(decompress(Some("zstd"), zst, 10_000).unwrap(), text);
        let err = decompress(Some("gzip"), Bytes::from_static(b"not gzip"), 100).unwrap_err();
        assert!(err.to_string().starts_with("the body is not valid gzip"), "{err}");
        assert!(matches!(
            decompress(Some("br"), Bytes::new(), 1),
            Err(Error::UnsupportedMediaType(_))
        ));
    }
}
