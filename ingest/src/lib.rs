//! Tarn's ingest service.
//!
//! `tarn-ingest` turns request bodies into rows of Delta tables, durably and exactly once:
//!
//! 1. decode the body (JSON object, array or stream; NDJSON; gzip or zstd) with arrow-json
//!    against the table's schema — unknown tables are created with an inferred schema when
//!    auto-create is on; bad input is refused as a whole, naming the line and field;
//! 2. append it to the local write-ahead log ([`wal`]) with group commit (one `fsync` for all
//!    requests that arrived meanwhile) and answer 202 — or, with `?wait=commit`, 200 after the
//!    Delta commit that holds it;
//! 3. flush each table's buffer ([`buffer`]) as one Delta commit when rows, bytes or age cross
//!    the thresholds; each commit carries a Delta `txn` (app id = node id + table, version =
//!    last WAL sequence number), so a restart replays exactly the records the lake lacks.
//!
//! `Idempotency-Key` makes retries safe ([`idempotency`]); a full WAL (storage unreachable)
//! answers 503 with `Retry-After`; small files are compacted, checkpoints written and old files
//! vacuumed in the background ([`maintenance`]). It never answers queries.
//!
//! ```no_run
//! # async fn demo(catalog: std::sync::Arc<tarn_catalog::Catalog>) -> Result<(), tarn_ingest::Error> {
//! use tarn_catalog::TableName;
//! use tarn_ingest::{Format, IngestConfig, IngestOptions, Ingestor};
//!
//! let ingestor = Ingestor::start(catalog, IngestConfig::default()).await?;
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
pub mod contract;
mod csv;
mod decode;
pub mod dropzone;
mod error;
pub mod form;
pub mod idempotency;
mod ingestor;
pub mod load;
pub mod maintenance;
mod router;
pub mod unique;
pub mod wal;

pub use buffer::FlushConfig;
pub use coerce::{coerce, BadValue};
pub use decode::{decode, decode_lenient, infer_schema, DecodeError, Format, Lenient};
pub use error::{Error, Result};
pub use ingestor::{
    CorsGrant, IngestConfig, IngestOptions, IngestReceipt, Ingestor, Source, TablePlan,
};
pub use load::{FileFormat, LoadProgress, LoadReport};
pub use maintenance::MaintenanceConfig;
pub use router::router;
pub use wal::WalConfig;
