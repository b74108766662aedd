//! Tarn's ingest service.
//!
//! `tarn-ingest` turns request bodies, forms and files into rows of Delta tables, durably and
//! exactly once:
//!
//! 1. decode the body (JSON object, array or stream; NDJSON; CSV; a browser [`form`]; gzip or
//!    zstd) with arrow-json / arrow-csv — unknown tables are created with an inferred schema
//!    when auto-create is on;
//! 2. check it: for a table with a declared contract, coerce each value to its column's type
//!    ([`coerce`]), enforce required columns, compute derived columns and evaluate rules with
//!    DataFusion ([`contract`]); rows that fail go to `<table>_rejected` with the reason, and
//!    rows whose [`unique`] key is taken are left out. A table with an inferred schema takes
//!    the whole body or, naming the line and field, none of it;
//! 3. append what it will write — rows, rejected rows, the raw payload — to the local
//!    write-ahead log ([`wal`]) as Arrow IPC, with group commit (one `fsync` for all requests
//!    that arrived meanwhile), and answer 202 — or, with `?wait=commit`, 200 after the Delta
//!    commit that holds it;
//! 4. flush each table's buffer ([`buffer`]) as one Delta commit when rows, bytes or age cross
//!    the thresholds; each commit carries a Delta `txn` (app id = node id + table, version =
//!    last WAL sequence number), so a restart replays exactly the records the lake lacks.
//!
//! Files ([`load`]: uploads, `tarn load`, the [`dropzone`]) skip the write-ahead log — the file
//! is the durable copy — and commit in chunks whose `txn` names the load, so an interrupted
//! load resumes without loading anything twice. A [`Loader`] needs only the catalog.
//!
//! Both paths share [`prepare`] (decode → coerce → required values → derived columns → rules,
//! pure) and [`Tables`] (each table's plan, tables created on first write, the unique-key
//! indexes). `Idempotency-Key` makes retries safe ([`idempotency`]); a full WAL (storage
//! unreachable) answers with a retryable error; after a restart the log is replayed in the
//! background ([`replay`]) while ingest goes on; small files are compacted, checkpoints
//! written and old files vacuumed in the background ([`maintenance`]). It never answers
//! queries, and knows no HTTP: the `tarn-http` crate puts it on the wire.
//!
//! ```no_run
//! # async fn demo(catalog: std::sync::Arc<tarn_catalog::Catalog>) -> Result<(), tarn_ingest::Error> {
//! use std::sync::Arc;
//! use tarn_catalog::TableName;
//! use tarn_ingest::{Format, IngestConfig, IngestOptions, Ingestor, Tables};
//!
//! let config = IngestConfig::default();
//! let tables = Arc::new(Tables::new(catalog, config.tables()));
//! let ingestor = Ingestor::start(tables, config).await?;
//! let body = bytes::Bytes::from_static(br#"{"event": "view", "sku": "A-1"}
//! {"event": "cart", "sku": "A-1"}"#);
//! let options = IngestOptions { wait_for_commit: true, ..Default::default() };
//! let receipt = ingestor.ingest(&TableName::parse("events")?, body, Format::Ndjson, options).await?;
//! assert_eq!(receipt.accepted, 2);
//! ingestor.shutdown().await;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub mod buffer;
mod coerce;
mod config;
pub mod contract;
mod decode;
pub mod dropzone;
pub mod encoding;
mod error;
pub mod events;
pub mod form;
pub mod idempotency;
mod ingestor;
pub mod load;
pub mod maintenance;
mod plan;
pub mod prepare;
pub mod replay;
mod snapshot;
pub mod stats;
mod submit;
pub mod unique;
pub mod wal;

pub use buffer::FlushConfig;
pub use coerce::{coerce, BadValue};
pub use config::{CorsGrant, IngestConfig, IngestOptions, IngestReceipt, Source};
use decode::csv;
pub use decode::{decode, decode_lenient, infer_schema, DecodeError, Format, Lenient, MAX_NESTING};
pub use dropzone::DropZoneConfig;
pub use error::{Error, Result};
pub use events::{Events, IngestEvent};
pub use ingestor::{IngestStatus, Ingestor, OpenIngest, TableStatus, WalStatus};
pub use load::{
    load_id_for, FileFormat, FileLoad, LoadConfig, LoadProgress, LoadReport, Loader, Upload,
    LOAD_CHUNK_BYTES, LOAD_CHUNK_ROWS, MAX_JSON_FILE_BYTES, MAX_LINE_BYTES,
};
pub use maintenance::MaintenanceConfig;
pub use plan::{TablePlan, Tables, TablesConfig, UniqueKeyScope};
pub use stats::{IngestStats, LastCommit, TableStats};
pub use submit::FormAnswer;
pub use wal::WalConfig;
