//! The schemas of the catalog: tables, definitions, history, crawls; mirrors of
//! `tarn_catalog`'s and `tarn_lake`'s types.

use serde_json::Value;
use utoipa::ToSchema;

/// A namespace and how many tables it has.
#[derive(ToSchema)]
pub struct Namespace {
    /// The namespace.
    pub name: String,
    /// Its tables.
    pub tables: u64,
}

/// `GET /v1/namespaces`.
#[derive(ToSchema)]
pub struct NamespaceList {
    /// Every namespace (`default` always).
    pub namespaces: Vec<Namespace>,
}

/// Where the data of a crawled (external) table is.
#[derive(ToSchema)]
pub struct ExternalRef {
    /// The data's absolute URL.
    pub url: String,
    /// `delta`, `parquet`, `csv` or `ndjson`.
    pub format: String,
}

/// A table as `GET /v1/tables` lists it.
#[derive(ToSchema)]
pub struct TableSummary {
    /// The table name within its namespace.
    pub name: String,
    /// The namespace.
    pub namespace: String,
    /// `namespace.name`.
    pub qualified_name: String,
    /// Partition columns.
    pub partition_by: Vec<String>,
    /// Whether the table has a declared contract (columns), rather than an inferred schema.
    pub declared: bool,
    /// For tables Tarn keeps on behalf of another (`_rejected`, `_raw`): that table.
    #[schema(required = true)]
    pub owner: Option<String>,
    /// For crawled tables: where their data is.
    #[schema(required = true)]
    pub external: Option<ExternalRef>,
    /// When the entry was created.
    #[schema(format = DateTime)]
    pub created_at: String,
}

/// `GET /v1/tables`.
#[derive(ToSchema)]
pub struct TableList {
    /// Every table.
    pub tables: Vec<TableSummary>,
}

/// A column of a table.
#[derive(ToSchema)]
pub struct ColumnInfo {
    /// Column name.
    pub name: String,
    /// Type name.
    #[schema(rename = "type")]
    pub data_type: String,
    /// Whether the column may hold nulls.
    pub nullable: bool,
    /// The declared comment, if any (absent otherwise).
    #[schema(nullable = false)]
    pub comment: Option<String>,
    /// `declared`, `derived`, `added` or `inferred`.
    pub origin: String,
}

/// Statistics of a table's current version, from the Delta log (`tarn_lake::TableStats`).
#[derive(ToSchema)]
pub struct TableStats {
    /// The current Delta version.
    pub version: u64,
    /// Number of live data files.
    pub files: u64,
    /// Total size of the live data files in bytes.
    pub bytes: u64,
    /// Number of rows, when every file's statistics record it.
    #[schema(required = true)]
    pub rows: Option<u64>,
    /// When the current version was committed.
    #[schema(required = true, format = DateTime)]
    pub last_commit: Option<String>,
}

/// A table as the catalog shows it (`tarn_catalog::TableInfo`): its catalog entry, its
/// declared contract (the fields of a table definition, absent when empty), its columns and
/// statistics.
#[derive(ToSchema)]
pub struct TableInfo {
    /// The namespace.
    pub namespace: String,
    /// The table name within the namespace.
    pub name: String,
    /// Where the Delta table lives, relative to the lake root.
    pub location: String,
    /// When the entry was created.
    #[schema(format = DateTime)]
    pub created_at: String,
    /// `auto` (first ingest), `api` (`PUT`), `config` (`tarn.toml`), `tarn` or `crawler`.
    pub created_by: String,
    /// When the definition last changed (absent if never).
    #[schema(format = DateTime, nullable = false)]
    pub updated_at: Option<String>,
    /// Revision of the definition: 0 when created, one more with each change.
    pub revision: u64,
    /// For tables Tarn keeps on behalf of another: that table (absent otherwise).
    #[schema(nullable = false)]
    pub owner: Option<String>,
    /// For crawled tables: where the data is and what the crawler found (absent otherwise).
    #[schema(nullable = false, value_type = Option<Object>)]
    pub external: Option<Value>,
    /// The definition (its fields are absent where the table sets none).
    #[serde(flatten)]
    pub definition: TableDefinition,
    /// The table's full URL (`file:///...`, `s3://...`).
    pub url: String,
    /// Columns from the Delta schema.
    pub columns: Vec<ColumnInfo>,
    /// Statistics from the Delta log.
    pub stats: TableStats,
    /// Only in answers to `PUT`: `created`, `updated` or `unchanged`.
    #[schema(nullable = false)]
    pub status: Option<String>,
}

/// A table definition, the body of `PUT /v1/tables/{table}`. Every field is optional; an
/// empty object defines a table whose schema is inferred from its first records. Unknown
/// fields are refused.
#[derive(ToSchema)]
pub struct TableDefinition {
    /// What the table holds.
    #[schema(nullable = false)]
    pub comment: Option<String>,
    /// The declared columns: `{"name", "type", "nullable", "comment", ...}`.
    #[schema(nullable = false, value_type = Option<Vec<Object>>)]
    pub columns: Option<Vec<Value>>,
    /// Partition columns.
    #[schema(nullable = false)]
    pub partition_by: Option<Vec<String>>,
    /// Columns whose values identify a record: later duplicates are left out.
    #[schema(nullable = false)]
    pub unique_key: Option<Vec<String>>,
    /// Columns each data file's rows are sorted by (each ingest flush and loaded chunk), so
    /// that filters on them skip files, row groups and pages.
    #[schema(nullable = false)]
    pub cluster_by: Option<Vec<String>>,
    /// Row rules of the contract; rows that break them go to `<table>_rejected`.
    #[schema(nullable = false, value_type = Option<Vec<Object>>)]
    pub rules: Option<Vec<Value>>,
    /// Columns computed from others at ingest.
    #[schema(nullable = false, value_type = Option<Vec<Object>>)]
    pub derived: Option<Vec<Value>>,
    /// Keep every request's raw payload in `<table>_raw`.
    #[schema(nullable = false)]
    pub raw_backup: Option<bool>,
    /// When buffered records are committed (rows, bytes, interval).
    #[schema(nullable = false, value_type = Option<Object>)]
    pub flush: Option<Value>,
    /// Browser forms: allowed origins, success URL, ...
    #[schema(nullable = false, value_type = Option<Object>)]
    pub forms: Option<Value>,
}

/// One entry of a table's history (`tarn_lake::Commit`).
#[derive(ToSchema)]
pub struct Commit {
    /// The version this commit created.
    pub version: u64,
    /// When it was committed.
    #[schema(required = true, format = DateTime)]
    pub timestamp: Option<String>,
    /// The operation recorded in the commit (`WRITE`, `CREATE TABLE`, `OPTIMIZE`, ...).
    #[schema(required = true)]
    pub operation: Option<String>,
    /// Number of data files the commit added.
    pub files_added: u64,
    /// Rows in the added files, when their statistics record it.
    #[schema(required = true)]
    pub rows_added: Option<u64>,
}

/// `GET /v1/tables/{table}/history`.
#[derive(ToSchema)]
pub struct History {
    /// The qualified table name.
    pub table: String,
    /// Its commits, newest first.
    pub commits: Vec<Commit>,
}

/// A table the crawler found (`tarn_catalog::CrawledTable`).
#[derive(ToSchema)]
pub struct CrawledTable {
    /// Its name.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// Where its data is.
    pub location: String,
    /// `delta`, `parquet`, `csv` or `ndjson`.
    pub format: String,
    /// Hive-style partition columns.
    pub partition_columns: Vec<String>,
    /// Number of columns.
    pub columns: u64,
    /// Number of data files.
    pub files: u64,
    /// Number of partitions.
    pub partitions: u64,
    /// `created`, `updated` or `unchanged`.
    pub status: String,
    /// What changed (for `updated`) or what to know (ignored files).
    pub changes: Vec<String>,
}

/// A place the crawl did not register.
#[derive(ToSchema)]
pub struct Skipped {
    /// Its URL.
    pub location: String,
    /// Why.
    pub reason: String,
}

/// What a crawl found and did (`tarn_catalog::CrawlReport`).
#[derive(ToSchema)]
pub struct CrawlReport {
    /// The crawled location's URL.
    pub location: String,
    /// The tables found.
    pub tables: Vec<CrawledTable>,
    /// Places that looked like tables but were not registered, and why.
    pub skipped: Vec<Skipped>,
}
