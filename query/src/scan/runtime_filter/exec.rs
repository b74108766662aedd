//! [`RuntimeFilterExec`]: the operator, and how each output partition measures and keeps
//! its filters.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use arrow::array::BooleanArray;
use arrow::compute::filter_record_batch;
use arrow::compute::kernels::coalesce::BatchCoalescer;
use arrow::datatypes::{Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{internal_err, Result, Statistics};
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::execution_plan::{
    CardinalityEffect, ChildrenPropertiesMode, ReplaceChildrenOptions,
};
use datafusion::physical_plan::metrics::{
    BaselineMetrics, Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet,
};
use datafusion::physical_plan::statistics::{ChildStats, StatisticsArgs};
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use futures::{Stream, StreamExt};

use super::membership::membership;
use super::{dynamic_filters, mask, MAX_KEPT, PROBE_ROWS};

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
        // After the kept filters ran: those decided now already filtered this batch above.
        if done {
            self.decide();
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
