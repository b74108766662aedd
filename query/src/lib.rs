//! Tarn's query service.
//!
//! `tarn-query` answers SQL over the lake with an embedded DataFusion engine. Tables resolve
//! through the catalog (`events` and `default.events` both name the table `events` in the
//! namespace `default`) and are read at their latest Delta version on every query, so data is
//! visible as soon as it is committed. Delta tables are read by Tarn's own scan (module
//! `scan`: the log's statistics of every column, files pruned when the query is planned, a
//! plain DataFusion Parquet scan), or by deltalake's provider for tables with features it does
//! not read.
//!
//! SQL is read-only ([`policy`], one policy for every frontend): DDL, DML, `COPY`, `SET` and
//! other statements are refused before anything runs, and no SQL can read arbitrary files or
//! URLs (URL tables are off, and external tables are DDL). Results are encoded as JSON,
//! NDJSON, CSV, Arrow IPC or Parquet ([`BatchEncoder`]); async queries keep theirs in the
//! lake ([`queries`]). The Postgres wire protocol is served here too ([`pg`]); the HTTP API is
//! the `tarn-http` crate's; Arrow Flight SQL too ([`flight`]). With workers ([`cluster`]), query stages run on `tarn worker`
//! processes (datafusion-distributed), for every frontend alike. Errors say whose problem
//! they are ([`Error`], with a [`tarn_lake::ErrorKind`]).
//!
//! It never writes user tables.
//!
//! ```no_run
//! # async fn demo(catalog: std::sync::Arc<tarn_catalog::Catalog>) -> Result<(), tarn_query::Error> {
//! use futures::TryStreamExt;
//! use tarn_query::{QueryConfig, QueryEngine};
//!
//! let engine = QueryEngine::new(catalog, QueryConfig::default())?;
//! let stream = engine.execute("SELECT count(*) AS n FROM events").await?;
//! let batches: Vec<_> = stream.try_collect().await?;
//! # Ok(()) }
//! ```

pub mod cluster;
mod decimal;
mod engine;
mod error;
mod external;
pub mod flight;
mod format;
#[cfg(feature = "pg")]
pub mod observe;
pub mod pg;
pub mod policy;
mod provider;
pub mod queries;
mod scan;
mod shared;
pub mod timetravel;
mod views;

pub use engine::{
    version_text, Admission, LogicalQuery, PlannedQuery, QueryConfig, QueryEngine, Ticket,
    POSTGRES_VERSION,
};
pub use error::{Error, Result};
pub use format::{BatchEncoder, OutputFormat, Trailer};
pub use provider::{TableRead, CATALOG_NAME};
pub use scan::DeltaReader;
