//! Planning and running read-only SQL, within limits.

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use datafusion::catalog::MemoryCatalogProviderList;
use datafusion::catalog::{CatalogProvider, CatalogProviderList};
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::TableReference;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{FairSpillPool, TrackConsumersPool};
use datafusion::execution::object_store::{DefaultObjectStoreRegistry, ObjectStoreRegistry};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::{Expr, LogicalPlan, Volatility};
use datafusion::physical_plan::metrics::MetricsSet;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::{DFParserBuilder, Statement as DfStatement};
use datafusion::sql::sqlparser::dialect::dialect_from_str;
use tarn_catalog::{Catalog, TableName};
use tarn_lake::Lake;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::cluster::{ClusterConfig, Workers};
use crate::decimal::ScaleDecimalLiterals;
use crate::provider::{LakeCatalog, TableRead, CATALOG_NAME};
use crate::scan::{DeltaReader, RuntimeFilters, Scans};
use crate::shared::{LinkShared, ShareRepeatedAggregates, SharedQueryPlanner};
use crate::views::CompareViews;
use crate::{policy, timetravel, Error, Result};

/// Settings of the query engine: its limits, and the async queries' results.
#[derive(Debug, Clone)]
pub struct QueryConfig {
    /// Rows per batch DataFusion produces (and per chunk streamed to clients).
    pub batch_size: usize,
    /// Partitions a query's plan runs in (DataFusion's `target_partitions`): the streams its
    /// scans, joins and aggregations work on at once. Default: twice the cores, so that a core
    /// whose stream waits (for a read, for a full or empty channel between operators) has
    /// another to run: on 2 cores the 22 TPC-H queries run 4-6 % faster than with one
    /// partition per core (BENCHMARKS.md, "Two partitions per core").
    pub partitions: usize,
    /// Longest a query may hold an execution slot: from admission to its last row (for
    /// `POST /v1/sql`, to the last byte handed to the client).
    pub timeout: Duration,
    /// Longest an async query (`POST /v1/queries`) may run.
    pub async_timeout: Duration,
    /// Memory all running queries share (bytes); operators that can spill (sorts, joins,
    /// aggregations) spill to disk beyond their fair share, the others fail with a clear
    /// "resources exhausted" error.
    pub memory_limit: usize,
    /// Where spill files go; `None`: the system's temporary directory.
    pub spill_dir: Option<PathBuf>,
    /// Most spill-file bytes on disk at once.
    pub max_spill_bytes: u64,
    /// Queries running at once; more wait in the queue.
    pub max_concurrent: usize,
    /// Queries waiting for a slot; beyond, new queries are refused with 429.
    pub max_queued: usize,
    /// Row cap of buffered formats (a `POST /v1/sql` answer in JSON, one page of async
    /// results in JSON): beyond it, the answer is cut and says `"truncated": true`.
    pub max_result_rows: usize,
    /// How long async query results are kept (and can be reused).
    pub results_ttl: Duration,
    /// Async queries remembered at once (finished ones are forgotten oldest first).
    pub max_tracked_queries: usize,
    /// Which provider reads Delta tables: Tarn's own scan (the default), or deltalake's.
    pub delta_reader: DeltaReader,
    /// The workers query stages run on (`tarn serve --workers`); `None`: every query runs in
    /// this process.
    pub cluster: Option<ClusterConfig>,
    /// An aggregation a query plans twice (a view or common table expression used twice, as
    /// in TPC-H Q15) is computed once for both (without workers). Off: each copy computes its
    /// own, as DataFusion plans it.
    pub share_repeated_aggregates: bool,
}

impl Default for QueryConfig {
    fn default() -> Self {
        QueryConfig {
            batch_size: 8192,
            partitions: 2 * std::thread::available_parallelism().map_or(1, |n| n.get()),
            timeout: Duration::from_secs(300),
            async_timeout: Duration::from_secs(3600),
            memory_limit: 2 << 30,
            spill_dir: None,
            max_spill_bytes: 100 << 30,
            max_concurrent: 4,
            max_queued: 64,
            max_result_rows: 100_000,
            results_ttl: Duration::from_secs(24 * 3600),
            max_tracked_queries: 1_000,
            delta_reader: DeltaReader::Tarn,
            cluster: None,
            share_repeated_aggregates: true,
        }
    }
}

/// Runs SQL over the catalog's tables.
pub struct QueryEngine {
    catalog: Arc<Catalog>,
    config: QueryConfig,
    /// Shared by every query: object stores registered once, the memory pool, the spill
    /// directory.
    runtime: Arc<RuntimeEnv>,
    admission: Arc<Admission>,
    /// What Delta scans share: the session they take their settings from (deltalake's
    /// provider otherwise pushes every filter into the Parquet decoder, which DataFusion does
    /// not by default and which made filtered scans 1.6-3x slower in the TPC-H benchmark),
    /// and the file lists of table versions.
    scans: Arc<Scans>,
    /// The settings of every session (see `session_config`).
    session_config: SessionConfig,
    /// The workers query stages run on, when the engine is part of a cluster.
    workers: Option<Arc<Workers>>,
}

/// A query planned and checked, ready to run.
pub struct PlannedQuery {
    /// The session it was planned in (its task context runs it).
    pub ctx: SessionContext,
    /// The physical plan.
    pub plan: Arc<dyn ExecutionPlan>,
    /// Every table the query reads, with the version it reads.
    pub reads: Vec<TableRead>,
    /// False when the result may change although no table version did (`now()`,
    /// `random()`, a crawled table of files): such results are never reused.
    pub deterministic: bool,
}

/// A query planned and checked up to its logical plan (see [`QueryEngine::plan_logical`]).
pub struct LogicalQuery {
    /// The session it was planned in, with the engine's settings, memory pool and spill.
    pub ctx: SessionContext,
    /// The checked logical plan.
    pub plan: LogicalPlan,
    /// Every table the query reads, with the version it reads.
    pub reads: Vec<TableRead>,
    /// See [`PlannedQuery::deterministic`].
    pub deterministic: bool,
}

impl PlannedQuery {
    /// Starts the query.
    pub fn execute(&self) -> Result<SendableRecordBatchStream> {
        Ok(datafusion::physical_plan::execute_stream(self.plan.clone(), self.ctx.task_ctx())?)
    }

    /// Bytes the query read from Parquet files so far (from the scans' metrics).
    pub fn bytes_scanned(&self) -> u64 {
        self.metric_total(|m| m.sum_by_name("bytes_scanned").map(|v| v.as_usize()))
    }

    /// Bytes the query spilled to disk so far, when its operators ran out of memory.
    pub fn spilled_bytes(&self) -> u64 {
        self.metric_total(|m| m.spilled_bytes())
    }

    /// The sum of one metric over every operator of the plan.
    fn metric_total(&self, metric: fn(&MetricsSet) -> Option<usize>) -> u64 {
        metric_total(self.plan.as_ref(), metric)
    }
}

impl QueryEngine {
    /// A query engine over `catalog`.
    pub fn new(catalog: Arc<Catalog>, config: QueryConfig) -> Result<Self> {
        let runtime = runtime_env(&config, None)?;
        let admission = Arc::new(Admission::new(config.max_concurrent, config.max_queued));
        let session_config = session_config(&config)?;
        let scan_session = Arc::new(
            SessionStateBuilder::new()
                .with_config(session_config.clone())
                .with_runtime_env(runtime.clone())
                .build(),
        );
        let scans =
            Arc::new(Scans::new(scan_session, config.delta_reader, config.cluster.is_none()));
        let workers = match &config.cluster {
            Some(cluster) => {
                cluster.check().map_err(|e| Error::BadQuery(format!("the cluster: {e}")))?;
                Some(Workers::start(cluster.clone()))
            }
            None => None,
        };
        Ok(QueryEngine { catalog, config, session_config, runtime, admission, scans, workers })
    }

    /// The engine's settings.
    pub fn config(&self) -> &QueryConfig {
        &self.config
    }

    /// The catalog the engine reads.
    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// What the engine's Delta scans share.
    pub(crate) fn scans(&self) -> Arc<Scans> {
        self.scans.clone()
    }

    /// The bound on concurrent queries.
    pub fn admission(&self) -> &Arc<Admission> {
        &self.admission
    }

    /// A DataFusion session whose catalog `tarn` holds the lake's tables (default schema
    /// `default`), with `information_schema` for `SHOW TABLES` and friends.
    pub async fn session(&self) -> Result<SessionContext> {
        self.session_recording(Arc::default()).await
    }

    async fn session_recording(&self, reads: Arc<Mutex<Vec<TableRead>>>) -> Result<SessionContext> {
        let names = LakeCatalog::names(&self.catalog).await?;
        Ok(self.session_over(Arc::new(LakeCatalog::new(
            self.catalog.clone(),
            names,
            reads,
            self.scans.clone(),
        ))))
    }

    /// A session whose catalog `tarn` is `tables` (default schema `default`), with
    /// `information_schema`, the engine's settings and its shared runtime (memory pool, spill).
    pub(crate) fn session_over(&self, tables: Arc<dyn CatalogProvider>) -> SessionContext {
        let config = self.session_config.clone();
        let catalogs = Arc::new(MemoryCatalogProviderList::new());
        catalogs.register_catalog(CATALOG_NAME.to_string(), tables);
        let mut builder = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(self.runtime.clone())
            .with_default_features()
            .with_catalog_list(catalogs)
            .with_optimizer_rule(Arc::new(ScaleDecimalLiterals));
        match &self.workers {
            Some(workers) => builder = workers.distribute(builder),
            // Not with workers: datafusion-distributed sends plans of DataFusion's operators.
            None => {
                builder = builder
                    .with_physical_optimizer_rule(Arc::new(RuntimeFilters))
                    .with_physical_optimizer_rule(Arc::new(CompareViews));
                if self.config.share_repeated_aggregates {
                    builder = builder
                        .with_optimizer_rule(Arc::new(ShareRepeatedAggregates))
                        .with_query_planner(Arc::new(SharedQueryPlanner))
                        .with_physical_optimizer_rule(Arc::new(LinkShared::default()));
                }
            }
        }
        let state = builder.build();
        let ctx = SessionContext::new_with_state(state);
        ctx.register_udf(version_udf());
        ctx
    }

    /// Plans `sql`, refuses anything that is not a read, and starts it. No admission, no
    /// timeout: for the embedded `tarn sql`; the HTTP API goes through [`QueryEngine::plan`].
    ///
    /// Errors in the query (syntax, unknown columns, unknown tables, writes) are reported
    /// before anything runs.
    pub async fn execute(&self, sql: &str) -> Result<SendableRecordBatchStream> {
        self.plan(sql).await?.execute()
    }

    /// Plans `sql` (one statement) and refuses anything that is not a read (see
    /// [`crate::policy`]). Time-travel clauses (see [`crate::timetravel`]) are resolved here,
    /// and every table read is recorded with its version.
    pub async fn plan(&self, sql: &str) -> Result<PlannedQuery> {
        let LogicalQuery { ctx, plan, reads, deterministic } = self.plan_logical(sql).await?;
        let frame = ctx.execute_logical_plan(plan).await?;
        let physical = frame.create_physical_plan().await?;
        Ok(PlannedQuery { ctx, plan: physical, reads, deterministic })
    }

    /// Checks `sql` without planning it against the tables: one statement that parses (after
    /// the time-travel clauses) and only reads. For SQL kept to run later (a scheduled job's),
    /// whose tables may not exist yet.
    pub fn check_sql(&self, sql: &str) -> Result<()> {
        if sql.trim().trim_end_matches(';').trim().is_empty() {
            return Err(Error::BadQuery("the SQL text is empty".into()));
        }
        let sql = timetravel::rewrite(sql).map_err(Error::BadQuery)?;
        let config = self.session_config.clone();
        let statement = parse_one(&sql, config.options())?;
        policy::check_statement(&statement)
    }

    /// Like [`QueryEngine::plan`], but stops at the checked logical plan: for writers that
    /// plan the rest themselves (a scheduled job writing its result into a table).
    pub async fn plan_logical(&self, sql: &str) -> Result<LogicalQuery> {
        if sql.trim().trim_end_matches(';').trim().is_empty() {
            return Err(Error::BadQuery("the SQL text is empty".into()));
        }
        let sql = timetravel::rewrite(sql).map_err(Error::BadQuery)?;
        let reads = Arc::new(Mutex::new(Vec::new()));
        let ctx = self.session_recording(reads.clone()).await?;
        let state = ctx.state();
        let statement = parse_one(&sql, state.config().options())?;
        policy::check_statement(&statement)?;
        let references = state.resolve_table_references(&statement)?;
        let plan = match state.statement_to_plan(statement).await {
            Ok(plan) => plan,
            Err(e) => {
                // A missing table is a 404, not a plan error (but an unknown table function
                // stays DataFusion's "table function 'f' not found").
                let unknown_function = matches!(
                    e.find_root(),
                    datafusion::error::DataFusionError::Plan(m) if m.starts_with("table function")
                );
                for reference in references.iter().filter(|_| !unknown_function) {
                    self.check_table(reference).await?;
                }
                return Err(e.into());
            }
        };
        policy::check_plan(&plan)?;
        let deterministic = is_deterministic(&plan);
        let mut reads = std::mem::take(&mut *reads.lock().expect("reads lock"));
        reads.sort();
        reads.dedup();
        let deterministic = deterministic && !reads.iter().any(|read| read.files);
        Ok(LogicalQuery { ctx, plan, reads, deterministic })
    }

    /// Fails with [`Error::TableNotFound`] if `reference` names no table of the catalog.
    async fn check_table(&self, reference: &TableReference) -> Result<()> {
        if reference.schema() == Some("information_schema") {
            return Ok(());
        }
        if let Some(catalog) = reference.catalog() {
            if catalog != CATALOG_NAME {
                return Err(Error::TableNotFound(reference.to_string()));
            }
        }
        let namespace = reference.schema().unwrap_or(tarn_catalog::DEFAULT_NAMESPACE);
        let table = timetravel::split_name(reference.table()).map_err(Error::BadQuery)?.0;
        let name = TableName::stored(namespace, table)
            .map_err(|_| Error::TableNotFound(reference.to_string()))?;
        match self.catalog.definition(&name).await {
            Ok(_) => Ok(()),
            Err(tarn_catalog::Error::TableNotFound { .. }) => {
                Err(Error::TableNotFound(name.to_string()))
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// The one statement of `sql`, parsed as the session parses (its dialect and recursion
/// limit); several statements are the user's mistake, said as such.
fn parse_one(sql: &str, options: &datafusion::config::ConfigOptions) -> Result<DfStatement> {
    let dialect_name = options.sql_parser.dialect;
    let dialect = dialect_from_str(dialect_name).ok_or_else(|| {
        Error::Engine(datafusion::error::DataFusionError::Configuration(format!(
            "unknown SQL dialect {dialect_name}"
        )))
    })?;
    let mut statements = DFParserBuilder::new(sql)
        .with_dialect(dialect.as_ref())
        .with_recursion_limit(options.sql_parser.recursion_limit.get())
        .build()?
        .parse_statements()?;
    match statements.len() {
        0 => Err(Error::BadQuery("the SQL text holds no statement".into())),
        1 => Ok(statements.pop_front().expect("one statement")),
        n => Err(Error::BadQuery(format!(
            "the SQL text holds {n} statements; send one statement per request (over the \
             Postgres endpoint, a message may hold several)"
        ))),
    }
}

/// The version of PostgreSQL whose protocol and catalog Tarn speaks (that of the pgwire and
/// pg_catalog crates it is built on).
pub const POSTGRES_VERSION: &str = "16.6";

/// What `version()` answers: the form PostgreSQL and compatible servers use, which clients
/// such as SQLAlchemy read the version from (`PostgreSQL 16.6 (Tarn 0.1.0 on DataFusion
/// 55.2.0)`).
pub fn version_text() -> String {
    format!(
        "PostgreSQL {POSTGRES_VERSION} (Tarn {} on DataFusion {})",
        env!("CARGO_PKG_VERSION"),
        datafusion::DATAFUSION_VERSION
    )
}

/// `version()`, in place of DataFusion's own (`Apache DataFusion 55.2.0, x86_64 on linux`).
pub(crate) fn version_udf() -> datafusion::logical_expr::ScalarUDF {
    use datafusion::common::ScalarValue;
    use datafusion::logical_expr::ColumnarValue;
    let text = version_text();
    datafusion::logical_expr::create_udf(
        "version",
        vec![],
        arrow::datatypes::DataType::Utf8,
        Volatility::Immutable,
        Arc::new(move |_| Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(text.clone()))))),
    )
}

/// The runtime of queries within `config`'s limits: a memory pool shared fairly (with spill)
/// and the spill directory. With `lake`, object stores not registered are the lake's (its
/// credentials, for any bucket): for workers, which read what serving nodes planned.
pub(crate) fn runtime_env(
    config: &QueryConfig,
    lake: Option<Arc<Lake>>,
) -> Result<Arc<RuntimeEnv>> {
    let pool = TrackConsumersPool::new(
        FairSpillPool::new(config.memory_limit),
        NonZeroUsize::new(5).expect("non-zero"),
    );
    let mode = match &config.spill_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| {
                Error::BadQuery(format!("cannot create the spill directory {}: {e}", dir.display()))
            })?;
            DiskManagerMode::Directories(vec![dir.clone()])
        }
        None => DiskManagerMode::OsTmpDirectory,
    };
    let mut builder =
        RuntimeEnvBuilder::new().with_memory_pool(Arc::new(pool)).with_disk_manager_builder(
            DiskManagerBuilder::default()
                .with_mode(mode)
                .with_max_temp_directory_size(config.max_spill_bytes),
        );
    if let Some(lake) = lake {
        builder = builder.with_object_store_registry(Arc::new(LakeStores {
            lake,
            registered: DefaultObjectStoreRegistry::new(),
        }));
    }
    Ok(builder.build_arc()?)
}

/// Object stores by URL: those registered, else the lake's store for the URL's bucket.
#[derive(Debug)]
struct LakeStores {
    lake: Arc<Lake>,
    registered: DefaultObjectStoreRegistry,
}

impl ObjectStoreRegistry for LakeStores {
    fn register_store(
        &self,
        url: &url::Url,
        store: Arc<dyn object_store::ObjectStore>,
    ) -> Option<Arc<dyn object_store::ObjectStore>> {
        self.registered.register_store(url, store)
    }

    fn deregister_store(
        &self,
        url: &url::Url,
    ) -> datafusion::error::Result<Arc<dyn object_store::ObjectStore>> {
        self.registered.deregister_store(url)
    }

    fn get_store(
        &self,
        url: &url::Url,
    ) -> datafusion::error::Result<Arc<dyn object_store::ObjectStore>> {
        if url.scheme() != "file" {
            if let Ok(store) = self.registered.get_store(url) {
                return Ok(store);
            }
            return self.lake.store_for_url(url).map_err(crate::error::carry);
        }
        self.registered.get_store(url)
    }
}

/// The configuration of every query session: DataFusion's defaults, then its settings from
/// the environment (`DATAFUSION_OPTIMIZER_USE_STATISTICS_REGISTRY=true`,
/// `DATAFUSION_EXECUTION_PARQUET_PUSHDOWN_FILTERS=true`, ...: DataFusion's own names, for
/// operators and experiments), then Tarn's (batch size, partitions).
fn session_config(config: &QueryConfig) -> Result<SessionConfig> {
    let base = SessionConfig::from_env().map_err(|e| {
        Error::BadQuery(format!("a DATAFUSION_* setting in the environment is not valid: {e}"))
    })?;
    Ok(base
        .with_batch_size(config.batch_size)
        .with_target_partitions(config.partitions.max(1))
        .with_information_schema(true)
        .with_create_default_catalog_and_schema(false)
        .with_default_catalog_and_schema(CATALOG_NAME, tarn_catalog::DEFAULT_NAMESPACE))
}

/// False if the plan calls a function whose result may change between runs over the same
/// data (`now()`, `current_date`, `random()`, `uuid()`).
fn is_deterministic(plan: &LogicalPlan) -> bool {
    let mut deterministic = true;
    let _ = plan.apply_with_subqueries(|node| {
        node.apply_expressions(|expr| {
            expr.apply(|e| {
                if let Expr::ScalarFunction(f) = e {
                    if f.func.signature().volatility != Volatility::Immutable {
                        deterministic = false;
                        return Ok(TreeNodeRecursion::Stop);
                    }
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    });
    deterministic
}

/// The sum of one metric over every operator of `plan`.
pub(crate) fn metric_total(
    plan: &dyn ExecutionPlan,
    metric: fn(&MetricsSet) -> Option<usize>,
) -> u64 {
    let mut total = plan.metrics().as_ref().and_then(metric).unwrap_or(0) as u64;
    for child in plan.children() {
        total += metric_total(child.as_ref(), metric);
    }
    total
}

/// The bound on concurrent queries: `max_concurrent` run, up to `max_queued` wait, the rest
/// are refused ([`Error::TooManyQueries`], 429).
#[derive(Debug)]
pub struct Admission {
    slots: Arc<Semaphore>,
    max_concurrent: usize,
    waiting: AtomicUsize,
    max_queued: usize,
}

/// A place in the queue (see [`Admission::enter`]); dropping it leaves the queue.
#[derive(Debug)]
pub struct Ticket {
    admission: Arc<Admission>,
}

impl Admission {
    fn new(max_concurrent: usize, max_queued: usize) -> Self {
        let max_concurrent = max_concurrent.max(1);
        Admission {
            slots: Arc::new(Semaphore::new(max_concurrent)),
            max_concurrent,
            waiting: AtomicUsize::new(0),
            max_queued,
        }
    }

    /// Takes a place in the queue, or fails at once when it is full.
    pub fn enter(self: &Arc<Self>) -> Result<Ticket> {
        let queued = self.waiting.fetch_add(1, Ordering::AcqRel);
        if queued >= self.max_queued && self.slots.available_permits() == 0 {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(Error::TooManyQueries(format!(
                "{} queries are running and {queued} are waiting, the most this server queues; retry later",
                self.running()
            )));
        }
        Ok(Ticket { admission: self.clone() })
    }

    /// Queries running now.
    pub fn running(&self) -> usize {
        self.max_concurrent - self.slots.available_permits()
    }

    /// Queries waiting for a slot now.
    pub fn queued(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }
}

impl Ticket {
    /// Waits for an execution slot; the slot is held until the permit is dropped.
    pub async fn admit(self) -> OwnedSemaphorePermit {
        let permit = self
            .admission
            .slots
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        drop(self);
        permit
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.admission.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}
