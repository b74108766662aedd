//! The catalog API: `GET /v1/namespaces`, `GET /v1/tables`, `GET`/`PUT`/`DELETE
//! /v1/tables/{table}`, `GET /v1/tables/{table}/history`, and the crawler's `POST /v1/crawl`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post, put};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use tarn_catalog::{Catalog, CrawlFrom, CrawlOptions, Crawler, DefineStatus, TableName, TableSpec};

use crate::auth::{Need, Routes};
use crate::ApiError;

/// The catalog routes: reading needs the `query` scope, changing `admin`.
pub(crate) fn routes(routes: Routes<Arc<Catalog>>) -> Routes<Arc<Catalog>> {
    routes
        .route("/v1/namespaces", Need::Query, get(list_namespaces))
        .route("/v1/tables", Need::Query, get(list_tables))
        .route("/v1/tables/{table}", Need::Query, get(get_table))
        .route("/v1/tables/{table}", Need::Admin, put(put_table).delete(delete_table))
        .route("/v1/tables/{table}/history", Need::Query, get(history))
        .route("/v1/crawl", Need::Admin, post(crawl))
}

/// `GET /v1/namespaces`: every namespace with its number of tables (`default` always).
async fn list_namespaces(State(catalog): State<Arc<Catalog>>) -> Result<Json<Value>, ApiError> {
    let mut counts =
        std::collections::BTreeMap::from([(tarn_catalog::DEFAULT_NAMESPACE.to_string(), 0)]);
    for name in catalog.names().await? {
        *counts.entry(name.namespace().to_string()).or_insert(0) += 1;
    }
    let namespaces: Vec<Value> =
        counts.into_iter().map(|(name, tables)| json!({"name": name, "tables": tables})).collect();
    Ok(Json(json!({ "namespaces": namespaces })))
}

async fn list_tables(State(catalog): State<Arc<Catalog>>) -> Result<Json<Value>, ApiError> {
    let tables: Vec<Value> = catalog
        .list()
        .await?
        .into_iter()
        .map(|d| {
            json!({
                "name": d.name,
                "namespace": d.namespace,
                "qualified_name": format!("{}.{}", d.namespace, d.name),
                "partition_by": d.spec.partition_by,
                "declared": d.spec.is_declared(),
                "owner": d.owner,
                "external": d.external.as_ref().map(|e| json!({"url": e.url, "format": e.format})),
                "created_at": d.created_at,
            })
        })
        .collect();
    Ok(Json(json!({ "tables": tables })))
}

async fn get_table(
    State(catalog): State<Arc<Catalog>>,
    Path(table): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let name = TableName::parse(&table)?;
    let info = catalog.describe(&name).await?;
    Ok(Json(serde_json::to_value(info).map_err(ApiError::internal)?))
}

/// `PUT /v1/tables/{table}`: create or change a table from its definition. 201 when created,
/// 200 otherwise; the answer is the table as `GET` shows it, with `"status"`.
async fn put_table(
    State(catalog): State<Arc<Catalog>>,
    Path(table): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::response::Response, ApiError> {
    let name = TableName::parse(&table)?;
    let body = body.map_err(ApiError::from_body)?;
    let value: Value = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "the definition is not valid JSON (line {}, column {}): {e}",
            e.line(),
            e.column()
        ))
    })?;
    let spec = TableSpec::from_json(value, &[])?;
    let defined = catalog.define(&name, spec, "api").await?;
    let info = catalog.describe(&name).await?;
    let mut answer = serde_json::to_value(info).map_err(ApiError::internal)?;
    answer["status"] = json!(defined.status);
    let status = match defined.status {
        DefineStatus::Created => StatusCode::CREATED,
        DefineStatus::Updated | DefineStatus::Unchanged => StatusCode::OK,
    };
    Ok((status, Json(answer)).into_response())
}

#[derive(Deserialize)]
struct HistoryParams {
    limit: Option<usize>,
}

async fn history(
    State(catalog): State<Arc<Catalog>>,
    Path(table): Path<String>,
    params: Result<Query<HistoryParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(params) = params.map_err(ApiError::from_query)?;
    let name = TableName::parse(&table)?;
    let (_, table) = catalog.open(&name).await?;
    let limit = params.limit.unwrap_or(100).clamp(1, 10_000);
    let commits = table.history(limit).await?;
    Ok(Json(json!({ "table": name.to_string(), "commits": commits })))
}

#[derive(Deserialize)]
struct DeleteParams {
    #[serde(default)]
    purge: bool,
}

async fn delete_table(
    State(catalog): State<Arc<Catalog>>,
    Path(table): Path<String>,
    params: Result<Query<DeleteParams>, QueryRejection>,
) -> Result<StatusCode, ApiError> {
    let Query(params) = params.map_err(ApiError::from_query)?;
    let name = TableName::parse(&table)?;
    catalog.delete(&name, params.purge).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The body of `POST /v1/crawl`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CrawlRequest {
    /// `s3://bucket/prefix`, or a directory inside the lake (`imports/sales`, relative to the
    /// lake's root, or an absolute path / `file://` URL inside it).
    location: String,
    /// Namespace of new tables (default `default`).
    #[serde(default)]
    namespace: Option<String>,
    /// Put before the name of every new table.
    #[serde(default)]
    table_prefix: Option<String>,
}

/// `POST /v1/crawl`: registers the Delta tables and Parquet / CSV / NDJSON prefixes under a
/// location as external tables (see `tarn_catalog::crawl`); answers what it found, per table
/// `created`, `updated` (with the changes) or `unchanged`.
async fn crawl(
    State(catalog): State<Arc<Catalog>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = body.map_err(ApiError::from_body)?;
    let request: CrawlRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "the crawl request is not valid (line {}, column {}): {e}; send \
             {{\"location\": \"s3://bucket/prefix\", \"namespace\": \"default\"}}",
            e.line(),
            e.column()
        ))
    })?;
    let crawler = Crawler::new(&catalog);
    let location = crawler.location(&request.location, CrawlFrom::Api)?;
    let mut options = CrawlOptions::default();
    if let Some(namespace) = request.namespace {
        options.namespace = namespace.trim().to_ascii_lowercase();
    }
    if let Some(prefix) = request.table_prefix {
        options.table_prefix = prefix.trim().to_ascii_lowercase();
    }
    let report = crawler.crawl(&location, &options).await?;
    Ok(Json(serde_json::to_value(report).map_err(ApiError::internal)?))
}
