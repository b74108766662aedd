//! The rule and the operator over real Parquet files, with and without the rule.

use arrow::array::{BooleanArray as Flags, Int64Array};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::physical_plan::{collect, displayable};
use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};
use parquet::arrow::ArrowWriter;

use std::sync::Arc;

use arrow::record_batch::RecordBatch;

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
    let batch =
        RecordBatch::try_new(dim, vec![Arc::new(Int64Array::from(k)), Arc::new(Flags::from(flag))])
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
    ctx.register_parquet("dim", dir.join("dim.parquet").to_str().unwrap(), options).await.unwrap();
    ctx
}

/// Runs `sql`; its answer as text and, summed over the plan's runtime filters, the rows
/// they received, the rows they passed on, the filters kept per partition and the filters
/// evaluated as `IN` lists of their own.
async fn run(ctx: &SessionContext, sql: &str) -> (String, Option<(usize, usize, usize, usize)>) {
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
async fn checked(sql: &str, partitioned: bool, setup: &[&str], mode: &str) -> (String, Figures) {
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
