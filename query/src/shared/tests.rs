//! The rules and the operator over a memory table, with and without sharing.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::Int64Array;
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::physical_plan::{collect, displayable, ExecutionPlan};
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
