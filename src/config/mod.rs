//! Command line and environment (`TARN_*`) configuration.

use clap::{ArgAction, Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

use tarn_catalog::auth::KeySpec;
use tarn_catalog::TableSpec;
use tarn_ingest::dropzone::DropZoneConfig;
use tarn_ingest::{FlushConfig, IngestConfig, MaintenanceConfig, UniqueKeyScope, WalConfig};
use tarn_lake::LakeOptions;
use tarn_pipelines::{AlertsConfig, JobSpec, JobsConfig, SmtpConfig};
use tarn_query::QueryConfig;

mod cluster;
mod file;

pub use cluster::{ClusterArgs, WorkerArgs};
pub use file::FileConfig;

/// Tarn: ingest over HTTP into Delta Lake tables, a catalog, and SQL over REST.
#[derive(Debug, Parser)]
#[command(name = "tarn", version, about)]
pub struct Cli {
    /// How log lines are written to stderr: `text` for people, `json` (one object per line,
    /// with the request's span: id, key name, method, path) for log shippers.
    #[arg(long, global = true, env = "TARN_LOG_FORMAT", default_value = "text", value_enum)]
    pub log_format: crate::telemetry::LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve ingest, the catalog and SQL over HTTP.
    Serve(Box<ServeArgs>),
    /// Run one SQL query on the lake, without a server, and print an aligned table.
    Sql(SqlArgs),
    /// Compact a table's small files now (also runs in the background of `serve`).
    Optimize(OptimizeArgs),
    /// Delete a table's unreferenced files older than the retention (also runs in `serve`).
    Vacuum(VacuumArgs),
    /// Load files (CSV, NDJSON, JSON, Parquet; local paths or s3:// URLs) into a table.
    Load(LoadArgs),
    /// Register existing Delta tables and Parquet / CSV / NDJSON prefixes under a directory
    /// or s3:// prefix as (external, read-only) tables; crawling again picks up changes.
    Crawl(CrawlArgs),
    /// Make an API key for tarn.toml, or hash an existing one.
    Key(KeyArgs),
    /// Scheduled jobs: list them, or run one now (with or without a server).
    Job(JobArgs),
    /// Run query stages for serving nodes (`tarn serve --workers`): a worker of a cluster.
    Worker(WorkerArgs),
}

/// `tarn job`.
#[derive(Debug, Clone, Args)]
pub struct JobArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: JobCommand,
}

/// `tarn job list|run`.
#[derive(Debug, Clone, Subcommand)]
pub enum JobCommand {
    /// List the jobs of the lake (those of tarn.toml applied first) with their next run.
    List {
        #[command(flatten)]
        #[allow(missing_docs)]
        lake: LakeArgs,
        /// Job (and table) definitions to apply first (the `[[jobs]]` of tarn.toml).
        #[arg(long, env = "TARN_CONFIG", default_value = "tarn.toml")]
        config: PathBuf,
    },
    /// Run a job once, now, in this process; waits for the run's end and exits non-zero when
    /// it failed. Safe beside running servers: the run has an id of its own.
    Run {
        #[command(flatten)]
        #[allow(missing_docs)]
        lake: LakeArgs,
        /// Job (and table) definitions to apply first (the `[[jobs]]` of tarn.toml).
        #[arg(long, env = "TARN_CONFIG", default_value = "tarn.toml")]
        config: PathBuf,
        #[command(flatten)]
        #[allow(missing_docs)]
        notify: NotifyArgs,
        /// The job.
        name: String,
    },
}

/// Where notifications (of jobs and alarms) go out.
#[derive(Debug, Clone, Args)]
pub struct NotifyArgs {
    /// The SMTP server for e-mail: smtp://host:port (STARTTLS with --smtp-starttls),
    /// smtps://host:port (TLS); a login may be in the URL (smtp://user:pass@host:587).
    #[arg(long, env = "TARN_SMTP_URL")]
    pub smtp_url: Option<String>,
    /// The sender of e-mail, e.g. "Tarn <tarn@example.com>".
    #[arg(long, env = "TARN_SMTP_FROM", default_value = "tarn@localhost")]
    pub smtp_from: String,
    /// Upgrade the SMTP connection with STARTTLS (required when set).
    #[arg(long, env = "TARN_SMTP_STARTTLS")]
    pub smtp_starttls: bool,
    /// SMTP login name (when not in the URL).
    #[arg(long, env = "TARN_SMTP_USERNAME")]
    pub smtp_username: Option<String>,
    /// SMTP password (when not in the URL); prefer the environment variable.
    #[arg(long, env = "TARN_SMTP_PASSWORD", hide_env_values = true)]
    pub smtp_password: Option<String>,
}

impl NotifyArgs {
    /// The SMTP settings, when a server is named.
    pub fn smtp(&self) -> Option<SmtpConfig> {
        self.smtp_url.as_ref().map(|url| SmtpConfig {
            url: url.clone(),
            from: self.smtp_from.clone(),
            starttls: self.smtp_starttls,
            username: self.smtp_username.clone(),
            password: self.smtp_password.clone(),
        })
    }
}

/// `tarn load`.
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub lake: LakeArgs,
    /// The table (`name` or `namespace.name`); created from the first file when unknown.
    #[arg(long, short)]
    pub table: String,
    /// The files' format, when their names do not say (csv, ndjson, json, parquet).
    #[arg(long)]
    pub format: Option<String>,
    /// Table definitions to apply first (the `[[tables]]` of tarn.toml).
    #[arg(long, env = "TARN_CONFIG", default_value = "tarn.toml")]
    pub config: PathBuf,
    /// No progress bar (for logs and scripts).
    #[arg(long)]
    pub quiet: bool,
    /// How far a table's unique_key is enforced while loading: `lake` (each chunk's commit
    /// leaves out keys other writers committed first) or `node` (this load's own index only).
    #[arg(long, env = "TARN_UNIQUE_KEY_SCOPE", default_value = "lake", value_parser = parse_scope)]
    pub unique_key_scope: UniqueKeyScope,
    /// The files.
    #[arg(required = true)]
    pub files: Vec<String>,
}

/// `tarn crawl`.
#[derive(Debug, Clone, Args)]
pub struct CrawlArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub lake: LakeArgs,
    /// Namespace of the tables registered.
    #[arg(long, short, default_value = "default")]
    pub namespace: String,
    /// Put before the name of every new table (e.g. raw_).
    #[arg(long, default_value = "")]
    pub table_prefix: String,
    /// What to crawl: a directory, file:///path or s3://bucket/prefix.
    pub location: String,
}

/// `tarn key`.
#[derive(Debug, Clone, Args)]
pub struct KeyArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: KeyCommand,
}

/// `tarn key new|hash`.
#[derive(Debug, Clone, Subcommand)]
pub enum KeyCommand {
    /// Make a new random key; prints it once, and the [[keys]] entry for tarn.toml.
    New {
        /// A name for logs.
        #[arg(long, default_value = "key")]
        name: String,
        /// Scopes: ingest:<table>, ingest:*, query, admin.
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// A key for public web pages (ingest only, from --origin only).
        #[arg(long)]
        publishable: bool,
        /// Origins a publishable key is taken from (https://www.example.com).
        #[arg(long = "origin")]
        origins: Vec<String>,
    },
    /// Print the hash tarn.toml stores for an existing key.
    Hash {
        /// The key.
        key: String,
    },
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
    /// Table definitions and API keys (optional; an explicitly named file must exist).
    #[arg(long, env = "TARN_CONFIG", default_value = "tarn.toml")]
    pub config: PathBuf,
    /// Address to listen on for the Postgres wire protocol (psql, BI tools), or `off`.
    #[arg(long, env = "TARN_PG_LISTEN", default_value = "127.0.0.1:5433")]
    pub pg_listen: Listen,
    /// Address to listen on for Arrow Flight SQL (ADBC, the Flight SQL JDBC driver), or `off`
    /// (the default).
    #[arg(long, env = "TARN_FLIGHT_LISTEN", default_value = "off")]
    pub flight_listen: Listen,
    /// Create unknown tables on first ingest, with a schema inferred from that first body
    /// (default: on, unless API keys are configured).
    #[arg(long, env = "TARN_AUTO_CREATE", action = ArgAction::Set)]
    pub auto_create: Option<bool>,
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
    /// Largest accepted file upload, in bytes.
    #[arg(long, env = "TARN_MAX_UPLOAD_BYTES", default_value_t = IngestConfig::default().max_upload_bytes)]
    pub max_upload_bytes: u64,
    /// Most unique keys indexed per table with a unique_key (about 32 bytes of memory each).
    #[arg(long, env = "TARN_UNIQUE_KEY_MAX", default_value_t = IngestConfig::default().unique_key_max)]
    pub unique_key_max: usize,
    /// How far a table's unique_key is enforced: `lake` (across every server writing into the
    /// lake: each commit leaves out rows whose key another writer committed first) or `node`
    /// (each server checks only its own index: a key sent to two servers lands twice; for
    /// deployments that route each key to one server).
    #[arg(long, env = "TARN_UNIQUE_KEY_SCOPE", default_value = "lake", value_parser = parse_scope)]
    pub unique_key_scope: UniqueKeyScope,
    /// Seconds between looks at the drop zone (_tarn/landing/<table>/ in the lake); 0 turns it off.
    #[arg(long, env = "TARN_LANDING_POLL_SECS", default_value_t = DropZoneConfig::default().poll_secs)]
    pub landing_poll_secs: u64,
    /// Run the scheduled jobs on this server (every server of a lake may; each occurrence
    /// runs once). With `false`, the jobs API still serves and runs jobs asked for by hand.
    #[arg(long, env = "TARN_JOBS", default_value_t = true, action = ArgAction::Set)]
    pub jobs: bool,
    /// Seconds between reads of the job definitions from the lake (other servers' changes).
    #[arg(long, env = "TARN_JOBS_REFRESH_SECS", default_value_t = JobsConfig::default().refresh.as_secs())]
    pub jobs_refresh_secs: u64,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub notify: NotifyArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub query: QueryArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub cluster: ClusterArgs,
}

/// `--unique-key-scope`: `lake` or `node`.
pub fn parse_scope(text: &str) -> Result<UniqueKeyScope, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "lake" => Ok(UniqueKeyScope::Lake),
        "node" => Ok(UniqueKeyScope::Node),
        other => Err(format!("'{other}' is not a unique-key scope: use lake or node")),
    }
}

/// `--pg-listen`, `--flight-listen`: an address, or `off` (no such endpoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen(pub Option<SocketAddr>);

impl std::str::FromStr for Listen {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim() {
            "off" | "none" | "" => Ok(Listen(None)),
            address => address.parse().map(|a| Listen(Some(a))).map_err(|e| {
                format!("'{address}' is not an address (127.0.0.1:5433) nor `off`: {e}")
            }),
        }
    }
}

/// The query engine's limits (`tarn serve`).
#[derive(Debug, Clone, Args)]
pub struct QueryArgs {
    /// Longest a query of POST /v1/sql may run, in seconds (from getting a slot to its last byte).
    #[arg(long, env = "TARN_QUERY_TIMEOUT_SECS", default_value_t = QueryConfig::default().timeout.as_secs())]
    pub query_timeout_secs: u64,
    /// Longest an async query (POST /v1/queries) may run, in seconds.
    #[arg(long, env = "TARN_ASYNC_QUERY_TIMEOUT_SECS", default_value_t = QueryConfig::default().async_timeout.as_secs())]
    pub async_query_timeout_secs: u64,
    /// Memory all running queries share, in bytes; beyond their share, sorts, joins and
    /// aggregations spill to disk.
    #[arg(long, env = "TARN_QUERY_MEMORY_BYTES", default_value_t = QueryConfig::default().memory_limit)]
    pub query_memory_bytes: usize,
    /// Directory for spill files (default: the system's temporary directory).
    #[arg(long, env = "TARN_QUERY_SPILL_DIR")]
    pub query_spill_dir: Option<PathBuf>,
    /// Partitions a query runs in (streams its scans, joins and aggregations work on at once;
    /// DataFusion's target_partitions). Default: twice the cores.
    #[arg(long, env = "TARN_QUERY_PARTITIONS", default_value_t = QueryConfig::default().partitions)]
    pub query_partitions: usize,
    /// Queries running at once.
    #[arg(long, env = "TARN_MAX_CONCURRENT_QUERIES", default_value_t = QueryConfig::default().max_concurrent)]
    pub max_concurrent_queries: usize,
    /// Queries waiting for a slot; beyond, new queries get 429.
    #[arg(long, env = "TARN_MAX_QUEUED_QUERIES", default_value_t = QueryConfig::default().max_queued)]
    pub max_queued_queries: usize,
    /// Row cap of JSON answers (a POST /v1/sql answer, a page of async results).
    #[arg(long, env = "TARN_MAX_RESULT_ROWS", default_value_t = QueryConfig::default().max_result_rows)]
    pub max_result_rows: usize,
    /// How long async query results are kept (and reused), in seconds.
    #[arg(long, env = "TARN_RESULTS_TTL_SECS", default_value_t = QueryConfig::default().results_ttl.as_secs())]
    pub results_ttl_secs: u64,
    /// What reads Delta tables: `tarn` (Tarn's own scan, with the Delta log's statistics of
    /// every column) or `deltalake` (deltalake's table provider).
    #[arg(long, env = "TARN_DELTA_READER", default_value = "tarn")]
    pub delta_reader: tarn_query::DeltaReader,
}

impl From<QueryArgs> for QueryConfig {
    fn from(args: QueryArgs) -> Self {
        use std::time::Duration;
        QueryConfig {
            timeout: Duration::from_secs(args.query_timeout_secs.max(1)),
            async_timeout: Duration::from_secs(args.async_query_timeout_secs.max(1)),
            memory_limit: args.query_memory_bytes,
            spill_dir: args.query_spill_dir,
            partitions: args.query_partitions.max(1),
            max_concurrent: args.max_concurrent_queries.max(1),
            max_queued: args.max_queued_queries,
            max_result_rows: args.max_result_rows.max(1),
            results_ttl: Duration::from_secs(args.results_ttl_secs.max(1)),
            delta_reader: args.delta_reader,
            ..QueryConfig::default()
        }
    }
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
    /// Address for the Postgres wire protocol; `None`: off (the default of tests).
    pub pg_listen: Option<SocketAddr>,
    /// Address for Arrow Flight SQL; `None`: off (the default).
    pub flight_listen: Option<SocketAddr>,
    /// Ingest settings.
    pub ingest: IngestConfig,
    /// Query settings.
    pub query: QueryConfig,
    /// Tables to create or evolve at start.
    pub tables: Vec<(String, TableSpec)>,
    /// API keys; none: open.
    pub keys: Vec<KeySpec>,
    /// Whether `auto_create` was set explicitly (otherwise it follows whether keys exist).
    pub auto_create_set: bool,
    /// Jobs to create or change at start.
    pub jobs: Vec<(String, JobSpec)>,
    /// The scheduler's settings.
    pub jobs_config: JobsConfig,
    /// The SMTP server of e-mail notifications, if any.
    pub smtp: Option<SmtpConfig>,
    /// Alarms.
    pub alerts: AlertsConfig,
    /// The rate limit of keys that set none (and of everyone, on an open server); none: no
    /// limit (publishable keys have their own default).
    pub rate_limit: Option<tarn_catalog::auth::RateLimit>,
}

impl ServeConfig {
    /// Defaults for `lake`, listening on a free loopback port.
    pub fn for_lake(lake: impl Into<String>) -> Self {
        ServeConfig {
            lake: lake.into(),
            lake_options: LakeOptions::default(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            pg_listen: None,
            flight_listen: None,
            ingest: IngestConfig::default(),
            query: QueryConfig::default(),
            tables: Vec::new(),
            keys: Vec::new(),
            auto_create_set: false,
            jobs: Vec::new(),
            jobs_config: JobsConfig::default(),
            smtp: None,
            alerts: AlertsConfig::default(),
            rate_limit: None,
        }
    }
}

impl ServeConfig {
    /// The configuration of `tarn serve`: flags and environment, plus `tarn.toml`.
    pub fn from_args(args: ServeArgs) -> anyhow::Result<Self> {
        let explicit = args.config != std::path::Path::new("tarn.toml");
        let file = FileConfig::read(&args.config, explicit)?;
        let cluster = args.cluster.config()?;
        let mut config = ServeConfig::from(args);
        config.query.cluster = cluster;
        config.tables = file.tables;
        config.keys = file.keys;
        config.jobs = file.jobs;
        config.alerts = file.alerts;
        config.rate_limit = file.rate_limit;
        Ok(config)
    }
}

impl From<ServeArgs> for ServeConfig {
    fn from(args: ServeArgs) -> Self {
        let auto_create_set = args.auto_create.is_some();
        ServeConfig {
            auto_create_set,
            smtp: args.notify.smtp(),
            jobs_config: JobsConfig {
                schedule: args.jobs,
                refresh: std::time::Duration::from_secs(args.jobs_refresh_secs.max(1)),
                ..JobsConfig::default()
            },
            listen: args.listen,
            pg_listen: args.pg_listen.0,
            flight_listen: args.flight_listen.0,
            query: args.query.into(),
            ingest: IngestConfig {
                auto_create: args.auto_create.unwrap_or(true),
                max_body_bytes: args.max_body_bytes,
                max_upload_bytes: args.max_upload_bytes,
                unique_key_max: args.unique_key_max,
                unique_key_scope: args.unique_key_scope,
                dropzone: DropZoneConfig {
                    poll_secs: args.landing_poll_secs,
                    ..DropZoneConfig::default()
                },
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
