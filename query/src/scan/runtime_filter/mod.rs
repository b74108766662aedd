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
//! dynamic filters on each batch, dropping the rows they reject. Evaluating a hash-table
//! filter costs more per row than the join's own lookup (about 35 against 10-23 ns per row
//! of TPC-H's lineitem here), so a filter is only worth it when the rows it drops would
//! otherwise pass through other joins or aggregations before reaching the operator that made
//! the filter, or when it is a cheap `IN` list:
//!
//! - A filter whose producer is reached from the scan through repartitions, projections and
//!   filters only (*direct*) is not applied, its join drops the same rows for less, unless
//!   its test is an `IN` list of the join's keys (see `membership`): a set lookup is cheaper
//!   than the join's, and the rows it drops skip the repartition before the join.
//! - Every filter is measured over the first [`PROBE_ROWS`] rows of an output partition after
//!   it was filled in. It is then kept when it keeps at most [`MAX_KEPT`] of the rows and,
//!   when indirect, fewer than each direct filter (when the direct join drops more, the
//!   indirect filter would only save the direct join's lookups of rows it drops anyway).
//! - Kept filters are evaluated one after the other on the rows the previous ones kept, the
//!   most selective first. A filter that changes again (a TopK's threshold) is measured anew.
//!
//! [`RuntimeFilters`] is the physical optimizer rule that places the operator, after
//! DataFusion's own filter pushdown. Modules: `exec` (the operator and its measuring),
//! `membership` (the `IN`-list form of a join's filter).
//!
//! The filters are read from the scan when a partition starts, so a plan whose state is reset
//! (recursive queries) uses the filters of its current join.

use std::collections::HashSet;
use std::sync::Arc;

use arrow::array::{Array, BooleanArray};
use arrow::compute::prep_null_mask_filter;
use datafusion::common::config::ConfigOptions;
use datafusion::common::{internal_err, Result};
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::logical_expr::ColumnarValue;
use datafusion::physical_expr::expressions::DynamicFilterPhysicalExpr;
use datafusion::physical_expr::utils::{reassign_expr_columns, split_conjunction};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::ExecutionPlan;

mod exec;
mod membership;
#[cfg(test)]
mod tests;

pub use exec::RuntimeFilterExec;

/// Rows of one output partition over which a filled-in filter is measured before Tarn decides
/// whether to keep evaluating it.
pub const PROBE_ROWS: usize = 32_768;

/// The largest share of rows a filter may keep and still be evaluated after its probe.
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

/// `values`, a filter's answer for a batch, with nulls as false.
pub(super) fn mask(values: ColumnarValue, rows: usize) -> Result<BooleanArray> {
    let values = values.into_array(rows)?;
    let Some(values) = values.as_any().downcast_ref::<BooleanArray>() else {
        return internal_err!("a dynamic filter returned {}", values.data_type());
    };
    Ok(match values.null_count() {
        0 => values.clone(),
        _ => prep_null_mask_filter(values),
    })
}
