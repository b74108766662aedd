//! Command line and environment (`TARN_*`) configuration.

use clap::{ArgAction, Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

use tarn_ingest::{FlushConfig, IngestConfig, MaintenanceConfig, WalConfig};
use tarn_lake::LakeOptions;
use tarn_query::QueryConfig;

/// Tarn: ingest over HTTP into Delta Lake tables, a catalog, and SQL over REST.
#[derive(Debug, Parser)]
#[command(name = "tarn", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve ingest, the catalog and SQL over HTTP.
    Serve(ServeArgs),
    /// Run one SQL query on the lake, without a server, and print an aligned table.
    Sql(SqlArgs),
    /// Compact a table's small files now (also runs in the background of `serve`).
    Optimize(OptimizeArgs),
    /// Delete a table's unreferenced files older than the retention (also runs in `serve`).
    Vacuum(VacuumArgs),
}

/// `tarn optimize`.
#[derive(Debug, Clone, Args)]
pub struct OptimizeArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub lake: LakeArgs,
    /// Size of the files to write, in bytes.
    #[arg(long, default_value_t = MaintenanceConfig::default().target_file_bytes)]
    pub target_file_bytes: u64,
    /// The table (`name` or `namespace.name`).
    pub table: String,
}

/// `tarn vacuum`.
#[derive(Debug, Clone, Args)]
pub struct VacuumArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub lake: LakeArgs,
    /// Keep files that versions of the last this many hours still reference.
    #[arg(long, default_value_t = MaintenanceConfig::default().vacuum_retention_hours)]
    pub retention_hours: u64,
    /// Only list what would be deleted.
    #[arg(long)]
    pub dry_run: bool,
    /// The table (`name` or `namespace.name`).
    pub table: String,
}

/// Where the lake is.
#[derive(Debug, Clone, Args)]
pub struct LakeArgs {
    /// The lake: a directory, file:///path, s3://bucket/prefix or memory://. For S3 the
    /// standard AWS variables apply (AWS_REGION, AWS_PROFILE, AWS_ENDPOINT_URL for MinIO, ...).
    #[arg(long, env = "TARN_LAKE", default_value = "./lake")]
    pub lake: String,
}

/// `tarn serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub lake: LakeArgs,
    /// Address to listen on for HTTP.
    #[arg(long, env = "TARN_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Create unknown tables on first ingest, with a schema inferred from that first body.
    #[arg(long, env = "TARN_AUTO_CREATE", default_value_t = true, action = ArgAction::Set)]
    pub auto_create: bool,
    /// Largest accepted ingest body in bytes (after decompression).
    #[arg(long, env = "TARN_MAX_BODY_BYTES", default_value_t = IngestConfig::default().max_body_bytes)]
    pub max_body_bytes: usize,
    /// Directory of the write-ahead log (local disk).
    #[arg(long, env = "TARN_WAL_DIR", default_value = ".tarn/wal")]
    pub wal_dir: PathBuf,
    /// Above this many bytes waiting in the write-ahead log, ingest answers 503.
    #[arg(long, env = "TARN_WAL_MAX_BYTES", default_value_t = WalConfig::default().max_bytes)]
    pub wal_max_bytes: u64,
    /// Commit a table's buffered records at the latest this long after the first arrived.
    #[arg(long, env = "TARN_FLUSH_MAX_AGE_MS", default_value_t = FlushConfig::default().max_age_ms)]
    pub flush_max_age_ms: u64,
    /// Commit a table's buffer when its request bodies reach this many bytes.
    #[arg(long, env = "TARN_FLUSH_MAX_BYTES", default_value_t = FlushConfig::default().max_bytes)]
    pub flush_max_bytes: u64,
    /// Commit a table's buffer when it holds this many rows.
    #[arg(long, env = "TARN_FLUSH_MAX_ROWS", default_value_t = FlushConfig::default().max_rows)]
    pub flush_max_rows: usize,
    /// Compact a table when this many of its files are small (0 turns maintenance off).
    #[arg(long, env = "TARN_COMPACT_MIN_FILES", default_value_t = MaintenanceConfig::default().compact_min_files)]
    pub compact_min_files: usize,
    /// Write a checkpoint every this many commits of a table.
    #[arg(long, env = "TARN_CHECKPOINT_EVERY", default_value_t = MaintenanceConfig::default().checkpoint_every)]
    pub checkpoint_every: u64,
    /// Vacuum deletes unreferenced files older than this many hours.
    #[arg(long, env = "TARN_VACUUM_RETENTION_HOURS", default_value_t = MaintenanceConfig::default().vacuum_retention_hours)]
    pub vacuum_retention_hours: u64,
    /// How often each busy table is vacuumed, in seconds.
    #[arg(long, env = "TARN_VACUUM_EVERY_SECS", default_value_t = MaintenanceConfig::default().vacuum_every_secs)]
    pub vacuum_every_secs: u64,
    /// How long an Idempotency-Key is remembered, in seconds.
    #[arg(long, env = "TARN_IDEMPOTENCY_TTL_SECS", default_value_t = IngestConfig::default().idempotency_ttl_secs)]
    pub idempotency_ttl_secs: u64,
}

/// `tarn sql`.
#[derive(Debug, Clone, Args)]
pub struct SqlArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub lake: LakeArgs,
    /// At most this many rows are printed.
    #[arg(long, default_value_t = 10_000)]
    pub max_rows: usize,
    /// The query, e.g. "SELECT count(*) FROM events".
    pub sql: String,
}

/// Everything `tarn serve` needs, independent of clap (tests build it directly).
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The lake location.
    pub lake: String,
    /// Storage options beyond the environment (tests pass the S3 test server's here).
    pub lake_options: LakeOptions,
    /// Address to listen on; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Ingest settings.
    pub ingest: IngestConfig,
    /// Query settings.
    pub query: QueryConfig,
}

impl ServeConfig {
    /// Defaults for `lake`, listening on a free loopback port.
    pub fn for_lake(lake: impl Into<String>) -> Self {
        ServeConfig {
            lake: lake.into(),
            lake_options: LakeOptions::default(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            ingest: IngestConfig::default(),
            query: QueryConfig::default(),
        }
    }
}

impl From<ServeArgs> for ServeConfig {
    fn from(args: ServeArgs) -> Self {
        ServeConfig {
            listen: args.listen,
            ingest: IngestConfig {
                auto_create: args.auto_create,
                max_body_bytes: args.max_body_bytes,
                wal: WalConfig {
                    dir: args.wal_dir,
                    max_bytes: args.wal_max_bytes,
                    ..WalConfig::default()
                },
                flush: FlushConfig {
                    max_age_ms: args.flush_max_age_ms,
                    max_bytes: args.flush_max_bytes,
                    max_rows: args.flush_max_rows,
                },
                idempotency_ttl_secs: args.idempotency_ttl_secs,
                maintenance: MaintenanceConfig {
                    enabled: args.compact_min_files > 0,
                    compact_min_files: args.compact_min_files,
                    checkpoint_every: args.checkpoint_every.max(1),
                    vacuum_retention_hours: args.vacuum_retention_hours,
                    vacuum_every_secs: args.vacuum_every_secs,
                    ..MaintenanceConfig::default()
                },
                ..IngestConfig::default()
            },
            ..ServeConfig::for_lake(args.lake.lake)
        }
    }
}
