//! What an async query is told and tells: its request, its status, its failure.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tarn_lake::{Classify, ErrorKind};

use crate::provider::TableRead;
use crate::Error;

/// The life of an async query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
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

impl QueryState {
    pub(crate) fn is_finished(self) -> bool {
        !matches!(self, QueryState::Queued | QueryState::Running)
    }
}

/// A column of a result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultColumn {
    /// Column name.
    pub name: String,
    /// Type name (as the catalog shows types).
    #[serde(rename = "type")]
    pub data_type: String,
}

/// Why a query failed: the kind of failure (the same names as the `code` of the HTTP API's
/// error bodies: `bad_request`, `timeout`, ...) and what went wrong.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueryError {
    /// What kind of failure.
    #[serde(rename = "code")]
    pub kind: ErrorKind,
    /// What went wrong (for a bug, only that: the details are in the server's log).
    pub message: String,
}

impl QueryError {
    /// The failure of `e`, as kept in the query's status.
    pub(crate) fn of(e: &Error) -> Self {
        let kind = e.kind();
        let message = if kind == ErrorKind::Internal {
            tracing::error!(error = %e, "an async query failed on a bug");
            "internal error; the server log has the details under this query's id".to_string()
        } else {
            e.to_string()
        };
        QueryError { kind, message }
    }
}

/// What `GET /v1/queries/{id}` answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueryStatus {
    /// The query's id.
    pub id: String,
    /// Where it is in its life.
    pub state: QueryState,
    /// The SQL text.
    pub sql: String,
    /// When it was submitted.
    pub submitted_at: DateTime<Utc>,
    /// When it got a slot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// Milliseconds it waited for a slot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued_ms: Option<u64>,
    /// Milliseconds from its start to its end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_ms: Option<u64>,
    /// Rows of the result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    /// Bytes read from data files (0 when the result was reused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_scanned: Option<u64>,
    /// Bytes spilled to disk because the query's operators ran out of memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spilled_bytes: Option<u64>,
    /// Size of the stored result (Parquet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_bytes: Option<u64>,
    /// The tables read, at the versions read.
    pub tables: Vec<TableRead>,
    /// Whether the result was served from an earlier query's.
    pub reused: bool,
    /// The earlier query whose result was reused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reused_from: Option<String>,
    /// The result's columns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub columns: Option<Vec<ResultColumn>>,
    /// When the result will be deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<QueryError>,
    /// The stored result, relative to the lake root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_path: Option<String>,
}

/// What `POST /v1/queries` takes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryRequest {
    /// The SQL text.
    pub sql: String,
    /// Whether an earlier query's result may answer this one (default true).
    #[serde(default = "yes")]
    pub reuse: bool,
}

fn yes() -> bool {
    true
}

/// The columns of a result schema, as the API shows them.
pub fn columns_of(schema: &arrow::datatypes::Schema) -> Vec<ResultColumn> {
    schema
        .fields()
        .iter()
        .map(|f| ResultColumn {
            name: f.name().clone(),
            data_type: tarn_catalog::type_name(f.data_type()),
        })
        .collect()
}
