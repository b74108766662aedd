//! Tarn's ingest service.
//!
//! `tarn-ingest` turns request bodies into rows of Delta tables: it decodes JSON (an object,
//! an array of objects, or a stream of objects) and NDJSON with arrow-json against the table's
//! schema, creates unknown tables with an inferred schema when auto-create is on, and appends
//! each request as one Delta commit. Bad input is refused as a whole with a message naming the
//! line and field; nothing of such a request is appended.
//!
//! It never answers queries. The write-ahead log, buffering, data contracts and file loads grow
//! here in later versions.
//!
//! ```no_run
//! # async fn demo(catalog: std::sync::Arc<tarn_catalog::Catalog>) -> Result<(), tarn_ingest::Error> {
//! use tarn_catalog::TableName;
//! use tarn_ingest::{Format, IngestConfig, Ingestor};
//!
//! let ingestor = Ingestor::new(catalog, IngestConfig::default());
//! let body = bytes::Bytes::from_static(br#"{"event": "view", "sku": "A-1"}
//! {"event": "cart", "sku": "A-1"}"#);
//! let receipt = ingestor.ingest(&TableName::parse("events")?, body, Format::Ndjson).await?;
//! assert_eq!(receipt.accepted, 2);
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod decode;
mod error;
mod ingestor;
mod router;

pub use decode::{decode, infer_schema, DecodeError, Format};
pub use error::{Error, Result};
pub use ingestor::{IngestConfig, IngestReceipt, Ingestor};
pub use router::router;
