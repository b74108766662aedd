//! The settings of ingest, and how a request wants to be treated.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::buffer::FlushConfig;
use crate::dropzone::DropZoneConfig;
use crate::load::LoadConfig;
use crate::maintenance::MaintenanceConfig;
use crate::plan::{TablesConfig, UniqueKeyScope};
use crate::wal::WalConfig;

/// Settings of the ingest service.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct IngestConfig {
    /// Create unknown tables on first write, with a schema inferred from that write.
    pub auto_create: bool,
    /// Largest accepted request body, in bytes (after decompression).
    pub max_body_bytes: usize,
    /// Largest accepted file upload, in bytes.
    pub max_upload_bytes: u64,
    /// The write-ahead log.
    pub wal: WalConfig,
    /// When buffers become Delta commits.
    pub flush: FlushConfig,
    /// How long an `Idempotency-Key` is remembered, in seconds.
    pub idempotency_ttl_secs: u64,
    /// How long `?wait=commit` waits for the commit before answering 202 anyway, in ms.
    pub wait_timeout_ms: u64,
    /// How long shutdown keeps trying to commit buffered records, in ms.
    pub shutdown_timeout_ms: u64,
    /// Background compaction, checkpoints and vacuum.
    pub maintenance: MaintenanceConfig,
    /// Most keys the unique-key index of one table holds.
    pub unique_key_max: usize,
    /// How far a declared `unique_key` is enforced (`lake`: across every process writing into
    /// the lake, checked again at commit; `node`: each process its own).
    pub unique_key_scope: UniqueKeyScope,
    /// The drop zone (`_tarn/landing/<table>/`).
    pub dropzone: DropZoneConfig,
    /// Origins allowed to post to tables besides each table's `forms.allowed_origins`: those
    /// of publishable API keys.
    pub cors: Vec<CorsGrant>,
}

/// Browser pages from `origins` may post to `tables` (qualified names, or `*` for all).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CorsGrant {
    /// Qualified table names, or `*`.
    pub tables: Vec<String>,
    /// Origins such as `https://www.example.com`.
    pub origins: Vec<String>,
}

impl IngestConfig {
    /// The settings of [`crate::Tables`].
    pub fn tables(&self) -> TablesConfig {
        TablesConfig {
            auto_create: self.auto_create,
            unique_key_max: self.unique_key_max,
            unique_key_scope: self.unique_key_scope,
            snapshots: Some(self.wal.dir.join("tables")),
        }
    }

    /// The settings of a [`crate::Loader`] of this process (its spool is under the WAL
    /// directory, on local disk).
    pub fn load(&self) -> LoadConfig {
        LoadConfig {
            spool_dir: self.wal.dir.join("spool"),
            max_upload_bytes: self.max_upload_bytes,
        }
    }
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            auto_create: true,
            max_body_bytes: 64 * 1024 * 1024,
            max_upload_bytes: 16 * 1024 * 1024 * 1024,
            wal: WalConfig::default(),
            flush: FlushConfig::default(),
            idempotency_ttl_secs: 24 * 3600,
            wait_timeout_ms: 30_000,
            shutdown_timeout_ms: 30_000,
            maintenance: MaintenanceConfig::default(),
            unique_key_max: 20_000_000,
            unique_key_scope: UniqueKeyScope::default(),
            cors: Vec::new(),
            dropzone: DropZoneConfig::default(),
        }
    }
}

/// Where records came from, as `<table>_rejected` and `<table>_raw` record it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Source {
    /// A request body on `/v1/ingest`.
    #[default]
    Http,
    /// A browser form on `/v1/ingest`.
    Form,
    /// A file (uploaded, loaded by `tarn load`, or dropped), by name.
    File(String),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Http => f.write_str("http"),
            Source::Form => f.write_str("form"),
            Source::File(name) => write!(f, "file:{name}"),
        }
    }
}

/// How a request wants to be treated.
#[derive(Debug, Clone, Default)]
pub struct IngestOptions {
    /// The `Idempotency-Key` header.
    pub key: Option<String>,
    /// `?wait=commit`: answer after the Delta commit that holds the records.
    pub wait_for_commit: bool,
    /// Where the records come from.
    pub source: Source,
    /// The request's content type, kept with the raw payload.
    pub content_type: Option<String>,
    /// The payload as received, when the body handed to [`Ingestor::ingest`] is a translation
    /// of it (a form's fields as a JSON record): what `raw_backup` keeps.
    pub original: Option<Bytes>,
}

/// The answer to an ingest request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IngestReceipt {
    /// The qualified table name.
    pub table: String,
    /// Records accepted (durable in the write-ahead log).
    pub accepted: usize,
    /// Records that broke the table's contract; they are in `<table>_rejected`.
    pub rejected: usize,
    /// Records left out because their unique key is in the table already.
    pub duplicates: usize,
    /// The first few reasons for rejected records.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// The request's sequence number in the write-ahead log.
    pub seq: u64,
    /// The Delta version that holds the records (only with `?wait=commit`, once committed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// True when this request created the table.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub created: bool,
    /// True when this answers a retry of an earlier request with the same `Idempotency-Key`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub replayed: bool,
}
