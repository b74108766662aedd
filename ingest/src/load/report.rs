//! What a load is given and what it answers.

use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use bytes::Bytes;
use futures::Stream;
use serde::Serialize;
use tarn_catalog::TableName;

use crate::{FileFormat, Source};

/// How far a load has come; shared with a progress display.
#[derive(Debug, Default)]
pub struct LoadProgress {
    /// Bytes of the file read so far.
    pub bytes: AtomicU64,
    /// Records read so far.
    pub records: AtomicU64,
}

/// What a load did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LoadReport {
    /// The qualified table name.
    pub table: String,
    /// The file, as named by its source.
    pub file: String,
    /// Rows appended.
    pub rows: u64,
    /// Rows that broke the contract (in `<table>_rejected`).
    pub rejected: u64,
    /// Rows whose unique key was in the table already.
    pub duplicates: u64,
    /// The first few rejection reasons.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// Delta commits made.
    pub commits: u64,
    /// Chunks found committed by an earlier attempt of the same load and skipped.
    pub skipped_chunks: u64,
    /// Size of the file.
    pub bytes: u64,
    /// How long it took.
    pub seconds: f64,
    /// True when this load created the table.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub created: bool,
}

impl LoadReport {
    /// Rows (appended, rejected and duplicate) per second.
    pub fn rows_per_second(&self) -> f64 {
        (self.rows + self.rejected + self.duplicates) as f64 / self.seconds.max(1e-9)
    }
}

/// One load of a local file.
#[derive(Debug, Clone)]
pub struct FileLoad {
    /// The table to load into.
    pub table: TableName,
    /// The file, on local disk.
    pub path: std::path::PathBuf,
    /// How it is laid out.
    pub format: FileFormat,
    /// Names the load: the same id resumes an interrupted load of the same file.
    pub load_id: String,
    /// Where the records come from, as `<table>_rejected` and `<table>_raw` record it.
    pub source: Source,
    /// Updated as the file is read.
    pub progress: Arc<LoadProgress>,
    /// For the raw backup (`raw_backup`): where in the lake the original file is kept. `None`
    /// copies it to `_tarn/raw/<namespace>/<table>/<load id>/`.
    pub raw_object: Option<String>,
}

/// A file arriving as a stream of bytes (an upload), to be spooled to local disk and loaded.
pub struct Upload {
    /// The table to load into.
    pub table: TableName,
    /// The file's name, as the client gave it (no path).
    pub file_name: String,
    /// How it is laid out.
    pub format: FileFormat,
    /// An idempotency key: a retried upload with the same key resumes the earlier load
    /// instead of loading the file twice.
    pub key: Option<String>,
    /// The bytes.
    pub body: Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>,
}

/// The load id of one version of a file, from what identifies it (its place, size, time...):
/// the same version loaded again gets the same id, so the load resumes instead of doubling.
pub fn load_id_for(identity: &str) -> String {
    format!("{:032x}", xxhash_rust::xxh3::xxh3_128(identity.as_bytes()))
}

/// The Delta `txn` application id of a load.
pub fn load_app_id(load_id: &str) -> String {
    format!("tarn-load-{load_id}")
}
