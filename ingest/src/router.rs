//! `POST /v1/ingest/{table}`: records as JSON, NDJSON, CSV or a browser form.
//!
//! Browser forms may come from other origins: the table's `forms.allowed_origins` (and the
//! origins of publishable API keys allowed to ingest into it) get CORS answers, and
//! `?redirect=<url>` (or the table's `forms.success_url`) sends the browser on with a 303.

use std::collections::HashMap;
use std::io::Read;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::post;
use axum::{Json, Router};
use tarn_catalog::{ApiError, TableName};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::form::{self, FormRecord};
use crate::{Error, FileFormat, FileLoad, Format, IngestOptions, Ingestor, LoadProgress, Source};

/// The ingest router.
pub fn router(ingestor: Arc<Ingestor>) -> Router {
    let limit = ingestor.config().max_body_bytes;
    let cors = {
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
    };
    Router::new()
        // OPTIONS has a route of its own so that the CORS layer sees preflights whatever
        // fallback the application installs for unrouted methods.
        .route("/v1/ingest/{table}", post(ingest).options(|| async { StatusCode::NO_CONTENT }))
        .layer(DefaultBodyLimit::max(limit))
        .layer(cors)
        .route("/v1/tables/{table}/files", post(upload))
        .with_state(ingestor)
}

/// `POST /v1/tables/{table}/files`: a whole file (CSV, NDJSON, JSON array or Parquet) as the
/// body, streamed to local disk and loaded like `tarn load`. The format comes from
/// `?format=`, the content type, or the extension of `?name=`. With an `Idempotency-Key`, a
/// retried upload resumes the earlier load instead of loading the file twice. Answers 200 with
/// the load's report once every row is committed.
async fn upload(
    State(ingestor): State<Arc<Ingestor>>,
    Path(table): Path<String>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    use futures::StreamExt;
    use tokio::io::AsyncWriteExt;
    let name = TableName::parse(&table)?;
    let Query(query) = query?;
    let file_name = query.get("name").cloned().unwrap_or_else(|| "upload".into());
    if file_name.contains(['/', '\\']) {
        return Err(ApiError::bad_request("name= is a file name, not a path"));
    }
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let format = match query.get("format") {
        Some(f) => FileFormat::parse(f).ok_or_else(|| {
            ApiError::bad_request(format!("format={f} is not one of csv, ndjson, json, parquet"))
        })?,
        None => content_type
            .and_then(FileFormat::from_content_type)
            .or_else(|| FileFormat::from_name(&file_name))
            .ok_or_else(|| {
                ApiError::from(Error::UnsupportedMediaType(
                    "say what the file is: a content type (text/csv, application/x-ndjson, \
                     application/json, application/vnd.apache.parquet), ?format= or ?name= with \
                     an extension"
                        .into(),
                ))
            })?,
    };
    if headers.get(header::CONTENT_ENCODING).is_some_and(|v| v.as_bytes() != b"identity") {
        return Err(Error::UnsupportedMediaType(
            "uploads are taken uncompressed (Content-Encoding: identity)".into(),
        )
        .into());
    }
    let key = idempotency_key(&headers)?;
    let load_id = match &key {
        Some(key) => format!(
            "upload-{:032x}",
            xxhash_rust::xxh3::xxh3_128(format!("{name}|{key}").as_bytes())
        ),
        None => format!("upload-{}", uuid::Uuid::new_v4().simple()),
    };
    let spool = ingestor.spool_dir();
    let io = |e: std::io::Error| {
        ApiError::from(Error::Wal(crate::wal::WalError::Io {
            dir: spool.display().to_string(),
            source: e,
        }))
    };
    tokio::fs::create_dir_all(&spool).await.map_err(io)?;
    let local = spool.join(format!("{load_id}-{}", uuid::Uuid::new_v4().simple()));
    let limit = ingestor.config().max_upload_bytes;
    let received = async {
        let mut file = tokio::fs::File::create(&local).await.map_err(io)?;
        let mut stream = body.into_data_stream();
        let mut size = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk =
                chunk.map_err(|e| ApiError::bad_request(format!("the upload broke off: {e}")))?;
            size += chunk.len() as u64;
            if size > limit {
                return Err(Error::TooLarge { limit: limit as usize }.into());
            }
            file.write_all(&chunk).await.map_err(io)?;
        }
        file.flush().await.map_err(io)?;
        Ok::<_, ApiError>(())
    }
    .await;
    let loaded = match received {
        Ok(()) => ingestor
            .load_file(FileLoad {
                table: name,
                path: local.clone(),
                format,
                load_id,
                source: Source::File(file_name),
                progress: Arc::new(LoadProgress::default()),
                raw_object: None,
            })
            .await
            .map_err(ApiError::from),
        Err(e) => Err(e),
    };
    let _ = tokio::fs::remove_file(&local).await;
    Ok((StatusCode::OK, Json(loaded?)).into_response())
}

/// Longest accepted `Idempotency-Key`.
const MAX_KEY_LEN: usize = 255;

/// The `Idempotency-Key` header, checked.
pub(crate) fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
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
    let key = idempotency_key(&headers)?;
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
            Some(form::urlencoded_fields(&body))
        }
        "multipart/form-data" => {
            Some(form::multipart_fields(content_type.unwrap_or_default(), body.clone()).await?)
        }
        _ => None,
    };
    if let Some(fields) = fields {
        let options = IngestOptions { original: Some(body), ..options };
        return post_form(&ingestor, &name, fields, query.get("redirect"), options).await;
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

fn looks_like_json(body: &[u8]) -> bool {
    matches!(body.iter().find(|b| !b.is_ascii_whitespace()), Some(b'{') | Some(b'['))
}

/// A browser form: one record; a 303 to the success page (or to the error page, with the
/// reason, when the record was rejected), or the JSON answer when no page is configured.
async fn post_form(
    ingestor: &Ingestor,
    name: &TableName,
    fields: Vec<(String, String)>,
    redirect: Option<&String>,
    options: IngestOptions,
) -> Result<Response, ApiError> {
    let plan = match ingestor.plan(name).await {
        Ok(plan) => Some(plan),
        Err(Error::Catalog(tarn_catalog::Error::TableNotFound { .. })) => None,
        Err(e) => return Err(e.into()),
    };
    let forms = plan.as_ref().map(|p| p.definition.spec.forms.clone()).unwrap_or_default();
    if let Some(target) = redirect {
        form::check_redirect(&forms, target)?;
    }
    let success = redirect.cloned().or(forms.success_url.clone());
    let record = match &plan {
        Some(plan) => form::record(plan, fields),
        // A new table: all text, created from this first form.
        None => {
            let object: serde_json::Map<String, serde_json::Value> = fields
                .into_iter()
                .map(|(k, v)| (k, if v.is_empty() { serde_json::Value::Null } else { v.into() }))
                .collect();
            FormRecord::Record(Bytes::from(serde_json::Value::Object(object).to_string()))
        }
    };
    let body = match record {
        FormRecord::Record(body) => body,
        FormRecord::Bot => {
            tracing::info!(table = %name, "dropped a form post that filled the honeypot field");
            return Ok(match success {
                Some(url) => Redirect::to(&url).into_response(),
                None => (
                    StatusCode::ACCEPTED,
                    Json(serde_json::json!({"table": name.to_string(), "accepted": 1})),
                )
                    .into_response(),
            });
        }
    };
    let options = IngestOptions { source: Source::Form, ..options };
    let receipt = ingestor.ingest(name, body, Format::Json, options).await?;
    if receipt.rejected > 0 {
        let reason = receipt.errors.first().cloned().unwrap_or_else(|| "rejected".into());
        if let Some(url) = forms.error_url.clone().or(success) {
            return Ok(Redirect::to(&form::with_param(&url, "error", &reason)).into_response());
        }
        return Ok((StatusCode::UNPROCESSABLE_ENTITY, Json(receipt)).into_response());
    }
    Ok(match success {
        Some(url) => Redirect::to(&url).into_response(),
        None => {
            let status =
                if receipt.version.is_some() { StatusCode::OK } else { StatusCode::ACCEPTED };
            (status, Json(receipt)).into_response()
        }
    })
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
