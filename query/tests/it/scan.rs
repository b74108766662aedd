//! Tarn's Delta scan: files and row groups pruned by statistics, the statistics DataFusion
//! plans with, and answers from statistics alone.

use std::sync::Arc;

use arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::stats::Precision;
use datafusion::common::ScalarValue;
use datafusion::physical_plan::display::DisplayableExecutionPlan;
use datafusion::physical_plan::statistics::{StatisticsArgs, StatisticsContext};
use datafusion::physical_plan::ExecutionPlan;
use deltalake::parquet::file::properties::WriterProperties;
use futures::TryStreamExt;
use tarn_catalog::{Catalog, TableName};
use tarn_lake::backend_tests;
use tarn_lake::test_util::{Backend, TestLake};
use tarn_query::{QueryConfig, QueryEngine};

backend_tests!(
    scans_prune_files_and_row_groups_by_statistics,
    scans_give_every_column_statistics,
    a_large_file_is_read_in_pieces_by_every_partition,
    tables_with_column_mapping_are_read_by_deltalakes_provider,
);

fn readings_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("reading", DataType::Float64, true),
        Field::new("site", DataType::Utf8, true),
    ]))
}

/// `readings`, partitioned by `site`, in 4 files of 4,000 rows (ids 0..16,000 in order), each
/// in row groups of 1,000 rows: files 1-2 are site `a`, 3-4 site `b`.
async fn readings(backend: Backend) -> (TestLake, Arc<Catalog>) {
    let lake = TestLake::new(backend);
    let catalog = Arc::new(Catalog::new(Arc::new(lake.open().await)));
    let name = TableName::parse("readings").unwrap();
    let (_, table) =
        catalog.create(&name, &readings_schema(), &["site".to_string()], "test").await.unwrap();
    let mut delta = table.delta().clone();
    for file in 0..4i64 {
        let ids: Vec<i64> = (file * 4000..(file + 1) * 4000).collect();
        let batch = RecordBatch::try_new(
            readings_schema(),
            vec![
                Arc::new(Int64Array::from(ids.clone())),
                Arc::new(Float64Array::from_iter(ids.iter().map(|&i| Some(i as f64 / 2.0)))),
                Arc::new(StringArray::from(vec![if file < 2 { "a" } else { "b" }; ids.len()])),
            ],
        )
        .unwrap();
        let properties =
            WriterProperties::builder().set_max_row_group_row_count(Some(1000)).build();
        delta = delta.write(vec![batch]).with_writer_properties(properties).await.unwrap();
    }
    (lake, catalog)
}

async fn run(engine: &QueryEngine, sql: &str) -> (Vec<RecordBatch>, Arc<dyn ExecutionPlan>) {
    let planned = engine.plan(sql).await.unwrap();
    let batches = planned.execute().unwrap().try_collect().await.unwrap();
    (batches, planned.plan.clone())
}

fn single_i64(batches: &[RecordBatch]) -> i64 {
    batches[0].column(0).as_any().downcast_ref::<Int64Array>().unwrap().value(0)
}

/// A metric of the Parquet scan in `plan`'s `EXPLAIN ANALYZE` text, e.g.
/// `row_groups_pruned_statistics=4 total → 2 matched`.
fn metric<'a>(text: &'a str, name: &str) -> &'a str {
    let start = text.find(&format!("{name}=")).unwrap_or_else(|| panic!("no {name} in {text}"));
    let rest = &text[start + name.len() + 1..];
    let end = rest.find([',', ']']).unwrap_or(rest.len());
    rest[..end].trim()
}

/// Files whose statistics show that the filter keeps none of their rows are not read at
/// all; in the files read, row groups are skipped by their statistics; partition values
/// prune whole files. Counted in the plan (`EXPLAIN ANALYZE`).
async fn scans_prune_files_and_row_groups_by_statistics(backend: Backend) {
    let (_lake, catalog) = readings(backend).await;
    let engine = QueryEngine::new(catalog, QueryConfig::default()).unwrap();

    let sql = "SELECT count(*), sum(reading) FROM readings WHERE id BETWEEN 4500 AND 5200";
    let (batches, plan) = run(&engine, sql).await;
    assert_eq!(single_i64(&batches), 701);
    let text = DisplayableExecutionPlan::with_metrics(plan.as_ref()).indent(true).to_string();
    assert!(text.contains("DataSourceExec"), "{text}");
    // One file of four is read: the others' ids are out of the range.
    assert!(text.contains("file_groups={1 group: [["), "{text}");
    assert_eq!(text.matches(".parquet").count(), 1, "{text}");
    // In it, 2 row groups of 4 hold ids of the range (4000-4999, 5000-5999).
    assert_eq!(metric(&text, "row_groups_pruned_statistics"), "4 total → 2 matched", "{text}");
    println!("{sql}:\n{text}");

    // The same through SQL, as users see it.
    let explain = format!("EXPLAIN ANALYZE {sql}");
    let (batches, _) = run(&engine, &explain).await;
    let shown = arrow::util::pretty::pretty_format_batches(&batches).unwrap().to_string();
    assert!(shown.contains("row_groups_pruned_statistics=4 total → 2 matched"), "{shown}");

    // A partition value prunes files of the other partition; ids prune within it.
    let sql = "SELECT count(*), sum(reading) FROM readings WHERE site = 'b' AND id >= 12500";
    let (batches, plan) = run(&engine, sql).await;
    assert_eq!(single_i64(&batches), 3500);
    let text = DisplayableExecutionPlan::with_metrics(plan.as_ref()).indent(true).to_string();
    assert_eq!(text.matches(".parquet").count(), 1, "{text}");
    assert!(text.contains("site=b"), "{text}");

    // No file can hold a match: nothing is read.
    let (batches, plan) =
        run(&engine, "SELECT count(*), sum(reading) FROM readings WHERE id > 99999").await;
    assert_eq!(single_i64(&batches), 0);
    let text = DisplayableExecutionPlan::with_metrics(plan.as_ref()).indent(true).to_string();
    assert!(!text.contains(".parquet"), "{text}");

    // count(*) and min/max of integers come from the log's statistics, without a scan.
    let (batches, plan) = run(&engine, "SELECT count(*), min(id), max(id) FROM readings").await;
    assert_eq!(single_i64(&batches), 16_000);
    let text = DisplayableExecutionPlan::with_metrics(plan.as_ref()).indent(true).to_string();
    assert!(!text.contains("DataSourceExec"), "answered from statistics: {text}");
}

/// DataFusion plans with the log's statistics of every column (not only the filtered ones):
/// rows, min, max and null counts, exact where the log is.
async fn scans_give_every_column_statistics(backend: Backend) {
    let (_lake, catalog) = readings(backend).await;
    let engine = QueryEngine::new(catalog, QueryConfig::default()).unwrap();
    let planned = engine.plan("SELECT id, reading, site FROM readings").await.unwrap();
    let scan = find_scan(&planned.plan).expect("a DataSourceExec");
    let stats = StatisticsContext::new().compute(scan.as_ref(), &StatisticsArgs::new()).unwrap();
    assert_eq!(stats.num_rows, Precision::Exact(16_000));
    let id = &stats.column_statistics[0];
    assert_eq!(id.min_value, Precision::Exact(ScalarValue::Int64(Some(0))));
    assert_eq!(id.max_value, Precision::Exact(ScalarValue::Int64(Some(15_999))));
    assert_eq!(id.null_count, Precision::Exact(0));
    let reading = &stats.column_statistics[1];
    // Floats' bounds are bounds (NaN is left out of them), not exact values.
    assert_eq!(reading.max_value, Precision::Inexact(ScalarValue::Float64(Some(7999.5))));
    let site = &stats.column_statistics[2];
    assert_eq!(site.null_count, Precision::Exact(0));
    assert!(
        matches!(&site.max_value, Precision::Exact(v) if v.to_string() == "b"),
        "{:?}",
        site.max_value
    );
}

/// A table of one file of 300,000 rows in a single row group is read in pieces of rows, one
/// per partition (a row group is otherwise the smallest unit a scan divides), and every row
/// is read exactly once, with and without a filter that loads the page index.
async fn a_large_file_is_read_in_pieces_by_every_partition(backend: Backend) {
    const ROWS: i64 = 300_000;
    let lake = TestLake::new(backend);
    let catalog = Arc::new(Catalog::new(Arc::new(lake.open().await)));
    let name = TableName::parse("big").unwrap();
    let (_, table) = catalog.create(&name, &readings_schema(), &[], "test").await.unwrap();
    let ids: Vec<i64> = (0..ROWS).collect();
    let batch = RecordBatch::try_new(
        readings_schema(),
        vec![
            Arc::new(Int64Array::from(ids.clone())),
            Arc::new(Float64Array::from_iter(ids.iter().map(|&i| (i % 7 != 0).then_some(1.0)))),
            Arc::new(StringArray::from_iter_values(ids.iter().map(|i| format!("s{}", i % 10)))),
        ],
    )
    .unwrap();
    // One row group (the writer's default holds up to 1M rows), pages of 2,048 rows.
    let properties = WriterProperties::builder().set_data_page_row_count_limit(2048).build();
    table.delta().clone().write(vec![batch]).with_writer_properties(properties).await.unwrap();

    // An engine of three partitions (`tarn serve --query-partitions 3`).
    let engine =
        QueryEngine::new(catalog, QueryConfig { partitions: 3, ..QueryConfig::default() }).unwrap();
    let ctx = engine.session().await.unwrap();
    let queries = [
        // Every row once: as many distinct ids as rows, and their sum.
        (
            "SELECT count(DISTINCT id), sum(id), count(reading) FROM big",
            "300000,44999850000,257142",
        ),
        // A range that the page index narrows, across the pieces' boundaries (100,000 and
        // 200,000).
        (
            "SELECT count(*), sum(id) FROM big WHERE id BETWEEN 99000 AND 201000",
            "102001,15300150000",
        ),
        ("SELECT count(*) FROM big WHERE site = 's3' AND reading IS NULL", "4285"),
    ];
    for (sql, expected) in queries {
        let df = ctx.sql(sql).await.unwrap();
        let plan = df.create_physical_plan().await.unwrap();
        let batches: Vec<RecordBatch> =
            datafusion::physical_plan::collect(plan.clone(), ctx.task_ctx()).await.unwrap();
        let row: Vec<String> = batches[0]
            .columns()
            .iter()
            .map(|c| arrow::util::display::array_value_to_string(c, 0).unwrap())
            .collect();
        assert_eq!(row.join(","), expected, "{sql}");
        // Three pieces of 100,000 rows for three partitions.
        assert_eq!(pieces(&plan), vec![100_000; 3], "{sql}");
    }
    // A lookup by key reads a page: the file stays whole (DataFusion's estimate from the
    // bounds of `id`: one row of 300,000), and the page index still finds the row.
    let sql = "SELECT id, site FROM big WHERE id = 250001";
    let plan = ctx.sql(sql).await.unwrap().create_physical_plan().await.unwrap();
    assert_eq!(pieces(&plan), Vec::<usize>::new());
    let batches = datafusion::physical_plan::collect(plan, ctx.task_ctx()).await.unwrap();
    let text = arrow::util::pretty::pretty_format_batches(&batches).unwrap().to_string();
    assert!(text.contains("| 250001 | s1   |"), "{text}");
    // A scan with a limit reads few rows: the file stays whole.
    let plan = ctx.sql("SELECT * FROM big LIMIT 5").await.unwrap().create_physical_plan().await;
    assert_eq!(pieces(&plan.unwrap()), Vec::<usize>::new());
    // With one partition (a session's own setting) the file is read whole, as before.
    ctx.sql("SET datafusion.execution.target_partitions = 1").await.unwrap();
    let plan = ctx.sql(queries[0].0).await.unwrap().create_physical_plan().await.unwrap();
    assert_eq!(pieces(&plan), Vec::<usize>::new());
}

/// The rows each distinct piece of a file in `plan`'s scan reads (DataFusion may cut a piece
/// further into byte ranges, which read the same rows).
fn pieces(plan: &Arc<dyn ExecutionPlan>) -> Vec<usize> {
    use datafusion::datasource::physical_plan::parquet::ParquetRowSelection;
    use datafusion::datasource::physical_plan::FileScanConfig;
    use datafusion::datasource::source::DataSourceExec;
    let scan = find_scan(plan).expect("a DataSourceExec");
    let source = scan.downcast_ref::<DataSourceExec>().unwrap();
    let config = source.data_source().downcast_ref::<FileScanConfig>().unwrap();
    let mut selections: Vec<String> = Vec::new();
    let mut rows = Vec::new();
    for file in config.file_groups.iter().flat_map(|group| group.iter()) {
        if let Some(piece) = file.extension::<ParquetRowSelection>() {
            let key = format!("{:?}", piece.selection());
            if !selections.contains(&key) {
                selections.push(key);
                rows.push(piece.selection().row_count());
            }
        }
    }
    rows
}

fn find_scan(plan: &Arc<dyn ExecutionPlan>) -> Option<Arc<dyn ExecutionPlan>> {
    if plan.name() == "DataSourceExec" {
        return Some(plan.clone());
    }
    plan.children().into_iter().find_map(find_scan)
}

/// A table whose columns are mapped to other names in its files (Delta column mapping, which
/// Tarn's scan does not read) is read by deltalake's provider instead, with the right answers.
async fn tables_with_column_mapping_are_read_by_deltalakes_provider(backend: Backend) {
    use deltalake::kernel::engine::arrow_conversion::TryIntoKernel as _;
    use deltalake::kernel::StructType;
    use deltalake::TableProperty;

    let lake = TestLake::new(backend);
    let opened = lake.open().await;
    let url = opened.table_url("default/mapped").unwrap();
    let options = opened.storage_options().clone();
    if let Ok(dir) = url.to_file_path() {
        // deltalake opens a local table's directory before it creates the table.
        std::fs::create_dir_all(dir).unwrap();
    }
    let catalog = Arc::new(Catalog::new(Arc::new(opened)));
    let schema = readings_schema();
    let kernel: StructType = schema.as_ref().try_into_kernel().unwrap();
    let created = deltalake::DeltaTable::try_from_url_with_storage_options(url, options)
        .await
        .unwrap()
        .create()
        .with_columns(kernel.fields().cloned())
        .with_configuration_property(TableProperty::ColumnMappingMode, Some("name"))
        .await
        .unwrap();
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from(vec![1, 2, 3])),
            Arc::new(Float64Array::from(vec![0.5, 1.5, 2.5])),
            Arc::new(StringArray::from(vec!["a", "b", "b"])),
        ],
    )
    .unwrap();
    created.write(vec![batch]).await.unwrap();
    // The catalog takes the table that is there.
    let name = TableName::parse("mapped").unwrap();
    catalog.create(&name, &schema, &[], "test").await.unwrap();

    let engine = QueryEngine::new(catalog, QueryConfig::default()).unwrap();
    let (batches, plan) =
        run(&engine, "SELECT count(*), sum(id) FROM mapped WHERE site = 'b'").await;
    assert_eq!(single_i64(&batches), 2);
    let sum = batches[0].column(1).as_any().downcast_ref::<Int64Array>().unwrap().value(0);
    assert_eq!(sum, 5);
    let text = DisplayableExecutionPlan::new(plan.as_ref()).indent(true).to_string();
    assert!(text.contains("DeltaScan"), "read by deltalake's provider: {text}");
}
