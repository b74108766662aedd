//! The catalog API: `GET /v1/namespaces`, `GET /v1/tables`, `GET`/`PUT`/`DELETE
//! /v1/tables/{table}`, `GET /v1/tables/{table}/history`, and the crawler's `POST /v1/crawl`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use tarn_catalog::{Catalog, CrawlFrom, CrawlOptions, Crawler, DefineStatus, TableName, TableSpec};

use crate::auth::{get, post, put, Need, Routes};
use crate::error::ErrorBody;
use crate::openapi::{CrawlReport, History, NamespaceList, TableDefinition, TableInfo, TableList};
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

/// List namespaces
///
/// Every namespace with its number of tables (`default` always).
///
/// Scope: `query`.
#[utoipa::path(
    get,
    path = "/v1/namespaces",
    tag = "catalog",
    responses(
        (status = 200, description = "The namespaces", body = NamespaceList),
        (status = 403, description = "The key lacks the `query` scope", body = ErrorBody),
        (status = 503, description = "Storage is unavailable", body = ErrorBody),
    )
)]
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

/// List tables
///
/// Every table of every namespace, with its partitioning, owner and external source.
///
/// Scope: `query`.
#[utoipa::path(
    get,
    path = "/v1/tables",
    tag = "catalog",
    responses(
        (status = 200, description = "The tables", body = TableList),
        (status = 403, description = "The key lacks the `query` scope", body = ErrorBody),
        (status = 503, description = "Storage is unavailable", body = ErrorBody),
    )
)]
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

/// Describe a table
///
/// The table's definition (its contract), columns and statistics.
///
/// Scope: `query`.
#[utoipa::path(
    get,
    path = "/v1/tables/{table}",
    tag = "catalog",
    params(("table" = String, Path, description = "The table: `name` or `namespace.name`")),
    responses(
        (status = 200, description = "The table", body = TableInfo),
        (status = 400, description = "The table name is not valid", body = ErrorBody),
        (status = 404, description = "No such table", body = ErrorBody),
        (status = 403, description = "The key lacks the `query` scope", body = ErrorBody),
        (status = 503, description = "Storage is unavailable", body = ErrorBody),
    )
)]
async fn get_table(
    State(catalog): State<Arc<Catalog>>,
    Path(table): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let name = TableName::parse(&table)?;
    let info = catalog.describe(&name).await?;
    Ok(Json(serde_json::to_value(info).map_err(ApiError::internal)?))
}

/// Define a table
///
/// Creates or changes a table from its definition (its contract). 201 when created, 200
/// otherwise; the answer is the table as `GET` shows it, with `"status"`.
///
/// Scope: `admin`.
#[utoipa::path(
    put,
    path = "/v1/tables/{table}",
    tag = "catalog",
    params(("table" = String, Path, description = "The table: `name` or `namespace.name`")),
    request_body(content = TableDefinition, content_type = "application/json", description = "The definition"),
    responses(
        (status = 200, description = "Changed or unchanged", body = TableInfo),
        (status = 201, description = "Created", body = TableInfo),
        (status = 400, description = "The name or the definition is not valid", body = ErrorBody),
        (status = 409, description = "The change is not allowed (e.g. a column's type changed, a table Tarn owns)", body = ErrorBody),
        (status = 413, description = "The definition is larger than the server takes", body = ErrorBody),
        (status = 422, description = "The definition does not fit the table's data", body = ErrorBody),
        (status = 403, description = "The key lacks the `admin` scope", body = ErrorBody),
        (status = 503, description = "Storage is unavailable", body = ErrorBody),
    )
)]
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

/// A table's history
///
/// Its Delta commits, newest first.
///
/// Scope: `query`.
#[utoipa::path(
    get,
    path = "/v1/tables/{table}/history",
    tag = "catalog",
    params(
        ("table" = String, Path, description = "The table: `name` or `namespace.name`"),
        ("limit" = Option<u64>, Query, minimum = 1, maximum = 10000, description = "Most commits to list (default 100)"),
    ),
    responses(
        (status = 200, description = "The commits", body = History),
        (status = 400, description = "The name or the limit is not valid", body = ErrorBody),
        (status = 404, description = "No such table", body = ErrorBody),
        (status = 403, description = "The key lacks the `query` scope", body = ErrorBody),
        (status = 503, description = "Storage is unavailable", body = ErrorBody),
    )
)]
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

/// Drop a table
///
/// Removes the table from the catalog, with its `_rejected` and `_raw` tables; with
/// `?purge=true` its data is deleted too (refused with 409 for a crawled table: Tarn never
/// deletes the data of a table it does not own).
///
/// Scope: `admin`.
#[utoipa::path(
    delete,
    path = "/v1/tables/{table}",
    tag = "catalog",
    params(
        ("table" = String, Path, description = "The table: `name` or `namespace.name`"),
        ("purge" = Option<bool>, Query, description = "Delete the table's data too (default false)"),
    ),
    responses(
        (status = 204, description = "Dropped"),
        (status = 400, description = "The name or a parameter is not valid", body = ErrorBody),
        (status = 404, description = "No such table", body = ErrorBody),
        (status = 409, description = "`purge=true` on a crawled table, or a table Tarn keeps for another", body = ErrorBody),
        (status = 403, description = "The key lacks the `admin` scope", body = ErrorBody),
        (status = 503, description = "Storage is unavailable", body = ErrorBody),
    )
)]
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
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CrawlRequest {
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

/// Crawl a location
///
/// Registers the Delta tables and Parquet / CSV / NDJSON prefixes under a location as
/// external tables; answers what it found, per table `created`, `updated` or `unchanged`.
///
/// Scope: `admin`.
#[utoipa::path(
    post,
    path = "/v1/crawl",
    tag = "catalog",
    request_body(content = CrawlRequest, content_type = "application/json", description = "Where to crawl"),
    responses(
        (status = 200, description = "What the crawl found and did", body = CrawlReport),
        (status = 400, description = "The request or the location is not valid", body = ErrorBody),
        (status = 403, description = "The key lacks the `admin` scope, or the location is outside what the server may crawl", body = ErrorBody),
        (status = 404, description = "Nothing at the location", body = ErrorBody),
        (status = 503, description = "Storage is unavailable", body = ErrorBody),
    )
)]
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
