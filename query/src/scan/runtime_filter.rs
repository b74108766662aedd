//! Runtime filters: the joins' dynamic filters applied to the rows a Parquet scan returns.
//!
//! DataFusion pushes a hash join's *dynamic filter* (the build side's key bounds and a lookup
//! in its hash table) into the scan of the probe side once the build side is complete; a
//! TopK pushes its current threshold the same way. With `pushdown_filters` off (Tarn's
//! default: decoding the filter columns first loses on ordinary range filters, see
//! BENCHMARKS.md) the Parquet scan uses those filters only to skip row groups, and the
//! probe side still receives every row. When the build side is small — TPC-H Q17's 204 parts
//! against 6M line items, Q18's 57 large orders against 1.5M orders — the operators above
//! the scan then aggregate or join millions of rows that the join drops at once.
//!
//! [`RuntimeFilterExec`] sits right above such a scan (above the scan's own `FilterExec` when
//! it has one: static filters are cheaper and go first) and evaluates some of the scan's
//! dynamic filters on each batch, dropping the rows they reject. Evaluating a filter costs
//! more per row than the join's own lookup (about 40 against 23 ns per row of TPC-H's
//! lineitem here), so a filter is only worth it when the rows it drops would otherwise pass
//! through other joins or aggregations before reaching the operator that made the filter:
//!
//! - A filter whose producer is reached from the scan through repartitions, projections and
//!   filters only (*direct*) is not applied, its join drops the same rows for less, unless
//!   its test is an `IN` list of the join's keys (see [`membership`]): a set lookup is cheaper
//!   than the join's, and the rows it drops skip the repartition before the join.
//! - Every filter is measured over the first [`PROBE_ROWS`] rows of an output partition after
//!   it was filled in. It is then kept when it keeps at most [`MAX_KEPT`] of the rows and,
//!   when indirect, fewer than each direct filter (when the direct join drops more, the
//!   indirect filter would only save the direct join's lookups of rows it drops anyway).
//! - Kept filters are evaluated one after the other on the rows the previous ones kept, the
//!   most selective first. A filter that changes again (a TopK's threshold) is measured anew.
//!
//! [`RuntimeFilters`] is the physical optimizer rule that places the operator, after
//! DataFusion's own filter pushdown.
//!
//! The filters are read from the scan when a partition starts, so a plan whose state is reset
//! (recursive queries) uses the filters of its current join.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use arrow::array::{Array, BooleanArray};
use arrow::compute::kernels::coalesce::BatchCoalescer;
use arrow::compute::{filter_record_batch, prep_null_mask_filter};
use arrow::datatypes::{Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{internal_err, Result, ScalarValue, Statistics};
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::ColumnarValue;
use datafusion::physical_expr::expressions::{
    lit, CaseExpr, DynamicFilterPhysicalExpr, InListExpr, Literal,
};
use datafusion::physical_expr::utils::{reassign_expr_columns, split_conjunction};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::execution_plan::{
    CardinalityEffect, ChildrenPropertiesMode, ReplaceChildrenOptions,
};
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::metrics::{
    BaselineMetrics, Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet,
};
use datafusion::physical_plan::statistics::{ChildStats, StatisticsArgs};
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use futures::{Stream, StreamExt};

/// Rows of one output partition over which a filled-in filter is measured before Tarn decides
/// whether to keep evaluating it.
pub const PROBE_ROWS: usize = 32_768;

/// The largest share of rows an indirect filter may keep and still be evaluated after its
/// probe.
pub const MAX_KEPT: f64 = 0.2;

/// The physical optimizer rule placing a [`RuntimeFilterExec`] above every Parquet scan that
/// received a dynamic filter. Runs after DataFusion's rules (it must see the filters the last
/// `FilterPushdown` pass placed); does nothing when the session decodes pushed filters in the
/// scan itself (`execution.parquet.pushdown_filters`).
#[derive(Debug, Default)]
pub struct RuntimeFilters;

impl PhysicalOptimizerRule for RuntimeFilters {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if config.execution.parquet.pushdown_filters {
            return Ok(plan);
        }
        place(plan, &HashSet::new())
    }

    fn name(&self) -> &str {
        "tarn_runtime_filters"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Operators a row passes through to its join unchanged or dropped, at little cost.
const PASS_THROUGH: [&str; 7] = [
    "RepartitionExec",
    "CoalescePartitionsExec",
    "CoalesceBatchesExec",
    "ProjectionExec",
    "FilterExec",
    "BufferExec",
    "CooperativeExec",
];

/// `plan` with a [`RuntimeFilterExec`] above each scan with dynamic filters; `direct`: the
/// expression ids of the dynamic filters produced above `plan` through pass-through
/// operators only.
fn place(plan: Arc<dyn ExecutionPlan>, direct: &HashSet<u64>) -> Result<Arc<dyn ExecutionPlan>> {
    if plan.downcast_ref::<RuntimeFilterExec>().is_some() {
        return Ok(plan);
    }
    if !dynamic_filters(&plan).is_empty() {
        // Nothing below a scan, or a scan's own filter, needs another look.
        let direct = direct.iter().copied().collect();
        return Ok(Arc::new(RuntimeFilterExec::new(plan, direct)));
    }
    let mut below = match PASS_THROUGH.contains(&plan.name()) {
        true => direct.clone(),
        false => HashSet::new(),
    };
    below.extend(plan.dynamic_expressions_produced().iter().filter_map(|e| e.expression_id()));
    let children: Vec<_> = plan.children().into_iter().cloned().collect();
    let mut changed = false;
    let mut placed = Vec::with_capacity(children.len());
    for child in children {
        let new = place(Arc::clone(&child), &below)?;
        changed |= !Arc::ptr_eq(&new, &child);
        placed.push(new);
    }
    if !changed {
        return Ok(plan);
    }
    plan.replace_children(placed, ReplaceChildrenOptions::new(ChildrenPropertiesMode::Keep))
}

/// The dynamic filters pushed into `plan` when it is a file scan, or a `FilterExec` right
/// above one (the scan's static filters, cheaper, then go first), with their columns numbered
/// as in `plan`'s output. A filter over a column `plan` does not return is left out (the scan
/// still prunes with it).
fn dynamic_filters(plan: &Arc<dyn ExecutionPlan>) -> Vec<Arc<dyn PhysicalExpr>> {
    let scan = match plan.downcast_ref::<FilterExec>() {
        Some(filter) => filter.input(),
        None => plan,
    };
    let Some(scan) = scan.downcast_ref::<DataSourceExec>() else { return Vec::new() };
    let Some(config) = scan.data_source().downcast_ref::<FileScanConfig>() else {
        return Vec::new();
    };
    let Some(predicate) = config.file_source().filter() else { return Vec::new() };
    let schema = plan.schema();
    split_conjunction(&predicate)
        .into_iter()
        .filter(|expr| expr.downcast_ref::<DynamicFilterPhysicalExpr>().is_some())
        .filter_map(|expr| reassign_expr_columns(Arc::clone(expr), &schema).ok())
        .collect()
}

/// Evaluates the dynamic filters of the scan below it on every batch while they drop rows
/// (see the [module documentation](self)). Output partitioning, order and schema are the
/// scan's.
#[derive(Debug)]
pub struct RuntimeFilterExec {
    input: Arc<dyn ExecutionPlan>,
    /// Expression ids of the direct filters (see the module documentation).
    direct: Vec<u64>,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl RuntimeFilterExec {
    /// The operator over `input`, a file scan (or a filter right above one); `direct`: the
    /// expression ids of the filters whose producer `input` reaches through pass-through
    /// operators only.
    pub fn new(input: Arc<dyn ExecutionPlan>, direct: Vec<u64>) -> Self {
        let properties = Arc::clone(input.properties());
        RuntimeFilterExec { input, direct, properties, metrics: ExecutionPlanMetricsSet::new() }
    }
}

impl DisplayAs for RuntimeFilterExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match t {
            DisplayFormatType::TreeRender => write!(f, "max_kept={MAX_KEPT}"),
            _ => write!(
                f,
                "RuntimeFilterExec: the scan's dynamic filters that keep at most {}% of the \
                 rows (measured over {PROBE_ROWS} per partition)",
                MAX_KEPT * 100.0
            ),
        }
    }
}

impl ExecutionPlan for RuntimeFilterExec {
    fn name(&self) -> &'static str {
        "RuntimeFilterExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        // The filters belong to the scan below (and the joins producing them).
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return internal_err!("RuntimeFilterExec takes one input, not {}", children.len());
        }
        let input = children.swap_remove(0);
        Ok(Arc::new(match options.children_properties {
            ChildrenPropertiesMode::Keep => RuntimeFilterExec {
                input,
                direct: self.direct.clone(),
                properties: Arc::clone(&self.properties),
                metrics: ExecutionPlanMetricsSet::new(),
            },
            ChildrenPropertiesMode::Recompute => RuntimeFilterExec::new(input, self.direct.clone()),
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
        let input = self.input.execute(partition, Arc::clone(&context))?;
        let filters = dynamic_filters(&self.input);
        if filters.is_empty() {
            return Ok(input);
        }
        let batch_size = context.session_config().batch_size();
        Ok(Box::pin(RuntimeFilterStream {
            schema: input.schema(),
            coalescer: BatchCoalescer::new(input.schema(), batch_size),
            whole: None,
            input: Some(input),
            filters: filters
                .into_iter()
                .map(|expr| {
                    let direct = expr.expression_id().is_some_and(|id| self.direct.contains(&id));
                    Filter::new(expr, direct)
                })
                .collect(),
            baseline: BaselineMetrics::new(&self.metrics, partition),
            input_rows: MetricBuilder::new(&self.metrics).counter("input_rows", partition),
            filters_kept: MetricBuilder::new(&self.metrics).counter("filters_kept", partition),
            filters_as_lists: MetricBuilder::new(&self.metrics)
                .counter("filters_as_lists", partition),
        }))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn child_stats_requests(&self, partition: Option<usize>) -> Vec<ChildStats> {
        vec![ChildStats::At(partition)]
    }

    /// The scan's, inexact: the filters only drop rows.
    fn statistics_from_inputs(
        &self,
        input_stats: &[Arc<Statistics>],
        _args: &StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        Ok(Arc::new(Statistics::clone(&input_stats[0]).to_inexact()))
    }

    fn cardinality_effect(&self) -> CardinalityEffect {
        CardinalityEffect::LowerEqual
    }
}

/// Where one output partition stands with one filter.
#[derive(Debug, Clone, Copy)]
enum Verdict {
    /// Not filled in yet (still the placeholder `true`).
    Waiting,
    /// Being measured: rows seen and kept since it was filled in (or last changed).
    Probing { seen: usize, kept: usize },
    /// Measured: evaluated on every batch; it kept this share of the rows.
    Keep(f64),
    /// Measured: no longer evaluated (until it changes); it kept this share of the rows.
    Skip(f64),
}

struct Filter {
    expr: Arc<dyn PhysicalExpr>,
    /// What is evaluated for the current generation: the filter's membership test alone, when
    /// it has one (see [`membership`]), else the filter itself.
    test: Arc<dyn PhysicalExpr>,
    /// Made by an operator the scan's rows reach through pass-through operators only.
    direct: bool,
    /// `test` is an `IN` list of the build side's keys (see [`membership`]).
    listed: bool,
    /// The filter's generation when it was last looked at (1: never filled in).
    generation: u64,
    verdict: Verdict,
}

impl Filter {
    fn new(expr: Arc<dyn PhysicalExpr>, direct: bool) -> Self {
        let test = Arc::clone(&expr);
        Filter { expr, test, direct, listed: false, generation: 1, verdict: Verdict::Waiting }
    }

    /// Notices a new generation: the filter is measured (again). True when its test is now an
    /// `IN` list of its own (see [`membership`]).
    fn refresh(&mut self, schema: &Schema) -> bool {
        let generation = self.expr.snapshot_generation();
        if generation == self.generation {
            return false;
        }
        self.generation = generation;
        self.verdict = Verdict::Probing { seen: 0, kept: 0 };
        let current = match self.expr.snapshot() {
            Ok(Some(current)) => current,
            _ => Arc::clone(&self.expr),
        };
        let list = membership(&current, schema);
        self.listed = list.is_some();
        self.test = list.unwrap_or(current);
        self.listed
    }

    /// The share of rows the filter kept, once measured.
    fn share(&self) -> Option<f64> {
        match self.verdict {
            Verdict::Keep(share) | Verdict::Skip(share) => Some(share),
            Verdict::Probing { seen, kept } if seen >= PROBE_ROWS => {
                Some(kept as f64 / seen as f64)
            }
            _ => None,
        }
    }

    /// The order filters are evaluated in: the most selective first.
    fn rank(&self) -> f64 {
        match self.verdict {
            Verdict::Keep(share) => share,
            _ => f64::MAX,
        }
    }
}

/// A cheaper test equivalent to a hash join's filter, when the join sent its build side's keys
/// as `IN` lists (small build sides):
///
/// - `bounds AND key IN (...)` (one build side): the `IN` list alone; the bounds follow from it.
/// - `CASE hash(key) % n WHEN i THEN bounds_i AND key IN (list_i) ... ELSE false END` (a build
///   side per partition): `key IN (list_0 ∪ list_1 ∪ ...)`. Each key of `list_i` went to
///   partition `i` by the same routing, so a row is in the union exactly when it is in its own
///   partition's list. This saves hashing every row twice and the `CASE`'s split of the batch
///   (35 against about 10 ns per row, TPC-H Q17).
///
/// `None` for any other form (hash table lookups of large build sides, filters keeping nulls).
fn membership(filter: &Arc<dyn PhysicalExpr>, schema: &Schema) -> Option<Arc<dyn PhysicalExpr>> {
    /// The one `IN` list among the conjuncts of `expr`.
    fn list_of(expr: &Arc<dyn PhysicalExpr>) -> Option<&Arc<dyn PhysicalExpr>> {
        let mut lists = split_conjunction(expr).into_iter().filter(|conjunct| {
            conjunct.downcast_ref::<InListExpr>().is_some_and(|list| !list.negated())
        });
        let list = lists.next()?;
        lists.next().is_none().then_some(list)
    }
    let as_list = |expr: &Arc<dyn PhysicalExpr>| -> Option<(Arc<dyn PhysicalExpr>, Vec<_>)> {
        let list = expr.downcast_ref::<InListExpr>()?;
        Some((Arc::clone(list.expr()), list.list().to_vec()))
    };
    let is_false = |expr: &Arc<dyn PhysicalExpr>| {
        expr.downcast_ref::<Literal>()
            .is_some_and(|l| l.value() == &ScalarValue::Boolean(Some(false)))
    };
    let Some(case) = filter.downcast_ref::<CaseExpr>() else {
        return list_of(filter).cloned();
    };
    case.expr()?;
    if !case.else_expr().is_some_and(is_false) {
        return None;
    }
    let mut key: Option<Arc<dyn PhysicalExpr>> = None;
    let mut values = Vec::new();
    for (_, then) in case.when_then_expr() {
        if is_false(then) {
            continue;
        }
        let (expr, list) = as_list(list_of(then)?)?;
        match &key {
            Some(key) if key.as_ref() != expr.as_ref() => return None,
            _ => key = Some(expr),
        }
        values.extend(list);
    }
    match key {
        Some(key) => InListExpr::try_new(key, values, false, schema)
            .ok()
            .map(|list| Arc::new(list) as Arc<dyn PhysicalExpr>),
        None => Some(lit(false)),
    }
}

/// `values`, a filter's answer for a batch, with nulls as false.
fn mask(values: ColumnarValue, rows: usize) -> Result<BooleanArray> {
    let values = values.into_array(rows)?;
    let Some(values) = values.as_any().downcast_ref::<BooleanArray>() else {
        return internal_err!("a dynamic filter returned {}", values.data_type());
    };
    Ok(match values.null_count() {
        0 => values.clone(),
        _ => prep_null_mask_filter(values),
    })
}

struct RuntimeFilterStream {
    schema: SchemaRef,
    input: Option<SendableRecordBatchStream>,
    filters: Vec<Filter>,
    /// Filtered batches, combined up to the session's batch size.
    coalescer: BatchCoalescer,
    /// A batch no filter dropped a row of, to pass on after the coalescer's batches.
    whole: Option<RecordBatch>,
    baseline: BaselineMetrics,
    input_rows: Count,
    filters_kept: Count,
    filters_as_lists: Count,
}

impl RuntimeFilterStream {
    /// The rows of `batch` the filters being measured and the kept ones keep.
    fn apply(&mut self, batch: RecordBatch) -> Result<RecordBatch> {
        let rows = batch.num_rows();
        // Filters being measured: each on the whole batch, for its own share.
        let mut measured: Option<BooleanArray> = None;
        let mut done = false;
        for filter in &mut self.filters {
            if filter.refresh(&self.schema) {
                self.filters_as_lists.add(1);
            }
            let Verdict::Probing { seen, kept } = &mut filter.verdict else { continue };
            let values = mask(filter.test.evaluate(&batch)?, rows)?;
            *seen += rows;
            *kept += values.true_count();
            done |= *seen >= PROBE_ROWS;
            measured = Some(match measured {
                Some(before) => arrow::compute::and(&before, &values)?,
                None => values,
            });
        }
        if done {
            self.decide();
        }
        let mut batch = match measured {
            Some(values) if values.true_count() < rows => filter_record_batch(&batch, &values)?,
            _ => batch,
        };
        // Kept filters: each on the rows the ones before it kept.
        for filter in &self.filters {
            if batch.num_rows() == 0 {
                break;
            }
            if !matches!(filter.verdict, Verdict::Keep(_)) {
                continue;
            }
            let values = mask(filter.test.evaluate(&batch)?, batch.num_rows())?;
            if values.true_count() < batch.num_rows() {
                batch = filter_record_batch(&batch, &values)?;
            }
        }
        Ok(batch)
    }

    /// Ends the measurement of the filters that saw enough rows (see the module
    /// documentation), and orders the kept ones.
    fn decide(&mut self) {
        let direct = self
            .filters
            .iter()
            .filter(|f| f.direct)
            .filter_map(Filter::share)
            .fold(f64::MAX, f64::min);
        for filter in &mut self.filters {
            let Verdict::Probing { seen, .. } = filter.verdict else { continue };
            if seen < PROBE_ROWS {
                continue;
            }
            let Some(share) = filter.share() else { continue };
            // A direct filter is worth it as an `IN` list only: cheaper than the join's own
            // lookup, and it spares the repartition before the join.
            let keep = share <= MAX_KEPT
                && match filter.direct {
                    true => filter.listed,
                    false => share < direct,
                };
            filter.verdict = if keep { Verdict::Keep(share) } else { Verdict::Skip(share) };
            if keep {
                self.filters_kept.add(1);
            }
        }
        self.filters.sort_by(|a, b| a.rank().total_cmp(&b.rank()));
    }
}

impl Stream for RuntimeFilterStream {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if let Some(batch) = self.coalescer.next_completed_batch() {
                return self.baseline.record_poll(Poll::Ready(Some(Ok(batch))));
            }
            if let Some(batch) = self.whole.take() {
                return self.baseline.record_poll(Poll::Ready(Some(Ok(batch))));
            }
            let Some(input) = self.input.as_mut() else { return Poll::Ready(None) };
            match futures::ready!(input.poll_next_unpin(cx)) {
                Some(Ok(batch)) => {
                    let elapsed = self.baseline.elapsed_compute().clone();
                    let _timer = elapsed.timer();
                    let rows = batch.num_rows();
                    self.input_rows.add(rows);
                    let batch = self.apply(batch)?;
                    if batch.num_rows() == rows {
                        // Nothing dropped: passed on as it is, after the rows buffered before.
                        self.coalescer.finish_buffered_batch()?;
                        self.whole = Some(batch);
                    } else if batch.num_rows() > 0 {
                        self.coalescer.push_batch(batch)?;
                    }
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => {
                    self.input = None;
                    self.coalescer.finish_buffered_batch()?;
                }
            }
        }
    }
}

impl RecordBatchStream for RuntimeFilterStream {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{BooleanArray as Flags, Int64Array};
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::execution::session_state::SessionStateBuilder;
    use datafusion::physical_plan::{collect, displayable};
    use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};
    use parquet::arrow::ArrowWriter;

    use super::*;

    /// `fact`: 400,000 rows `(k, v)` with `k = v % 20,000`, in two files; `dim`: 20,000 rows
    /// `(k, flag)`, `flag` true for 20 of them.
    fn write_tables(dir: &std::path::Path) {
        let write = |path: std::path::PathBuf, batch: RecordBatch| {
            let mut writer =
                ArrowWriter::try_new(std::fs::File::create(path).unwrap(), batch.schema(), None)
                    .unwrap();
            writer.write(&batch).unwrap();
            writer.close().unwrap();
        };
        let fact = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("v", DataType::Int64, false),
        ]));
        std::fs::create_dir_all(dir.join("fact")).unwrap();
        for file in 0..2i64 {
            let v: Vec<i64> = (file * 200_000..(file + 1) * 200_000).collect();
            let k: Vec<i64> = v.iter().map(|v| v % 20_000).collect();
            let batch = RecordBatch::try_new(
                fact.clone(),
                vec![Arc::new(Int64Array::from(k)), Arc::new(Int64Array::from(v))],
            )
            .unwrap();
            write(dir.join(format!("fact/{file}.parquet")), batch);
        }
        let dim = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("flag", DataType::Boolean, false),
        ]));
        let k: Vec<i64> = (0..20_000).collect();
        let flag: Vec<bool> = k.iter().map(|k| k % 1_000 == 7).collect();
        let batch = RecordBatch::try_new(
            dim,
            vec![Arc::new(Int64Array::from(k)), Arc::new(Flags::from(flag))],
        )
        .unwrap();
        write(dir.join("dim.parquet"), batch);
    }

    /// `partitioned`: hash joins build one table per partition (as for large build sides),
    /// whose filters route each row by its key's hash.
    async fn context(
        dir: &std::path::Path,
        runtime_filters: bool,
        partitioned: bool,
    ) -> SessionContext {
        let mut config = SessionConfig::new().with_target_partitions(2);
        if partitioned {
            let optimizer = &mut config.options_mut().optimizer;
            optimizer.hash_join_single_partition_threshold = 0;
            optimizer.hash_join_single_partition_threshold_rows = 0;
        }
        let mut state = SessionStateBuilder::new().with_config(config).with_default_features();
        if runtime_filters {
            state = state.with_physical_optimizer_rule(Arc::new(RuntimeFilters));
        }
        let ctx = SessionContext::new_with_state(state.build());
        let options = ParquetReadOptions::default();
        ctx.register_parquet("fact", dir.join("fact").to_str().unwrap(), options.clone())
            .await
            .unwrap();
        ctx.register_parquet("dim", dir.join("dim.parquet").to_str().unwrap(), options)
            .await
            .unwrap();
        ctx
    }

    /// Runs `sql`; its answer as text and, summed over the plan's runtime filters, the rows
    /// they received, the rows they passed on, the filters kept per partition and the filters
    /// evaluated as `IN` lists of their own.
    async fn run(
        ctx: &SessionContext,
        sql: &str,
    ) -> (String, Option<(usize, usize, usize, usize)>) {
        let plan = ctx.sql(sql).await.unwrap().create_physical_plan().await.unwrap();
        let batches = collect(plan.clone(), ctx.task_ctx()).await.unwrap();
        let answer = arrow::util::pretty::pretty_format_batches(&batches).unwrap().to_string();
        let mut found = None;
        let mut stack = vec![plan.clone()];
        while let Some(node) = stack.pop() {
            if node.downcast_ref::<RuntimeFilterExec>().is_some() {
                let metrics = node.metrics().unwrap();
                let (input, output, kept, lists) = found.unwrap_or((0, 0, 0, 0));
                let sum = |name| metrics.sum_by_name(name).map_or(0, |v| v.as_usize());
                found = Some((
                    input + sum("input_rows"),
                    output + metrics.output_rows().unwrap(),
                    kept + sum("filters_kept"),
                    lists + sum("filters_as_lists"),
                ));
            }
            stack.extend(node.children().into_iter().cloned());
        }
        let shown = displayable(plan.as_ref()).indent(true).to_string();
        assert_eq!(found.is_some(), shown.contains("RuntimeFilterExec"), "{shown}");
        (answer, found)
    }

    /// What a query's runtime filters did: rows in, rows out, filters kept (per partition),
    /// filters tested as `IN` lists.
    struct Figures {
        input: usize,
        output: usize,
        kept: usize,
        lists: usize,
    }

    /// Runs `sql` over fresh tables with runtime filters (after the `setup` statements) and
    /// without; checks that both answer the same, and that the plan's joins are `mode`.
    async fn checked(
        sql: &str,
        partitioned: bool,
        setup: &[&str],
        mode: &str,
    ) -> (String, Figures) {
        let dir = tempfile::tempdir().unwrap();
        write_tables(dir.path());
        let with = context(dir.path(), true, partitioned).await;
        for statement in setup {
            with.sql(statement).await.unwrap();
        }
        let without = context(dir.path(), false, partitioned).await;
        let (answer, filters) = run(&with, sql).await;
        assert_eq!(answer, run(&without, sql).await.0);
        let plan = with.sql(sql).await.unwrap().create_physical_plan().await.unwrap();
        let shown = displayable(plan.as_ref()).indent(true).to_string();
        assert!(shown.contains(mode), "{shown}");
        let (input, output, kept, lists) = filters.expect("a runtime filter above the fact scan");
        (answer, Figures { input, output, kept, lists })
    }

    /// The join's filter (20 keys) reaches the fact scan through the aggregation.
    const AGGREGATED: &str = "SELECT sum(a.total) AS s, count(*) AS n FROM dim d \
        JOIN (SELECT k, sum(v) AS total FROM fact GROUP BY k) a ON d.k = a.k WHERE d.flag";

    /// The fact scan is the join's probe side.
    const JOINED: &str = "SELECT count(*) AS n, sum(f.v) AS s FROM dim d \
        JOIN fact f ON d.k = f.k WHERE d.flag";

    #[tokio::test]
    async fn a_selective_filter_drops_rows_before_an_aggregation() {
        selective_filter(false, "mode=CollectLeft").await;
    }

    #[tokio::test]
    async fn a_selective_filter_of_a_partitioned_join_drops_rows_before_an_aggregation() {
        selective_filter(true, "mode=Partitioned").await;
    }

    async fn selective_filter(partitioned: bool, mode: &str) {
        let (answer, f) = checked(AGGREGATED, partitioned, &[], mode).await;
        assert!(answer.contains("| 20 "), "{answer}");
        assert_eq!(f.input, 400_000, "every fact row reaches the filter");
        assert!(f.lists >= 1, "the 20 keys are tested as one IN list");
        assert!(f.kept >= 1, "the filter is kept in some partition");
        // 20 of 20,000 keys: 400 rows, plus what passes while the filter is measured.
        assert!(f.output < 400_000 / 4, "{} rows of 400,000 passed", f.output);
        assert!(f.output >= 400, "the 400 matching rows pass");
    }

    #[tokio::test]
    async fn a_lookup_of_the_join_right_above_is_left_to_the_join() {
        // Build sides as hash table lookups, not IN lists.
        let lookups = "SET datafusion.optimizer.hash_join_inlist_pushdown_max_distinct_values = 0";
        let (_, f) = checked(JOINED, false, &[lookups], "HashJoinExec").await;
        assert_eq!((f.kept, f.lists), (0, 0), "a direct lookup is measured, not kept");
        // Only the rows seen while measuring are filtered.
        assert!(f.output >= 400_000 - 2 * PROBE_ROWS - 16_384, "{} of {}", f.output, f.input);
    }

    #[tokio::test]
    async fn an_in_list_of_the_join_right_above_drops_rows_before_it() {
        let (_, f) = checked(JOINED, false, &[], "HashJoinExec").await;
        assert!(f.kept >= 1 && f.lists >= 1, "the 20 keys are tested as an IN list and kept");
        assert!(f.output < 400_000 / 4, "{} of {} rows passed", f.output, f.input);
    }

    #[tokio::test]
    async fn a_filter_that_keeps_most_rows_is_switched_off() {
        // Every key but 20 joins: the filter keeps 99.9 % of the fact rows.
        let sql = AGGREGATED.replace("WHERE d.flag", "WHERE NOT d.flag");
        let (_, f) = checked(&sql, false, &[], "HashJoinExec").await;
        assert_eq!(f.kept, 0, "{} of {}", f.output, f.input);
        assert!(f.output >= 399_600, "{} of {}", f.output, f.input);
    }

    #[test]
    fn the_union_of_partitions_lists_keeps_the_rows_the_routed_filter_keeps() {
        use datafusion::logical_expr::Operator;
        use datafusion::physical_expr::expressions::{col, BinaryExpr};

        let schema = Schema::new(vec![Field::new("k", DataType::Int64, true)]);
        let k = col("k", &schema).unwrap();
        let values: Vec<Option<i64>> = (0..200).map(Some).chain([None]).collect();
        let batch = RecordBatch::try_new(
            Arc::new(schema.clone()),
            vec![Arc::new(Int64Array::from(values))],
        )
        .unwrap();
        // Routed by k % 3: partition 0 holds keys 3, 30; partition 1 holds 7, 100; partition
        // 2 is empty.
        let route = Arc::new(BinaryExpr::new(k.clone(), Operator::Modulo, lit(3i64)));
        let partition = |keys: &[i64]| {
            let list = keys.iter().map(|key| lit(*key)).collect();
            let list = InListExpr::try_new(k.clone(), list, false, &schema).unwrap();
            let low = BinaryExpr::new(k.clone(), Operator::GtEq, lit(keys[0]));
            Arc::new(BinaryExpr::new(Arc::new(low), Operator::And, Arc::new(list)))
                as Arc<dyn PhysicalExpr>
        };
        let routed: Arc<dyn PhysicalExpr> = Arc::new(
            CaseExpr::try_new(
                Some(route),
                vec![
                    (lit(0i64), partition(&[3, 30])),
                    (lit(1i64), partition(&[7, 100])),
                    (lit(2i64), lit(false)),
                ],
                Some(lit(false)),
            )
            .unwrap(),
        );
        let union = membership(&routed, &schema).expect("an IN list");
        let list = union.downcast_ref::<InListExpr>().expect("an IN list");
        assert_eq!(list.len(), 4);
        let kept = |expr: &Arc<dyn PhysicalExpr>| {
            mask(expr.evaluate(&batch).unwrap(), batch.num_rows()).unwrap()
        };
        assert_eq!(kept(&union), kept(&routed));
        assert_eq!(kept(&union).true_count(), 4);
        // One build side: the list alone.
        let single = partition(&[3, 30]);
        let alone = membership(&single, &schema).expect("the IN list");
        assert_eq!(kept(&alone), kept(&single));
        // A CASE whose ELSE keeps rows is left as it is.
        let open: Arc<dyn PhysicalExpr> = Arc::new(
            CaseExpr::try_new(
                Some(Arc::new(BinaryExpr::new(k.clone(), Operator::Modulo, lit(3i64)))),
                vec![(lit(0i64), partition(&[3]))],
                Some(lit(true)),
            )
            .unwrap(),
        );
        assert!(membership(&open, &schema).is_none());
    }
}
