//! The query engine over catalog tables, on a temp dir and on S3.

use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use futures::TryStreamExt;
use tarn_catalog::{Catalog, TableName};
use tarn_lake::backend_tests;
use tarn_lake::test_util::{Backend, TestLake};
use tarn_query::{QueryConfig, QueryEngine};

fn batch(ids: &[i64], kind: &str) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("kind", DataType::Utf8, true),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(ids.to_vec())),
            Arc::new(StringArray::from(vec![kind; ids.len()])),
        ],
    )
    .unwrap()
}

/// The single value of `SELECT count(*) ...`.
async fn count(engine: &QueryEngine, sql: &str) -> i64 {
    let batches: Vec<RecordBatch> = engine.execute(sql).await.unwrap().try_collect().await.unwrap();
    let values: Vec<i64> = batches
        .iter()
        .flat_map(|b| b.column(0).as_any().downcast_ref::<Int64Array>().unwrap().values().to_vec())
        .collect();
    assert_eq!(values.len(), 1, "{sql}: {values:?}");
    values[0]
}

// The catalog in SQL (information_schema, SHOW TABLES, DESCRIBE, namespaces) is in the root
// package's tests/sql/catalog.slt, over HTTP as users send it.
backend_tests!(sees_new_commits_without_restart);

async fn sees_new_commits_without_restart(backend: Backend) {
    let lake = TestLake::new(backend);
    let catalog = Arc::new(Catalog::new(Arc::new(lake.open().await)));
    let name = TableName::parse("events").unwrap();
    let (_, table) = catalog.create(&name, &batch(&[], "").schema(), &[], "api").await.unwrap();
    let engine = QueryEngine::new(catalog.clone(), QueryConfig::default()).unwrap();
    assert_eq!(count(&engine, "SELECT count(*) AS n FROM events").await, 0);

    // Another process (its own lake handle, no shared cache) appends; the engine sees it.
    let writer = Catalog::new(Arc::new(lake.open().await));
    let (_, other) = writer.open(&name).await.unwrap();
    other.append(vec![batch(&[1, 2, 3], "view")]).await.unwrap();
    assert_eq!(count(&engine, "SELECT count(*) AS n FROM default.events").await, 3);
    drop(table);

    // A table created after the engine started resolves too.
    catalog
        .create(&TableName::parse("late").unwrap(), &batch(&[], "").schema(), &[], "api")
        .await
        .unwrap();
    assert_eq!(count(&engine, "SELECT count(*) AS n FROM late").await, 0);
}

mod cluster;
mod scan;
mod tpch;
