//! Tarn's catalog.
//!
//! `tarn-catalog` knows which tables exist and what they are. Table definitions are JSON
//! documents stored in the lake itself, one per revision under
//! `_tarn/catalog/tables/<namespace>/<table>/<revision>.json`, each written with a conditional
//! create, so two servers sharing a lake never overwrite each other's changes (this works on
//! every store, local disks included, where conditional updates do not). Schema and
//! statistics come from each table's Delta log, which stays the source of truth for data.
//!
//! Three words, three things:
//!
//! * a **definition** ([`TableDefinition`]) is the catalog's entry for a table: its name,
//!   location, revision, who made it, and for crawled tables where their data is;
//! * a **spec** ([`TableSpec`]) is what a user declares about a table (the body of
//!   `PUT /v1/tables/{table}`, a `[[tables]]` entry of `tarn.toml`): typed columns, a unique
//!   key, rules and derived columns as SQL expressions, raw backup, flush thresholds, form
//!   settings; every definition holds one (empty for tables with an inferred schema);
//! * a **contract** ([`Contract`]) is a spec compiled with DataFusion, ready to apply to
//!   decoded rows; ingest applies it.
//!
//! It also holds the API keys and their scopes ([`auth`]), which every frontend checks the
//! same way (the HTTP API per route, the Postgres endpoint at login).
//!
//! The crawler ([`crawl`]) registers data already in storage (Delta tables written by other
//! tools, prefixes of Parquet / CSV / NDJSON files with Hive-style partitions) as external
//! tables, which Tarn reads in place and never writes.
//!
//! It never moves data: ingest appends, query reads.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use tarn_catalog::{Catalog, TableName};
//! use tarn_lake::{Lake, LakeOptions};
//!
//! let lake = Arc::new(Lake::open("./lake", LakeOptions::default()).await?);
//! let catalog = Catalog::new(lake);
//! for table in catalog.list().await? {
//!     println!("{}", table.name());
//! }
//! let info = catalog.describe(&TableName::parse("events")?).await?;
//! println!("{} rows", info.stats.rows.unwrap_or(0));
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub mod auth;
mod catalog;
pub mod companion;
mod contract;
pub mod crawl;
mod definition;
mod error;
pub mod limit;
mod name;
pub mod spec;
mod types;

pub use catalog::{Catalog, DefineStatus, Defined, TableInfo, DEFINITION_TTL};
pub use contract::{storable, CompiledDerived, CompiledExpr, CompiledRule, Contract, COMMENT_KEY};
pub use crawl::{CrawlFrom, CrawlLocation, CrawlOptions, CrawlReport, CrawledTable, Crawler};
pub use definition::{ColumnInfo, ExternalColumn, ExternalFormat, ExternalSource, TableDefinition};
pub use error::{Error, Result};
pub use name::{TableName, DEFAULT_NAMESPACE, SYSTEM_NAMESPACE};
pub use spec::{ColumnSpec, ColumnType, TableSpec};
pub use types::type_name;
