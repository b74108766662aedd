//! Scale-out: query stages run on `tarn worker` processes.
//!
//! The distributed engine is datafusion-distributed's: a distributed plan is the DataFusion
//! plan the serving node makes, cut into stages at its shuffles and merges, the stages' tasks
//! sent to workers over gRPC (datafusion-proto for the plans, Arrow IPC for the rows), the
//! workers exchanging shuffled rows among themselves and the serving node running the last
//! stage. Tarn adds what a lake needs around it:
//!
//! - **Which queries are distributed.** A query is distributed when workers answer and its
//!   plan can be sent: every scan is one datafusion-proto serializes (Tarn's own Delta scan,
//!   crawled Parquet/CSV/NDJSON files, values), and every function is one a worker knows
//!   (DataFusion's own and Tarn's `version()`). Others (deltalake's provider for tables with
//!   deletion vectors, `information_schema`, the Postgres catalog functions) run on the
//!   serving node, as they would without workers. Small scans stay on one task: a stage
//!   gets a task per [`ClusterConfig::bytes_per_task`] of Parquet.
//! - **Workers that are down.** The serving node probes its workers ([`PROBE_EVERY`]) and
//!   plans on those that answer, so queries start while some are down; with none up they run
//!   on the serving node. A worker that dies while it runs a query fails that query with
//!   [`crate::Error::WorkersUnavailable`] (503 with `Retry-After`).
//! - **Who may ask.** Workers accept stages only with the cluster's shared secret (in every
//!   gRPC call, from the serving node and from other workers); they read the lake with their
//!   own credentials, and serve nothing else. Keep them on a private network.
//! - **EXPLAIN** of a distributed query shows the stages and their tasks
//!   (`distributed_plan`); `EXPLAIN ANALYZE` runs it and shows each stage's metrics.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock, Mutex, RwLock};
use std::time::Duration;

use arrow::array::{RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::context::QueryPlanner;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_planner::{DefaultPhysicalPlanner, PhysicalPlanner};
use datafusion_distributed::grpc::{
    create_worker_client, BoxCloneSyncChannel, DefaultChannelResolver,
};
use datafusion_distributed::{
    display_plan_ascii, ChannelResolver, DistributedExec, DistributedExt, SessionStateBuilderExt,
    Worker, WorkerChannel, WorkerQueryContext, WorkerResolver,
};
use tarn_lake::Lake;
use url::Url;

use crate::{Error, QueryConfig};

/// The metadata key that carries the cluster's shared secret in every gRPC call to a worker.
const SECRET_HEADER: &str = "x-tarn-cluster-secret";

/// How often the serving node checks which workers answer, and how long one check may take.
pub const PROBE_EVERY: Duration = Duration::from_secs(2);
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Where a serving node runs query stages.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The workers' URLs (`http://host:port`), as the workers reach each other too: shuffled
    /// rows go from worker to worker.
    pub workers: Vec<Url>,
    /// The secret the workers were started with.
    pub secret: String,
    /// Parquet bytes per task of a scan stage: a scan of fewer bytes runs as one task.
    pub bytes_per_task: usize,
    /// How often the workers are probed ([`PROBE_EVERY`] by default).
    pub probe_every: Duration,
}

impl ClusterConfig {
    /// The shortest secret accepted: a guessable one would let anyone who reaches a worker
    /// read the lake through it.
    pub const MIN_SECRET_LEN: usize = 16;

    /// Default [`ClusterConfig::bytes_per_task`]: datafusion-distributed's 16 MiB per
    /// partition.
    pub const DEFAULT_BYTES_PER_TASK: usize = 16 << 20;

    /// Checks the settings: at least one worker, `http(s)` URLs, a long enough secret.
    pub fn check(&self) -> std::result::Result<(), String> {
        if self.workers.is_empty() {
            return Err("no workers are named".into());
        }
        if let Some(bad) = self.workers.iter().find(|u| !matches!(u.scheme(), "http" | "https")) {
            return Err(format!("worker URL '{bad}' is not http:// or https://"));
        }
        check_secret(&self.secret)
    }
}

/// Refuses a secret shorter than [`ClusterConfig::MIN_SECRET_LEN`].
pub fn check_secret(secret: &str) -> std::result::Result<(), String> {
    if secret.len() < ClusterConfig::MIN_SECRET_LEN {
        return Err(format!(
            "the cluster secret must be at least {} characters (e.g. from `openssl rand -hex 24`)",
            ClusterConfig::MIN_SECRET_LEN
        ));
    }
    Ok(())
}

/// The workers of a serving node, and which of them answered the last probe.
#[derive(Debug)]
pub(crate) struct Workers {
    config: ClusterConfig,
    live: RwLock<Vec<Url>>,
}

impl Workers {
    /// The workers of `config`, all taken as live until the first probe says otherwise; the
    /// probes run on the current Tokio runtime for as long as the returned value is used.
    pub(crate) fn start(config: ClusterConfig) -> Arc<Self> {
        let workers = Arc::new(Workers { live: RwLock::new(config.workers.clone()), config });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(probe(Arc::downgrade(&workers)));
        }
        workers
    }

    fn live(&self) -> Vec<Url> {
        self.live.read().expect("live workers").clone()
    }

    /// Sets up distributed planning in a session being built: the workers, the secret in every
    /// call, stage sizes, and the planner that decides per query.
    pub(crate) fn distribute(
        self: &Arc<Self>,
        builder: SessionStateBuilder,
    ) -> SessionStateBuilder {
        let mut builder = builder
            .with_distributed_worker_resolver(LiveWorkers(self.clone()))
            .with_distributed_channel_resolver(SecretChannels::new(&self.config.secret))
            .with_distributed_planner();
        builder
            .set_distributed_file_scan_config_bytes_per_partition(self.config.bytes_per_task)
            .expect("a valid option");
        // Plans that can be sent: distributed by datafusion-distributed's planner. Others: on
        // this node.
        builder.with_query_planner(Arc::new(ClusterPlanner { workers: self.clone() }))
    }
}

/// Probes every worker until `workers` is dropped: a TCP connection within
/// [`PROBE_TIMEOUT`] counts as live. (A worker that accepts connections but fails tasks is
/// not caught here: its queries fail with 503 and say which worker.)
async fn probe(workers: std::sync::Weak<Workers>) {
    loop {
        let Some(strong) = workers.upgrade() else { return };
        let urls = strong.config.workers.clone();
        let every = strong.config.probe_every;
        drop(strong);
        let checks = urls.iter().map(|url| async move {
            let Some(host) = url.host_str() else { return false };
            let port = url.port_or_known_default().unwrap_or(80);
            matches!(
                tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect((host, port)))
                    .await,
                Ok(Ok(_))
            )
        });
        let answers = futures::future::join_all(checks).await;
        let live: Vec<Url> =
            urls.iter().zip(answers).filter(|(_, up)| *up).map(|(u, _)| u.clone()).collect();
        {
            let Some(strong) = workers.upgrade() else { return };
            let mut current = strong.live.write().expect("live workers");
            if *current != live {
                let down: Vec<String> =
                    urls.iter().filter(|u| !live.contains(u)).map(|u| u.to_string()).collect();
                tracing::warn!(live = live.len(), down = ?down, "the workers that answer changed");
            }
            *current = live;
        }
        tokio::time::sleep(every).await;
    }
}

/// The workers that answered the last probe, for datafusion-distributed's planner.
#[derive(Debug, Clone)]
struct LiveWorkers(Arc<Workers>);

impl WorkerResolver for LiveWorkers {
    fn get_urls(&self) -> Result<Vec<Url>> {
        let live = self.0.live();
        if live.is_empty() {
            return Err(DataFusionError::External(Box::new(Error::WorkersUnavailable(
                "no worker answers".into(),
            ))));
        }
        Ok(live)
    }
}

/// gRPC channels to workers that carry the cluster's secret.
#[derive(Clone)]
struct SecretChannels {
    channels: DefaultChannelResolver,
    secret: http::HeaderValue,
}

impl SecretChannels {
    fn new(secret: &str) -> Self {
        let mut secret = http::HeaderValue::from_str(secret)
            .unwrap_or_else(|_| http::HeaderValue::from_static("invalid"));
        secret.set_sensitive(true);
        SecretChannels { channels: DefaultChannelResolver::default(), secret }
    }
}

#[async_trait]
impl ChannelResolver for SecretChannels {
    async fn get_worker_client_for_url(&self, url: &Url) -> Result<Box<dyn WorkerChannel>> {
        let channel = self.channels.get_channel(url).await?;
        let secret = self.secret.clone();
        let channel = tower::ServiceBuilder::new()
            .map_request(move |mut request: http::Request<tonic::body::Body>| {
                request.headers_mut().insert(SECRET_HEADER, secret.clone());
                request
            })
            .service(channel);
        Ok(create_worker_client(BoxCloneSyncChannel::new(channel)))
    }
}

/// Plans each query on this node first; sends it to the workers when they answer and every
/// part of the plan can be sent.
#[derive(Debug)]
struct ClusterPlanner {
    workers: Arc<Workers>,
}

#[async_trait]
impl QueryPlanner for ClusterPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if let LogicalPlan::Explain(explain) = logical_plan {
            let local = DefaultPhysicalPlanner::default();
            let inner = self.create_physical_plan(&explain.plan, session).await?;
            if !inner.is::<DistributedExec>() {
                return local.create_physical_plan(logical_plan, session).await;
            }
            // DataFusion's EXPLAIN plans the statement with its own planner; show the stages.
            return distributed_explain(logical_plan, inner);
        }
        let planner = DefaultPhysicalPlanner::default();
        let plan = planner.create_physical_plan(logical_plan, session).await?;
        if self.workers.live().is_empty() {
            return Ok(plan);
        }
        if let Some(reason) = local_only(logical_plan, &plan) {
            tracing::debug!(reason = %reason, "the query runs on this node");
            return Ok(plan);
        }
        // datafusion-distributed's planner over the plan just made: it cuts it into stages.
        let mut relay = SessionStateBuilder::new()
            .with_query_planner(Arc::new(Planned(Mutex::new(Some(plan)))))
            .with_distributed_planner();
        let distributed = relay.query_planner().take().expect("the distributed planner");
        distributed.create_physical_plan(logical_plan, session).await
    }
}

/// A planner that hands out a plan made already (once).
#[derive(Debug)]
struct Planned(Mutex<Option<Arc<dyn ExecutionPlan>>>);

#[async_trait]
impl QueryPlanner for Planned {
    async fn create_physical_plan(
        &self,
        _: &LogicalPlan,
        _: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.0
            .lock()
            .expect("planned")
            .take()
            .ok_or_else(|| DataFusionError::Internal("the plan was handed out already".into()))
    }
}

/// `EXPLAIN` of a distributed query: the logical plan, and the stages with their tasks.
fn distributed_explain(
    logical_plan: &LogicalPlan,
    distributed: Arc<dyn ExecutionPlan>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let LogicalPlan::Explain(explain) = logical_plan else {
        unreachable!("called for EXPLAIN only")
    };
    let schema = Arc::new(Schema::new(vec![
        Field::new("plan_type", DataType::Utf8, false),
        Field::new("plan", DataType::Utf8, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from(vec!["logical_plan", "distributed_plan"])),
            Arc::new(StringArray::from(vec![
                explain.plan.display_indent().to_string(),
                display_plan_ascii(distributed.as_ref(), false),
            ])),
        ],
    )?;
    Ok(datafusion::datasource::memory::MemorySourceConfig::try_new_exec(
        &[vec![batch]],
        schema,
        None,
    )?)
}

/// Why `plan` cannot be sent to workers, if it cannot.
fn local_only(logical: &LogicalPlan, plan: &Arc<dyn ExecutionPlan>) -> Option<String> {
    if let Some(function) = unknown_function(logical) {
        return Some(format!("workers do not know the function {function}()"));
    }
    // What datafusion-proto cannot encode (deltalake's scan, information_schema's tables)
    // could not be sent: the same check the sending does.
    datafusion_proto::bytes::physical_plan_to_bytes(plan.clone())
        .err()
        .map(|e| format!("the plan cannot be sent: {e}"))
}

/// The functions every worker knows: DataFusion's own, and Tarn's.
static WORKER_FUNCTIONS: LazyLock<HashSet<String>> = LazyLock::new(|| {
    let state = worker_session(SessionStateBuilder::new().with_default_features())
        .expect("a session of DataFusion's defaults");
    let mut names: HashSet<String> = state.udfs();
    names.extend(state.udafs());
    names.extend(state.udwfs());
    names
});

/// A function `plan` calls that workers do not know (e.g. one only the Postgres endpoint's
/// sessions have).
fn unknown_function(plan: &LogicalPlan) -> Option<String> {
    let mut unknown = None;
    let _ = plan.apply_with_subqueries(|node| {
        node.apply_expressions(|expr| {
            expr.apply(|e| {
                let name = match e {
                    Expr::ScalarFunction(f) => f.func.name(),
                    Expr::AggregateFunction(f) => f.func.name(),
                    Expr::WindowFunction(f) => f.fun.name(),
                    _ => return Ok(TreeNodeRecursion::Continue),
                };
                if !WORKER_FUNCTIONS.contains(name) {
                    unknown = Some(name.to_string());
                    return Ok(TreeNodeRecursion::Stop);
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    });
    unknown
}

/// A worker's session: DataFusion's defaults plus Tarn's functions.
fn worker_session(
    builder: SessionStateBuilder,
) -> Result<datafusion::execution::session_state::SessionState> {
    let mut state = builder.build();
    state.register_udf(Arc::new(crate::engine::version_udf()))?;
    Ok(state)
}

/// Checks the cluster secret of every call to a worker.
#[derive(Clone)]
struct SecretCheck {
    secret: Arc<[u8]>,
}

impl tonic::service::Interceptor for SecretCheck {
    fn call(
        &mut self,
        request: tonic::Request<()>,
    ) -> std::result::Result<tonic::Request<()>, tonic::Status> {
        let given = request.metadata().get(SECRET_HEADER).map(|v| v.as_bytes()).unwrap_or_default();
        if equal_in_constant_time(given, &self.secret) {
            Ok(request)
        } else {
            Err(tonic::Status::unauthenticated(
                "this is a Tarn worker: it serves only the serving nodes of its cluster (wrong or missing cluster secret)",
            ))
        }
    }
}

fn equal_in_constant_time(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Runs a worker on `listener` until `shutdown`: stages of queries planned by serving nodes
/// that know `secret`, reading the lake's storage with `lake`'s credentials, within the
/// memory and spill limits of `config` (shared by every task on this worker).
pub async fn serve_worker(
    lake: Arc<Lake>,
    config: &QueryConfig,
    secret: &str,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> crate::Result<()> {
    check_secret(secret).map_err(Error::BadQuery)?;
    let runtime: Arc<RuntimeEnv> = crate::engine::runtime_env(config, Some(lake))?;
    let channels = SecretChannels::new(secret);
    let batch_size = config.batch_size;
    let worker = Worker::from_session_builder(move |ctx: WorkerQueryContext| {
        let channels = channels.clone();
        async move {
            // Workers call each other for shuffled rows, with the secret too.
            let mut builder = ctx.builder.with_distributed_channel_resolver(channels);
            if let Some(config) = builder.config().take() {
                *builder.config() = Some(config.with_batch_size(batch_size));
            }
            worker_session(builder)
        }
    })
    .with_runtime_env(runtime)
    .with_version(env!("CARGO_PKG_VERSION"));
    let service = tonic::service::interceptor::InterceptedService::new(
        worker.into_worker_server(),
        SecretCheck { secret: secret.as_bytes().into() },
    );
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| Error::WorkersUnavailable(format!("the worker stopped: {e}")))?;
    Ok(())
}

/// The address a worker listens on by default: loopback only (workers serve no public).
pub const DEFAULT_WORKER_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 7000);
