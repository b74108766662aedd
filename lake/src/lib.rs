//! Tarn's storage layer.
//!
//! `tarn-lake` owns everything that touches bytes at rest:
//!
//! * parsing a lake location (`./lake`, `/srv/lake`, `file:///srv/lake`, `s3://bucket/prefix`,
//!   `memory://`) into a [`LakeLocation`];
//! * building the object store for it, with AWS credentials resolved through the standard
//!   aws-config chain (environment, profile, web identity, IMDS) and `AWS_ENDPOINT_URL`,
//!   `AWS_REGION`, `AWS_ALLOW_HTTP` honoured for MinIO and other S3-compatible servers;
//! * Delta tables: create, append Arrow batches as one commit, write a query's result as one
//!   commit (append, replace, merge), read the current version, the history and the
//!   statistics recorded in the Delta log.
//!
//! It never speaks HTTP, never parses user SQL and holds no table policy: those belong to the
//! catalog, ingest and query crates.
//!
//! Commits on S3 rely on conditional put (`If-None-Match: *`), the object_store 0.13 default;
//! Tarn never enables `AWS_S3_ALLOW_UNSAFE_RENAME`, so two processes appending to one table never
//! lose a commit.
//!
//! ```no_run
//! # async fn demo() -> tarn_lake::Result<()> {
//! use std::sync::Arc;
//! use arrow::array::{Int64Array, RecordBatch};
//! use arrow::datatypes::{DataType, Field, Schema};
//! use tarn_lake::{Lake, LakeOptions};
//!
//! let lake = Lake::open("./lake", LakeOptions::default()).await?;
//! let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, true)]));
//! let table = lake.create_table("default/numbers", &schema, &[]).await?;
//! let batch = RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![1, 2, 3]))])?;
//! let table = table.append(vec![batch]).await?;
//! assert_eq!(table.stats().rows, Some(3));
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod changes;
pub mod cluster;
mod compact;
mod error;
mod kind;
mod location;
mod maintenance;
mod stage;
mod storage;
mod table;
#[cfg(feature = "test-util")]
pub mod test_util;
mod write;

pub use error::{is_transient_store_error, Error, Result, STORAGE_RETRY_AFTER};
pub use kind::{Classify, ErrorKind};
pub use location::LakeLocation;
pub use maintenance::{Compaction, Vacuum};
pub use stage::{Stage, Staged};
pub use storage::{Lake, LakeOptions};
pub use table::{Commit, LakeTable, TableStats};
pub use write::WriteMode;

/// The Delta Lake implementation Tarn is built on, re-exported so that the other crates use the
/// very same version.
pub use deltalake;
