//! The query engine over catalog tables, on a temp dir and on S3.

use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::util::pretty::pretty_format_batches;
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

async fn run(engine: &QueryEngine, sql: &str) -> String {
    let batches: Vec<RecordBatch> = engine.execute(sql).await.unwrap().try_collect().await.unwrap();
    pretty_format_batches(&batches).unwrap().to_string()
}

backend_tests!(sees_new_commits_without_restart, catalog_is_visible_in_sql);

async fn sees_new_commits_without_restart(backend: Backend) {
    let lake = TestLake::new(backend);
    let catalog = Arc::new(Catalog::new(Arc::new(lake.open().await)));
    let name = TableName::parse("events").unwrap();
    let (_, table) = catalog.create(&name, &batch(&[], "").schema(), &[], "api").await.unwrap();
    let engine = QueryEngine::new(catalog.clone(), QueryConfig::default()).unwrap();
    assert_eq!(
        run(&engine, "SELECT count(*) AS n FROM events").await.lines().nth(3).unwrap(),
        "| 0 |"
    );

    // Another process (its own lake handle, no shared cache) appends; the engine sees it.
    let writer = Catalog::new(Arc::new(lake.open().await));
    let (_, other) = writer.open(&name).await.unwrap();
    other.append(vec![batch(&[1, 2, 3], "view")]).await.unwrap();
    assert_eq!(
        run(&engine, "SELECT count(*) AS n FROM default.events").await.lines().nth(3).unwrap(),
        "| 3 |"
    );
    drop(table);

    // A table created after the engine started resolves too.
    catalog
        .create(&TableName::parse("late").unwrap(), &batch(&[], "").schema(), &[], "api")
        .await
        .unwrap();
    assert_eq!(
        run(&engine, "SELECT count(*) AS n FROM late").await.lines().nth(3).unwrap(),
        "| 0 |"
    );
}

async fn catalog_is_visible_in_sql(backend: Backend) {
    let lake = TestLake::new(backend);
    let catalog = Arc::new(Catalog::new(Arc::new(lake.open().await)));
    for name in ["events", "web.clicks"] {
        catalog
            .create(&TableName::parse(name).unwrap(), &batch(&[], "").schema(), &[], "api")
            .await
            .unwrap();
    }
    let engine = QueryEngine::new(catalog, QueryConfig::default()).unwrap();
    let tables = run(
        &engine,
        "SELECT table_schema, table_name FROM information_schema.tables \
         WHERE table_schema <> 'information_schema' ORDER BY 1, 2",
    )
    .await;
    assert_eq!(
        tables,
        "+--------------+------------+\n| table_schema | table_name |\n+--------------+------------+\n| default      | events     |\n| web          | clicks     |\n+--------------+------------+"
    );
    let shown = run(&engine, "SHOW TABLES").await;
    let row = |schema: &str, table: &str| {
        shown.lines().any(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            cells.get(1..5) == Some(&["tarn", schema, table, "BASE TABLE"][..])
        })
    };
    assert!(row("web", "clicks") && row("default", "events"), "{shown}");
    let described = run(&engine, "DESCRIBE web.clicks").await;
    let kind_row = described.lines().find(|l| l.contains(" kind ")).unwrap_or_default();
    let cells: Vec<&str> = kind_row.split('|').map(str::trim).collect();
    assert_eq!(cells.get(1..4), Some(&["kind", "Utf8View", "YES"][..]), "{described}");
    assert!(run(&engine, "SELECT count(*) AS n FROM tarn.web.clicks").await.contains("| 0 |"));
}
