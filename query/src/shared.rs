//! Aggregations a query computes twice, computed once.
//!
//! A view or common table expression used twice is planned twice by DataFusion: TPC-H Q15's
//! `revenue0` (a grouped sum over `lineitem`) is computed for the `max` of its subquery and
//! again for the join, scanning the table twice. Here:
//!
//! 1. [`ShareRepeatedAggregates`], the last logical optimizer rule, finds aggregations (with a
//!    table scan below them) that appear more than once in the optimized plan, its subqueries
//!    included, and wraps each occurrence in a `SharedPlan` node with one id. Identical means
//!    identical after the other rules ran: copies that received different filters stay apart.
//!    The node is a barrier for the rules that run after it (filters, projections and limits
//!    are not pushed into it), so the copies stay identical.
//! 2. [`SharedPlanner`] plans each node as a [`SharedExec`] over its own physical input.
//! 3. [`LinkShared`], the last physical optimizer rule, links the `SharedExec`s of one id
//!    whose inputs are still the same plan: per output partition, the first copy polled runs
//!    its input once, in a task of its own, keeping the batches; every copy then streams
//!    them. The kept batches are held under the query memory pool and at most
//!    [`MAX_KEPT_BYTES`] per partition; past that, the copy that started the run streams what
//!    was kept and the rest of its input, and the others run their own input (as without
//!    sharing).
//!
//! The batches are released when every copy has taken them, or with the plan.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::runtime::SpawnedTask;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{internal_err, DFSchemaRef, DataFusionError, Result, Statistics};
use datafusion::config::ConfigOptions;
use datafusion::execution::context::QueryPlanner;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{
    Extension, LogicalPlan, UserDefinedLogicalNode, UserDefinedLogicalNodeCore,
};
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::metrics::{
    BaselineMetrics, Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet,
};
use datafusion::physical_plan::statistics::{ChildStats, StatisticsArgs};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    displayable, DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties,
};
use datafusion::physical_planner::{DefaultPhysicalPlanner, ExtensionPlanner, PhysicalPlanner};
use futures::{StreamExt, TryStreamExt};
use tokio::sync::watch;

/// The most bytes of batches one output partition of a shared subplan keeps for its copies.
pub const MAX_KEPT_BYTES: usize = 64 << 20;

/// The logical rule: see the [module documentation](self).
#[derive(Debug, Default)]
pub struct ShareRepeatedAggregates;

/// A subplan computed once for every node of the same `id`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd)]
struct SharedPlan {
    id: usize,
    input: LogicalPlan,
}

/// An aggregation over at least one table scan: worth computing once, and usually small.
fn is_candidate(plan: &LogicalPlan) -> bool {
    matches!(plan, LogicalPlan::Aggregate(_))
        && plan.exists(|node| Ok(matches!(node, LogicalPlan::TableScan(_)))).unwrap_or(false)
}

fn shared(plan: &LogicalPlan) -> Option<&SharedPlan> {
    match plan {
        LogicalPlan::Extension(Extension { node }) => node.as_any().downcast_ref::<SharedPlan>(),
        _ => None,
    }
}

impl OptimizerRule for ShareRepeatedAggregates {
    fn name(&self) -> &str {
        "share_repeated_aggregates"
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        // Counted across subqueries; nothing when an earlier pass shared (or in a recursive
        // query).
        let mut seen = false;
        let mut counts: HashMap<LogicalPlan, usize> = HashMap::new();
        plan.apply_with_subqueries(|node| {
            // A recursive query runs its recursive term again on each step, over another
            // work table: what a copy kept would be stale.
            if shared(node).is_some() || matches!(node, LogicalPlan::RecursiveQuery(_)) {
                seen = true;
                return Ok(TreeNodeRecursion::Stop);
            }
            if is_candidate(node) {
                *counts.entry(node.clone()).or_default() += 1;
            }
            Ok(TreeNodeRecursion::Continue)
        })?;
        if seen || counts.values().all(|n| *n < 2) {
            return Ok(Transformed::no(plan));
        }
        // Outermost first: an aggregation inside a shared one is computed once already.
        let mut ids: HashMap<LogicalPlan, usize> = HashMap::new();
        let mut uses: HashMap<usize, usize> = HashMap::new();
        let plan = plan.transform_down_with_subqueries(|node| {
            if !is_candidate(&node) || counts.get(&node).is_none_or(|n| *n < 2) {
                return Ok(Transformed::no(node));
            }
            let next = ids.len();
            let id = *ids.entry(node.clone()).or_insert(next);
            *uses.entry(id).or_default() += 1;
            let wrapped = LogicalPlan::Extension(Extension {
                node: Arc::new(SharedPlan { id, input: node }),
            });
            Ok(Transformed::new(wrapped, true, TreeNodeRecursion::Jump))
        })?;
        if uses.values().all(|n| *n >= 2) {
            return Ok(plan);
        }
        // An aggregation repeated only inside another shared one is left as it was.
        plan.data
            .transform_up_with_subqueries(|node| match shared(&node) {
                Some(s) if uses[&s.id] < 2 => Ok(Transformed::yes(s.input.clone())),
                _ => Ok(Transformed::no(node)),
            })
            .map(|t| Transformed::yes(t.data))
    }
}

impl UserDefinedLogicalNodeCore for SharedPlan {
    fn name(&self) -> &str {
        "SharedPlan"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![&self.input]
    }

    fn schema(&self) -> &DFSchemaRef {
        self.input.schema()
    }

    fn expressions(&self) -> Vec<datafusion::logical_expr::Expr> {
        Vec::new()
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "SharedPlan: subplan {}, computed once for its uses", self.id)
    }

    fn with_exprs_and_inputs(
        &self,
        _exprs: Vec<datafusion::logical_expr::Expr>,
        mut inputs: Vec<LogicalPlan>,
    ) -> Result<Self> {
        if inputs.len() != 1 {
            return internal_err!("SharedPlan takes one input, not {}", inputs.len());
        }
        Ok(SharedPlan { id: self.id, input: inputs.swap_remove(0) })
    }
}

/// Plans `SharedPlan` nodes as [`SharedExec`]s (not linked yet: see [`LinkShared`]).
#[derive(Debug, Default)]
pub struct SharedPlanner;

#[async_trait]
impl ExtensionPlanner for SharedPlanner {
    async fn plan_extension(
        &self,
        _planner: &dyn PhysicalPlanner,
        node: &dyn UserDefinedLogicalNode,
        _logical_inputs: &[&LogicalPlan],
        physical_inputs: &[Arc<dyn ExecutionPlan>],
        _session: &dyn Session,
        _planning_ctx: &PhysicalPlanningContext,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        let Some(node) = node.as_any().downcast_ref::<SharedPlan>() else {
            return Ok(None);
        };
        let [input] = physical_inputs else {
            return internal_err!("SharedPlan takes one input, not {}", physical_inputs.len());
        };
        Ok(Some(Arc::new(SharedExec::new(node.id, Arc::clone(input)))))
    }
}

/// DataFusion's planner with [`SharedPlanner`].
#[derive(Debug, Default)]
pub struct SharedQueryPlanner;

#[async_trait]
impl QueryPlanner for SharedQueryPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        DefaultPhysicalPlanner::with_extension_planners(vec![Arc::new(SharedPlanner)])
            .create_physical_plan(logical_plan, session)
            .await
    }
}

/// The physical rule linking the copies of each shared subplan: see the
/// [module documentation](self).
#[derive(Debug)]
pub struct LinkShared {
    /// The most bytes one output partition keeps for the copies.
    pub max_kept: usize,
}

impl Default for LinkShared {
    fn default() -> Self {
        LinkShared { max_kept: MAX_KEPT_BYTES }
    }
}

impl PhysicalOptimizerRule for LinkShared {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        // The copies of each id, in the order of the walk, by their input's plan.
        let mut copies: HashMap<usize, Vec<(String, usize)>> = HashMap::new();
        plan.apply(|node| {
            if let Some(exec) = node.downcast_ref::<SharedExec>() {
                let shape = displayable(exec.input.as_ref()).indent(true).to_string();
                let partitions = exec.input.properties().partitioning.partition_count();
                copies.entry(exec.id).or_default().push((shape, partitions));
            }
            Ok(TreeNodeRecursion::Continue)
        })?;
        if copies.is_empty() {
            return Ok(plan);
        }
        // Linked: the copies whose input is the first copy's. Copy numbers are per link.
        let mut links: HashMap<usize, (Arc<Link>, Vec<Option<usize>>)> = HashMap::new();
        for (id, shapes) in &copies {
            let mut numbers = Vec::with_capacity(shapes.len());
            let mut linked = 0;
            for shape in shapes {
                if *shape == shapes[0] {
                    numbers.push(Some(linked));
                    linked += 1;
                } else {
                    numbers.push(None);
                }
            }
            if linked >= 2 {
                links.insert(
                    *id,
                    (Arc::new(Link::new(linked, shapes[0].1, self.max_kept)), numbers),
                );
            } else if shapes.len() >= 2 {
                tracing::debug!(
                    subplan = id,
                    "the copies of a shared subplan differ; each runs its own"
                );
            }
        }
        let mut walked: HashMap<usize, usize> = HashMap::new();
        plan.transform_down(|node| {
            let Some(exec) = node.downcast_ref::<SharedExec>() else {
                return Ok(Transformed::no(node));
            };
            let n = walked.entry(exec.id).or_default();
            let number = *n;
            *n += 1;
            let Some((link, numbers)) = links.get(&exec.id) else {
                return Ok(Transformed::no(node));
            };
            let Some(copy) = numbers[number] else {
                return Ok(Transformed::no(node));
            };
            let linked = SharedExec {
                link: Some((Arc::clone(link), copy)),
                metrics: ExecutionPlanMetricsSet::new(),
                ..exec.clone()
            };
            Ok(Transformed::new(Arc::new(linked), true, TreeNodeRecursion::Jump))
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "link_shared"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// One copy of a subplan computed once for all its copies (see the
/// [module documentation](self)). Unlinked, it streams its input.
#[derive(Debug, Clone)]
pub struct SharedExec {
    id: usize,
    input: Arc<dyn ExecutionPlan>,
    /// The link of the copies and this copy's number in it.
    link: Option<(Arc<Link>, usize)>,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl SharedExec {
    fn new(id: usize, input: Arc<dyn ExecutionPlan>) -> Self {
        let properties = Arc::clone(input.properties());
        SharedExec { id, input, link: None, properties, metrics: ExecutionPlanMetricsSet::new() }
    }
}

impl DisplayAs for SharedExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let uses = self.link.as_ref().map_or(1, |(link, _)| link.uses);
        match t {
            DisplayFormatType::TreeRender => write!(f, "subplan={}\nuses={uses}", self.id),
            _ => match &self.link {
                Some((_, copy)) => write!(
                    f,
                    "SharedExec: subplan {}, copy {} of {uses}, computed once",
                    self.id,
                    copy + 1
                ),
                None => write!(f, "SharedExec: subplan {}, not shared", self.id),
            },
        }
    }
}

impl ExecutionPlan for SharedExec {
    fn name(&self) -> &'static str {
        "SharedExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    /// No: a sort pushed below one copy would make the copies differ.
    fn maintains_input_order(&self) -> Vec<bool> {
        vec![false]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return internal_err!("SharedExec takes one input, not {}", children.len());
        }
        let input = children.swap_remove(0);
        let properties = match options.children_properties {
            ChildrenPropertiesMode::Keep => Arc::clone(&self.properties),
            ChildrenPropertiesMode::Recompute => Arc::clone(input.properties()),
        };
        Ok(Arc::new(SharedExec {
            id: self.id,
            input,
            link: self.link.clone(),
            properties,
            metrics: ExecutionPlanMetricsSet::new(),
        }))
    }

    #[allow(deprecated)]
    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let Some((link, copy)) = &self.link else {
            return self.input.execute(partition, context);
        };
        if partition >= link.partitions.len() {
            return internal_err!("SharedExec has no partition {partition}");
        }
        let (link, copy, input) = (Arc::clone(link), *copy, Arc::clone(&self.input));
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let computed = MetricBuilder::new(&self.metrics).counter("computed", partition);
        let reused = MetricBuilder::new(&self.metrics).counter("reused", partition);
        let schema = self.input.schema();
        let opened =
            async move { link.open(partition, copy, &input, context, computed, reused).await };
        let stream = futures::stream::once(opened).try_flatten();
        let stream = stream.inspect(move |batch| {
            if let Ok(batch) = batch {
                baseline.record_output(batch.num_rows());
            }
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn child_stats_requests(&self, partition: Option<usize>) -> Vec<ChildStats> {
        vec![ChildStats::At(partition)]
    }

    /// The input's: every copy outputs what its input does.
    fn statistics_from_inputs(
        &self,
        input_stats: &[Arc<Statistics>],
        _args: &StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        Ok(Arc::clone(&input_stats[0]))
    }
}

/// What the linked copies of one subplan share: a slot per output partition.
#[derive(Debug)]
pub struct Link {
    /// How many copies take the batches.
    uses: usize,
    /// The most bytes a partition keeps.
    max_kept: usize,
    partitions: Vec<Slot>,
}

impl Link {
    fn new(uses: usize, partitions: usize, max_kept: usize) -> Self {
        let partitions = (0..partitions).map(|_| Slot::default()).collect();
        Link { uses, max_kept, partitions }
    }
}

/// Where one output partition of a shared subplan stands.
#[derive(Debug, Clone)]
enum Phase {
    /// Not started, or running.
    Pending,
    /// Run to its end: the batches, for every copy.
    Done(Arc<Vec<RecordBatch>>),
    /// Failed: the error, for every copy.
    Failed(Arc<DataFusionError>),
    /// Past the bound: the copy `owner` streams the rest; the others run their own input.
    Abandoned { owner: usize },
    /// Every copy took the batches.
    Released,
}

struct Slot {
    /// The run, once a copy started it: its number and the task (aborted with the slot).
    run: Mutex<Option<(usize, Option<SpawnedTask<()>>)>>,
    phase: watch::Sender<Phase>,
    /// For the copy that started an abandoned run: what was kept and the rest of the stream.
    handoff: Mutex<Option<(Vec<RecordBatch>, SendableRecordBatchStream)>>,
    /// The kept batches' memory, until every copy took them.
    reservation: Mutex<Option<MemoryReservation>>,
    taken: AtomicUsize,
}

impl fmt::Debug for Slot {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.debug_struct("Slot").field("phase", &*self.phase.borrow()).finish_non_exhaustive()
    }
}

impl Default for Slot {
    fn default() -> Self {
        Slot {
            run: Mutex::new(None),
            phase: watch::Sender::new(Phase::Pending),
            handoff: Mutex::new(None),
            reservation: Mutex::new(None),
            taken: AtomicUsize::new(0),
        }
    }
}

impl Link {
    /// Copy `copy`'s stream of `partition`: the kept batches once the run is done, else (past
    /// the bound) the rest of the run for the copy that started it and its own input for the
    /// others.
    async fn open(
        self: Arc<Self>,
        partition: usize,
        copy: usize,
        input: &Arc<dyn ExecutionPlan>,
        context: Arc<TaskContext>,
        computed: Count,
        reused: Count,
    ) -> Result<SendableRecordBatchStream> {
        let slot = &self.partitions[partition];
        let mut phase = slot.phase.subscribe();
        self.start(partition, copy, input, &context, &computed);
        let settled = phase
            .wait_for(|p| !matches!(p, Phase::Pending))
            .await
            .map_err(|_| DataFusionError::Internal("a shared subplan's slot is gone".into()))?
            .clone();
        let schema = input.schema();
        match settled {
            Phase::Done(batches) => {
                reused.add(1);
                if slot.taken.fetch_add(1, Ordering::AcqRel) + 1 == self.uses {
                    slot.phase.send_replace(Phase::Released);
                    slot.reservation.lock().expect("shared reservation").take();
                }
                let batches = (0..batches.len()).map(move |i| Ok(batches[i].clone()));
                Ok(Box::pin(RecordBatchStreamAdapter::new(schema, futures::stream::iter(batches))))
            }
            Phase::Failed(e) => Err(DataFusionError::Shared(e)),
            Phase::Abandoned { owner } if owner == copy => {
                let Some((kept, rest)) = slot.handoff.lock().expect("shared handoff").take() else {
                    return internal_err!("a shared subplan's run was handed over twice");
                };
                let kept = futures::stream::iter(kept.into_iter().map(Ok));
                Ok(Box::pin(RecordBatchStreamAdapter::new(schema, kept.chain(rest))))
            }
            Phase::Abandoned { .. } | Phase::Released => {
                computed.add(1);
                input.execute(partition, context)
            }
            Phase::Pending => unreachable!("waited for a settled phase"),
        }
    }

    /// Starts the run of `partition` with copy `copy`'s input, unless a copy did.
    fn start(
        self: &Arc<Self>,
        partition: usize,
        copy: usize,
        input: &Arc<dyn ExecutionPlan>,
        context: &Arc<TaskContext>,
        computed: &Count,
    ) {
        let slot = &self.partitions[partition];
        let mut run = slot.run.lock().expect("shared run");
        if run.is_some() {
            return;
        }
        computed.add(1);
        let task = match input.execute(partition, Arc::clone(context)) {
            Ok(stream) => {
                let reservation = MemoryConsumer::new(format!("SharedExec[{partition}]"))
                    .register(context.memory_pool());
                let link = Arc::downgrade(self);
                Some(SpawnedTask::spawn(produce(link, partition, copy, stream, reservation)))
            }
            Err(e) => {
                slot.phase.send_replace(Phase::Failed(Arc::new(e)));
                None
            }
        };
        *run = Some((copy, task));
    }
}

/// Runs one partition of a shared subplan to its end, keeping the batches (see
/// [`Link::open`]). Stops when the link is dropped (the query was).
async fn produce(
    link: Weak<Link>,
    partition: usize,
    owner: usize,
    mut stream: SendableRecordBatchStream,
    reservation: MemoryReservation,
) {
    let Some(max_kept) = link.upgrade().map(|link| link.max_kept) else { return };
    let mut kept = Vec::new();
    let mut bytes = 0;
    let settled = loop {
        let next = stream.next().await;
        let Some(link) = link.upgrade() else { return };
        let slot = &link.partitions[partition];
        match next {
            None => {
                *slot.reservation.lock().expect("shared reservation") = Some(reservation);
                break Phase::Done(Arc::new(std::mem::take(&mut kept)));
            }
            Some(Err(e)) => break Phase::Failed(Arc::new(e)),
            Some(Ok(batch)) => {
                let size = batch.get_array_memory_size();
                kept.push(batch);
                if bytes + size > max_kept || reservation.try_grow(size).is_err() {
                    tracing::debug!(
                        partition,
                        bytes,
                        "a shared subplan's output is too large to keep; its copies run their own"
                    );
                    *slot.handoff.lock().expect("shared handoff") =
                        Some((std::mem::take(&mut kept), stream));
                    break Phase::Abandoned { owner };
                }
                bytes += size;
            }
        }
    };
    if let Some(link) = link.upgrade() {
        link.partitions[partition].phase.send_replace(settled);
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::execution::session_state::SessionStateBuilder;
    use datafusion::physical_plan::collect;
    use datafusion::prelude::{SessionConfig, SessionContext};

    use super::*;

    /// `sales`: 100,000 rows `(k, v)`, `k = v % 1,000`, in 10 batches.
    fn context(share: bool, max_kept: usize) -> SessionContext {
        let config = SessionConfig::new().with_target_partitions(2).with_batch_size(1024);
        let mut state = SessionStateBuilder::new().with_config(config).with_default_features();
        if share {
            state = state
                .with_optimizer_rule(Arc::new(ShareRepeatedAggregates))
                .with_query_planner(Arc::new(SharedQueryPlanner))
                .with_physical_optimizer_rule(Arc::new(LinkShared { max_kept }));
        }
        let ctx = SessionContext::new_with_state(state.build());
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("v", DataType::Int64, false),
        ]));
        let batches = (0..10i64)
            .map(|b| {
                let v: Vec<i64> = (b * 10_000..(b + 1) * 10_000).collect();
                let k: Vec<i64> = v.iter().map(|v| v % 1_000).collect();
                RecordBatch::try_new(
                    schema.clone(),
                    vec![Arc::new(Int64Array::from(k)), Arc::new(Int64Array::from(v))],
                )
                .unwrap()
            })
            .collect();
        let table = datafusion::datasource::MemTable::try_new(schema, vec![batches]).unwrap();
        ctx.register_table("sales", Arc::new(table)).unwrap();
        ctx
    }

    /// Runs `sql`: its answer, the plan as shown, and per shared subplan the runs of its
    /// input (summed over partitions and copies) and the copies served kept batches.
    async fn run(ctx: &SessionContext, sql: &str) -> (String, String, Vec<(usize, usize)>) {
        let plan = ctx.sql(sql).await.unwrap().create_physical_plan().await.unwrap();
        let batches = collect(plan.clone(), ctx.task_ctx()).await.unwrap();
        let answer = arrow::util::pretty::pretty_format_batches(&batches).unwrap().to_string();
        let mut runs: HashMap<usize, (usize, usize)> = HashMap::new();
        plan.apply(|node| {
            if let Some(exec) = node.downcast_ref::<SharedExec>() {
                let metrics = exec.metrics().unwrap();
                let sum = |name| metrics.sum_by_name(name).map_or(0, |v| v.as_usize());
                let entry = runs.entry(exec.id).or_default();
                entry.0 += sum("computed");
                entry.1 += sum("reused");
            }
            Ok(TreeNodeRecursion::Continue)
        })
        .unwrap();
        let mut runs: Vec<_> = runs.into_iter().collect();
        runs.sort();
        let shown = displayable(plan.as_ref()).indent(true).to_string();
        (answer, shown, runs.into_iter().map(|(_, r)| r).collect())
    }

    /// Q15's shape: a grouped sum used by a join and by the scalar subquery of its filter.
    const TOP: &str = "WITH revenue AS (SELECT k, sum(v) AS total FROM sales GROUP BY k) \
        SELECT r.k, r.total, s.n FROM revenue r \
        JOIN (SELECT k, count(*) AS n FROM sales WHERE v < 50000 GROUP BY k) s ON r.k = s.k \
        WHERE r.total = (SELECT max(total) FROM revenue) ORDER BY r.k";

    #[tokio::test]
    async fn a_grouped_sum_used_twice_is_computed_once() {
        let (expected, shown, runs) = run(&context(false, MAX_KEPT_BYTES), TOP).await;
        assert!(!shown.contains("SharedExec"), "{shown}");
        assert!(runs.is_empty());
        assert!(expected.contains("| 999 | 5049900 | 50 |"), "{expected}");

        let (answer, shown, runs) = run(&context(true, MAX_KEPT_BYTES), TOP).await;
        assert_eq!(answer, expected);
        assert!(shown.contains("SharedExec: subplan 0, copy 1 of 2, computed once"), "{shown}");
        assert!(shown.contains("SharedExec: subplan 0, copy 2 of 2, computed once"), "{shown}");
        // Two output partitions, each run once and read by both copies; the other grouped
        // query (another filter) is not shared.
        assert_eq!(runs, vec![(2, 4)], "{shown}");
    }

    #[tokio::test]
    async fn past_the_bound_each_copy_runs_its_own() {
        let (expected, _, _) = run(&context(false, MAX_KEPT_BYTES), TOP).await;
        let (answer, shown, runs) = run(&context(true, 1), TOP).await;
        assert_eq!(answer, expected);
        // The first copy's run is handed to it; the other copy runs its own input.
        assert_eq!(runs, vec![(4, 0)], "{shown}");
    }

    #[tokio::test]
    async fn recursive_queries_are_left_alone() {
        // The recursive term (run again on each step) holds the same aggregation twice.
        let sql = "WITH RECURSIVE steps(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM steps \
            WHERE n < (SELECT count(*) FROM (SELECT k FROM sales GROUP BY k)) / 500 \
            + (SELECT max(k) FROM (SELECT k FROM sales GROUP BY k)) / 999) \
            SELECT n FROM steps ORDER BY n";
        let (expected, _, _) = run(&context(false, MAX_KEPT_BYTES), sql).await;
        let (answer, shown, runs) = run(&context(true, MAX_KEPT_BYTES), sql).await;
        assert_eq!(answer, expected);
        assert!(runs.is_empty(), "{shown}");
        let rows: Vec<&str> = answer.lines().filter(|l| l.starts_with("| ")).skip(1).collect();
        assert_eq!(rows, ["| 1 |", "| 2 |", "| 3 |"], "{answer}");
    }

    #[tokio::test]
    async fn copies_that_differ_are_not_shared() {
        // The filters on the group key reach the scans: two different aggregations.
        let sql = "WITH t AS (SELECT k, sum(v) AS s FROM sales GROUP BY k) \
            SELECT * FROM t WHERE k = 1 UNION ALL SELECT * FROM t WHERE k = 2 ORDER BY k";
        let (answer, shown, runs) = run(&context(true, MAX_KEPT_BYTES), sql).await;
        assert!(runs.is_empty(), "{shown}");
        assert!(answer.contains("| 1 | 4950100 |"), "{answer}");
        assert!(answer.contains("| 2 | 4950200 |"), "{answer}");
        // The same aggregation twice in a union: shared, and answered twice.
        let sql = "WITH t AS (SELECT k, sum(v) AS s FROM sales GROUP BY k) \
            SELECT count(*) AS n, sum(s) AS total FROM (SELECT * FROM t UNION ALL SELECT * FROM t)";
        let (answer, shown, runs) = run(&context(true, MAX_KEPT_BYTES), sql).await;
        assert_eq!(runs, vec![(2, 4)], "{shown}");
        assert!(answer.contains("| 2000 | 9999900000 |"), "{answer}");
    }
}
