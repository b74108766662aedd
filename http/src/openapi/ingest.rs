//! The schemas of ingest's answers, and the operational ones (health, `whoami`): mirrors of
//! `tarn_ingest`'s types (see the module above).

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::error::ErrorBody;

/// `{"status": "ok"}` or `{"status": "ready"}`.
#[derive(ToSchema)]
pub struct HealthStatus {
    /// `ok` (`/healthz`) or `ready` (`/readyz`).
    #[schema(example = "ok")]
    pub status: String,
}

/// Whose key a request shows and what it may do.
#[derive(ToSchema)]
pub struct WhoAmI {
    /// True on a server without declared keys (everyone may do everything).
    pub open: bool,
    /// The key's name; null on an open server.
    #[schema(required = true)]
    pub key: Option<String>,
    /// The key's scopes (`admin`, `query`, `metrics`, `ingest:<table>`, `ingest:*`).
    pub scopes: Vec<String>,
}

/// The answer to an ingest request (`tarn_ingest::IngestReceipt`).
#[derive(Serialize, ToSchema)]
pub struct IngestReceipt {
    /// The qualified table name.
    pub table: String,
    /// Records accepted (durable in the write-ahead log).
    pub accepted: u64,
    /// Records that broke the table's contract; they are in `<table>_rejected`.
    pub rejected: u64,
    /// Records left out because their unique key is in the table already.
    pub duplicates: u64,
    /// The first few reasons for rejected records (absent when none).
    #[schema(required = false)]
    pub errors: Vec<String>,
    /// The request's sequence number in the write-ahead log.
    pub seq: u64,
    /// The Delta version that holds the records (only with `?wait=commit`, once committed).
    pub version: Option<u64>,
    /// True when this request created the table (absent otherwise).
    #[schema(required = false)]
    pub created: bool,
    /// True when this answers a retry of an earlier request with the same `Idempotency-Key`
    /// (absent otherwise).
    #[schema(required = false)]
    pub replayed: bool,
}

/// A browser form taken without a receipt (its flow answers before the records are written).
#[derive(Serialize, ToSchema)]
pub struct FormAccepted {
    /// The qualified table name.
    pub table: String,
    /// Always 1: the form's record.
    pub accepted: u64,
}

/// What 202 to an ingest request holds: a receipt; or, for a browser form whose flow answers
/// before its record is written, the table and `accepted: 1`.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum IngestAccepted {
    /// Durable in the write-ahead log.
    Receipt(IngestReceipt),
    /// A form's record taken.
    Form(FormAccepted),
}

/// What 422 to an ingest request holds: the error; or, for a browser form, its receipt with
/// the rejections.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum FormRejected {
    /// Records that do not fit the table.
    Error(ErrorBody),
    /// A form whose record broke the table's contract.
    Receipt(IngestReceipt),
}

/// What a file upload did (`tarn_ingest::LoadReport`).
#[derive(ToSchema)]
pub struct LoadReport {
    /// The qualified table name.
    pub table: String,
    /// The file, as named by `?name=` (`upload` without it).
    pub file: String,
    /// Rows appended.
    pub rows: u64,
    /// Rows that broke the contract (in `<table>_rejected`).
    pub rejected: u64,
    /// Rows whose unique key was in the table already (or committed by another writer while
    /// the load ran).
    pub duplicates: u64,
    /// The first few rejection reasons (absent when none).
    #[schema(required = false)]
    pub errors: Vec<String>,
    /// Delta commits made.
    pub commits: u64,
    /// Chunks found committed by an earlier attempt of the same load and skipped.
    pub skipped_chunks: u64,
    /// Size of the file.
    pub bytes: u64,
    /// How long it took.
    pub seconds: f64,
    /// True when this load created the table (absent otherwise).
    #[schema(required = false)]
    pub created: bool,
}

/// What ingest took since the server started (`tarn_ingest::IngestStatus`).
#[derive(ToSchema)]
pub struct IngestStatus {
    /// Per table ingest wrote to since the start.
    pub tables: Vec<TableIngest>,
    /// The write-ahead log now.
    pub wal: WalStatus,
}

/// One table's ingest since the start (`tarn_ingest::TableStatus`).
#[derive(ToSchema)]
pub struct TableIngest {
    /// The qualified name.
    pub table: String,
    /// Records taken.
    pub records: u64,
    /// Rows rejected by the contract.
    pub rejected: u64,
    /// Bytes of bodies and files taken.
    pub bytes: u64,
    /// Commits made.
    pub commits: u64,
    /// Rows acknowledged and then left out at commit, because another writer (another server
    /// on the lake) committed their unique key first.
    pub duplicates_dropped: u64,
    /// The latest commit (null before the first).
    #[schema(required = true, value_type = Option<Object>)]
    pub last_commit: Option<Value>,
    /// Rows durable in the log and buffered for the table's next commit.
    pub buffered: u64,
}

/// The write-ahead log's depth (`tarn_ingest::WalStatus`).
#[derive(ToSchema)]
pub struct WalStatus {
    /// Bytes in its segments.
    pub bytes: u64,
    /// Its segment files.
    pub segments: u64,
    /// How long the oldest record not yet committed has waited; null when all are committed.
    #[schema(required = true)]
    pub oldest_uncommitted_age_seconds: Option<f64>,
}
