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
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{internal_err, DFSchemaRef, Result};
use datafusion::config::ConfigOptions;
use datafusion::execution::context::QueryPlanner;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{
    Extension, LogicalPlan, UserDefinedLogicalNode, UserDefinedLogicalNodeCore,
};
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::{displayable, ExecutionPlan};
use datafusion::physical_planner::{DefaultPhysicalPlanner, ExtensionPlanner, PhysicalPlanner};

mod exec;
#[cfg(test)]
mod tests;

use exec::Link;
pub use exec::SharedExec;

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
            let linked = exec.linked(Arc::clone(link), copy);
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
