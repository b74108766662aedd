//! Tarn's Delta scan answers the 22 TPC-H queries exactly as deltalake's table provider does
//! (the provider Tarn used before, here without shared aggregations either), on the same
//! Delta tables: TPC-H at scale 0.01, generated
//! with `tpchgen-arrow`, each table appended in several commits so that scans read several
//! files. The query texts are the benchmark's (`bench/queries/tpch`).

use std::sync::Arc;

use arrow::array::RecordBatch;
use futures::TryStreamExt;
use tarn_catalog::{Catalog, TableName};
use tarn_lake::backend_tests;
use tarn_lake::test_util::{Backend, TestLake};
use tarn_query::{DeltaReader, QueryConfig, QueryEngine};

backend_tests!(tpch_answers_match_deltalakes_provider);

const SCALE: f64 = 0.01;

/// Rows per commit (one file each): lineitem (60k rows) gets 4 files, orders 2.
const ROWS_PER_COMMIT: usize = 16_384;

macro_rules! queries {
    ($($q:literal),*) => {
        [$(($q, include_str!(concat!("../../../bench/queries/tpch/", $q, ".sql")))),*]
    };
}

pub(crate) const QUERIES: [(&str, &str); 22] = queries!(
    "q1", "q2", "q3", "q4", "q5", "q6", "q7", "q8", "q9", "q10", "q11", "q12", "q13", "q14", "q15",
    "q16", "q17", "q18", "q19", "q20", "q21", "q22"
);

/// The generator of the benchmark, shared by path.
#[path = "../../../bench/src/tpch_data.rs"]
mod tpch_data;

/// Loads the 8 tables into the catalog (strings stored as plain `Utf8`, as Tarn writes them).
pub(crate) async fn load(catalog: &Catalog) {
    for table in tpch_data::TABLES {
        let (schema, batches) = tpch_data::generator(table, SCALE, 4096);
        let plain = tpch_data::plain_strings(&schema);
        let name = TableName::new("default", table).unwrap();
        let (_, mut lake_table) = catalog.create(&name, &plain, &[], "test").await.unwrap();
        let mut chunk = Vec::new();
        let mut rows = 0;
        for batch in batches {
            let batch = tpch_data::cast_strings(batch.unwrap(), &plain).unwrap();
            rows += batch.num_rows();
            chunk.push(batch);
            if rows >= ROWS_PER_COMMIT {
                lake_table = lake_table.append(std::mem::take(&mut chunk)).await.unwrap();
                rows = 0;
            }
        }
        if !chunk.is_empty() {
            lake_table.append(chunk).await.unwrap();
        }
    }
}

/// The rows of `sql`'s answer as text, one line per row, in the answer's order.
pub(crate) async fn answer(engine: &QueryEngine, sql: &str) -> Vec<String> {
    let batches: Vec<RecordBatch> = engine.execute(sql).await.unwrap().try_collect().await.unwrap();
    let text = arrow::util::pretty::pretty_format_batches(&batches).unwrap().to_string();
    text.lines().map(str::to_string).collect()
}

async fn tpch_answers_match_deltalakes_provider(backend: Backend) {
    let lake = TestLake::new(backend);
    let catalog = Arc::new(Catalog::new(Arc::new(lake.open().await)));
    load(&catalog).await;
    let tarn = QueryEngine::new(catalog.clone(), QueryConfig::default()).unwrap();
    let deltalake = QueryEngine::new(
        catalog.clone(),
        QueryConfig {
            delta_reader: DeltaReader::Deltalake,
            share_repeated_aggregates: false,
            ..QueryConfig::default()
        },
    )
    .unwrap();
    let mut rows = Vec::new();
    for (name, sql) in QUERIES {
        let ours = answer(&tarn, sql).await;
        let theirs = answer(&deltalake, sql).await;
        assert_eq!(ours, theirs, "{name}: Tarn's scan and deltalake's provider differ");
        // Header, rule lines, and at least one row: the query did answer something.
        assert!(ours.len() >= 5, "{name} answered no row: {ours:?}");
        rows.push(format!("{name}: {}", ours.len() - 4));
    }
    println!("the 22 TPC-H answers (SF {SCALE}) agree; rows: {}", rows.join(", "));
    // Q15's view `revenue0` is computed once for its two uses.
    let q15 = tarn.plan(QUERIES[14].1).await.unwrap();
    let shown = datafusion::physical_plan::displayable(q15.plan.as_ref()).indent(true).to_string();
    assert_eq!(shown.matches("computed once").count(), 2, "{shown}");
}
