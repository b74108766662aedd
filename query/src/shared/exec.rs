//! [`SharedExec`]: one copy of a shared subplan, and how the copies of one partition share
//! a single run of its input (see the [parent module](super)).

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use arrow::record_batch::RecordBatch;
use datafusion::common::runtime::SpawnedTask;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{internal_err, DataFusionError, Result, Statistics};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::metrics::{
    BaselineMetrics, Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet,
};
use datafusion::physical_plan::statistics::{ChildStats, StatisticsArgs};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use futures::{StreamExt, TryStreamExt};
use tokio::sync::watch;

/// One copy of a subplan computed once for all its copies (see the
/// [module documentation](super)). Unlinked, it streams its input.
#[derive(Debug, Clone)]
pub struct SharedExec {
    pub(super) id: usize,
    pub(super) input: Arc<dyn ExecutionPlan>,
    /// The link of the copies and this copy's number in it.
    link: Option<(Arc<Link>, usize)>,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl SharedExec {
    /// An unlinked copy: it streams `input`.
    pub(super) fn new(id: usize, input: Arc<dyn ExecutionPlan>) -> Self {
        let properties = Arc::clone(input.properties());
        SharedExec { id, input, link: None, properties, metrics: ExecutionPlanMetricsSet::new() }
    }

    /// This copy, number `copy` of `link`.
    pub(super) fn linked(&self, link: Arc<Link>, copy: usize) -> Self {
        SharedExec {
            link: Some((link, copy)),
            metrics: ExecutionPlanMetricsSet::new(),
            ..self.clone()
        }
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
    /// `uses` copies of `partitions` output partitions, each keeping at most `max_kept` bytes.
    pub(super) fn new(uses: usize, partitions: usize, max_kept: usize) -> Self {
        let partitions = (0..partitions).map(|_| Slot::default()).collect();
        Link { uses, max_kept, partitions }
    }

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
