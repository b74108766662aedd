//! The schemas of SQL and async queries: mirrors of `tarn_query`'s types.

use serde_json::Value;
use utoipa::ToSchema;

use crate::error::ErrorDetail;

/// The body of `POST /v1/queries` as JSON (`tarn_query::queries::QueryRequest`). Unknown
/// fields are refused.
#[derive(ToSchema)]
pub struct QueryRequest {
    /// The SQL text (at most 256 KiB).
    pub sql: String,
    /// Whether an earlier query's result may answer this one (default true).
    #[schema(required = false, default = true)]
    pub reuse: bool,
}

/// The life of an async query.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum QueryState {
    /// Waiting for a slot.
    Queued,
    /// Running.
    Running,
    /// Done; the result can be read.
    Succeeded,
    /// Stopped by an error (see `error`).
    Failed,
    /// Stopped by `DELETE /v1/queries/{id}`.
    Cancelled,
}

/// An async query's status (`tarn_query::queries::QueryStatus`). Fields without a value are
/// absent.
#[derive(ToSchema)]
pub struct QueryStatus {
    /// The query's id.
    pub id: String,
    /// Where it is in its life.
    pub state: QueryState,
    /// The SQL text.
    pub sql: String,
    /// When it was submitted.
    #[schema(format = DateTime)]
    pub submitted_at: String,
    /// When it got a slot.
    #[schema(format = DateTime, nullable = false)]
    pub started_at: Option<String>,
    /// When it finished.
    #[schema(format = DateTime, nullable = false)]
    pub finished_at: Option<String>,
    /// Milliseconds it waited for a slot.
    #[schema(nullable = false)]
    pub queued_ms: Option<u64>,
    /// Milliseconds from its start to its end.
    #[schema(nullable = false)]
    pub run_ms: Option<u64>,
    /// Rows of the result.
    #[schema(nullable = false)]
    pub rows: Option<u64>,
    /// Bytes read from data files (0 when the result was reused).
    #[schema(nullable = false)]
    pub bytes_scanned: Option<u64>,
    /// Bytes spilled to disk because the query's operators ran out of memory.
    #[schema(nullable = false)]
    pub spilled_bytes: Option<u64>,
    /// Size of the stored result (Parquet).
    #[schema(nullable = false)]
    pub result_bytes: Option<u64>,
    /// The tables read, at the versions read.
    pub tables: Vec<TableRead>,
    /// Whether the result was served from an earlier query's.
    pub reused: bool,
    /// The earlier query whose result was reused.
    #[schema(nullable = false)]
    pub reused_from: Option<String>,
    /// The result's columns.
    #[schema(nullable = false)]
    pub columns: Option<Vec<ResultColumn>>,
    /// When the result will be deleted.
    #[schema(format = DateTime, nullable = false)]
    pub expires_at: Option<String>,
    /// Why it failed.
    #[schema(nullable = false)]
    pub error: Option<ErrorDetail>,
    /// The stored result, relative to the lake root.
    #[schema(nullable = false)]
    pub result_path: Option<String>,
}

/// A table a query read, at the version it read (`tarn_query::provider::TableRead`).
#[derive(ToSchema)]
pub struct TableRead {
    /// The qualified name (`default.events`).
    pub table: String,
    /// The Delta version the query saw.
    pub version: u64,
    /// True when the query asked for this version (time travel); absent otherwise.
    #[schema(required = false)]
    pub time_travel: bool,
    /// True for a crawled table of files, read as a listing; absent otherwise.
    #[schema(required = false)]
    pub files: bool,
}

/// A column of a result.
#[derive(ToSchema)]
pub struct ResultColumn {
    /// Column name.
    pub name: String,
    /// Type name (as the catalog shows types).
    #[schema(rename = "type")]
    pub data_type: String,
}

/// A result as `application/json`: the columns, the rows as arrays of typed JSON values.
#[derive(ToSchema)]
pub struct JsonResult {
    /// The result's columns.
    pub columns: Vec<ResultColumn>,
    /// The rows, each an array of values in the columns' order.
    pub rows: Vec<Vec<Value>>,
    /// True when the result was cut at the server's row cap (absent otherwise).
    #[schema(required = false)]
    pub truncated: bool,
    /// Async results: where the next page starts (absent on the last page).
    #[schema(required = false)]
    pub next_page_token: String,
}
