//! The crawler end to end, on a temp dir and on S3: a Hive-partitioned Parquet prefix, an
//! existing Delta table written by another writer, CSV and NDJSON prefixes, re-crawls, and
//! what Tarn refuses to do with data it does not own.

use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use serde_json::{json, Value};
use tarn_lake::backend_tests;
use tarn_lake::test_util::{Backend, TestLake};
use tarn_lake::{Lake, LakeOptions};

use crate::support::TestServer;

backend_tests!(
    crawler_registers_a_hive_partitioned_parquet_prefix,
    crawler_registers_an_existing_delta_table_and_csv_and_ndjson_prefixes,
);

/// Data "written by someone else": beside the lake on S3 (another prefix of the bucket), and
/// inside the lake's directory locally (the HTTP API crawls local directories only there).
struct External {
    lake: Lake,
    /// What `POST /v1/crawl` takes for the root of this data.
    api_root: String,
    _dir: Option<tempfile::TempDir>,
}

impl External {
    async fn new(server: &TestServer) -> Self {
        let (root, api_root) = match server.lake.backend {
            Backend::Local => (format!("{}/imports", server.lake.location), "imports".to_string()),
            Backend::S3 => {
                let root = format!(
                    "s3://{}/{}-imports",
                    tarn_lake::test_util::s3_bucket(),
                    uuid::Uuid::new_v4()
                );
                (root.clone(), root)
            }
        };
        let lake = Lake::open(&root, server.lake.options.clone()).await.unwrap();
        External { lake, api_root, _dir: None }
    }

    fn location(&self, sub: &str) -> String {
        format!("{}/{sub}", self.api_root)
    }

    async fn put(&self, path: &str, bytes: Vec<u8>) {
        self.lake.store().put(&Path::from(path), PutPayload::from(bytes)).await.unwrap();
    }

    async fn exists(&self, path: &str) -> bool {
        self.lake.store().head(&Path::from(path)).await.is_ok()
    }
}

fn parquet(columns: Vec<(&str, ArrayRef)>) -> Vec<u8> {
    let schema = Arc::new(Schema::new(
        columns
            .iter()
            .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
            .collect::<Vec<_>>(),
    ));
    let batch = RecordBatch::try_new(schema.clone(), columns.into_iter().map(|(_, a)| a).collect())
        .unwrap();
    let mut out = Vec::new();
    let mut writer = parquet::arrow::ArrowWriter::try_new(&mut out, schema, None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    out
}

fn sales(ids: &[i64], amounts: &[i64], city: &str) -> Vec<u8> {
    parquet(vec![
        ("id", Arc::new(Int64Array::from(ids.to_vec())) as ArrayRef),
        ("amount", Arc::new(Int64Array::from(amounts.to_vec()))),
        ("city", Arc::new(StringArray::from(vec![city; ids.len()]))),
    ])
}

async fn crawl(server: &TestServer, body: Value) -> (u16, Value) {
    let response = server.client.post(server.url("/v1/crawl")).json(&body).send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

fn names(tables: &Value) -> Vec<String> {
    tables["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect()
}

async fn crawler_registers_a_hive_partitioned_parquet_prefix(backend: Backend) {
    let server = TestServer::start(backend).await;
    let ext = External::new(&server).await;
    ext.put("sales/year=2025/month=1/part-0.parquet", sales(&[1, 2], &[10, 20], "Oslo")).await;
    ext.put("sales/year=2025/month=2/part-0.parquet", sales(&[3, 4], &[30, 40], "Lima")).await;
    ext.put("sales/year=2026/month=1/part-0.parquet", sales(&[5], &[50], "Oslo")).await;
    ext.put("sales/_SUCCESS", Vec::new()).await;

    let (status, report) = crawl(&server, json!({"location": ext.location("sales")})).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["tables"].as_array().unwrap().len(), 1, "{report}");
    let table = &report["tables"][0];
    assert_eq!(table["name"], "sales");
    assert_eq!(table["format"], "parquet");
    assert_eq!(table["partition_columns"], json!(["year", "month"]));
    assert_eq!(table["status"], "created");
    assert_eq!(table["files"], 3);
    assert_eq!(table["partitions"], 3);

    let (status, info) = server.get("/v1/tables/sales").await;
    assert_eq!(status, 200, "{info}");
    assert_eq!(info["created_by"], "crawler");
    assert_eq!(info["external"]["format"], "parquet");
    assert!(info["url"].as_str().unwrap().ends_with("/sales/"), "{info}");
    let columns: Vec<(String, String)> = crate::support::column_types(&info);
    assert_eq!(
        columns,
        [
            ("id", "int64"),
            ("amount", "int64"),
            ("city", "string"),
            ("year", "int64"),
            ("month", "int64")
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    assert_eq!(info["stats"]["files"], 3, "{info}");
    assert!(info["stats"]["bytes"].as_u64().unwrap() > 0);

    // A partition filter reads the right directory.
    assert_eq!(
        server
            .rows("SELECT id, amount, city FROM sales WHERE year = 2025 AND month = 2 ORDER BY id")
            .await,
        [json!([3, 30, "Lima"]), json!([4, 40, "Lima"])]
    );
    assert_eq!(
        server.rows("SELECT year, count(*) AS n, sum(amount) AS total FROM sales GROUP BY year ORDER BY year").await,
        [json!([2025, 4, 100]), json!([2026, 1, 50])]
    );

    // A new partition whose file has one more column: the file is read at once (files are
    // listed per query), the column after a re-crawl.
    let newer = parquet(vec![
        ("id", Arc::new(Int64Array::from(vec![6, 7])) as ArrayRef),
        ("amount", Arc::new(Int64Array::from(vec![60, 70]))),
        ("city", Arc::new(StringArray::from(vec!["Rome", "Rome"]))),
        ("channel", Arc::new(StringArray::from(vec!["web", "shop"]))),
    ]);
    ext.put("sales/year=2026/month=2/part-0.parquet", newer).await;
    assert_eq!(server.rows("SELECT count(*) FROM sales").await, [json!([7])]);
    let (status, _) = server.sql("SELECT channel FROM sales").await;
    assert_eq!(status, 400);

    let (status, report) = crawl(&server, json!({"location": ext.location("sales")})).await;
    assert_eq!(status, 200, "{report}");
    let table = &report["tables"][0];
    assert_eq!(table["status"], "updated", "{report}");
    let changes: Vec<&str> =
        table["changes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    assert_eq!(changes, ["new column channel (string)", "partitions: 3 -> 4"], "{report}");
    assert_eq!(
        server.rows("SELECT id, channel, year, month FROM sales WHERE id >= 5 ORDER BY id").await,
        [json!([5, null, 2026, 1]), json!([6, "web", 2026, 2]), json!([7, "shop", 2026, 2])]
    );

    // Crawling again changes nothing, and the table is listed once.
    let (_, report) = crawl(&server, json!({"location": ext.location("sales")})).await;
    assert_eq!(report["tables"][0]["status"], "unchanged", "{report}");
    let (_, list) = server.get("/v1/tables").await;
    assert_eq!(names(&list), ["sales"], "{list}");
    assert_eq!(list["tables"][0]["external"]["format"], "parquet");
    let (_, info) = server.get("/v1/tables/sales").await;
    assert_eq!(info["revision"], 1, "{info}");

    // Tarn never writes to, redefines or purges data it does not own.
    let (status, body) = server.ingest("sales", "application/json", r#"{"id": 8}"#).await;
    assert_eq!(status, 403, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("external"), "{body}");
    let (status, body) =
        server.define("sales", json!({"columns": [{"name": "id", "type": "int64"}]})).await;
    assert_eq!(status, 409, "{body}");
    let (status, body) = server.get("/v1/tables/sales/history").await;
    assert_eq!(status, 409, "{body}");
    let response =
        server.client.delete(server.url("/v1/tables/sales?purge=true")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 409);
    let body: Value = response.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("never deletes"), "{body}");
    let response = server.client.delete(server.url("/v1/tables/sales")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 204);
    assert!(ext.exists("sales/year=2025/month=1/part-0.parquet").await);
    assert!(ext.exists("sales/year=2026/month=2/part-0.parquet").await);
    let (_, list) = server.get("/v1/tables").await;
    assert!(names(&list).is_empty(), "{list}");

    // A location with nothing in it says so.
    let (status, body) = crawl(&server, json!({"location": ext.location("nothing")})).await;
    assert_eq!(status, 400, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("does not exist") || message.contains("empty"), "{body}");
}

async fn crawler_registers_an_existing_delta_table_and_csv_and_ndjson_prefixes(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (status, _) =
        server.ingest("events", "application/x-ndjson", "{\"kind\": \"visit\"}\n").await;
    assert_eq!(status, 200);
    let ext = External::new(&server).await;

    // A Delta table written by another writer, outside Tarn's catalog layout.
    let schema = Arc::new(Schema::new(vec![
        Field::new("order_id", DataType::Int64, false),
        Field::new("region", DataType::Utf8, true),
        Field::new("total", DataType::Int64, true),
    ]));
    let batch = |ids: Vec<i64>, regions: Vec<&str>, totals: Vec<i64>| {
        RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(ids)),
                Arc::new(StringArray::from(regions)),
                Arc::new(Int64Array::from(totals)),
            ],
        )
        .unwrap()
    };
    let orders =
        ext.lake.create_table("warehouse/orders", &schema, &["region".into()]).await.unwrap();
    let orders = orders
        .append(vec![batch(vec![1, 2, 3], vec!["eu", "eu", "us"], vec![100, 200, 300])])
        .await
        .unwrap();
    let written = orders.stats();
    ext.put("warehouse/visits/2026-01.csv", b"page,ms\n/,120\n/about,80\n".to_vec()).await;
    ext.put("warehouse/visits/2026-02.csv", b"page,ms\n/pricing,95\n".to_vec()).await;
    ext.put(
        "warehouse/clicks/day=2026-01-01/a.ndjson",
        b"{\"button\": \"buy\", \"n\": 2}\n{\"button\": \"help\", \"n\": 1}\n".to_vec(),
    )
    .await;
    ext.put(
        "warehouse/clicks/day=2026-01-02/b.ndjson",
        b"{\"button\": \"buy\", \"n\": 5}\n".to_vec(),
    )
    .await;
    ext.put("warehouse/clicks/README.txt", b"not data".to_vec()).await;

    let (status, report) = crawl(&server, json!({"location": ext.location("warehouse")})).await;
    assert_eq!(status, 200, "{report}");
    let mut found: Vec<(String, String, Value, String)> = report["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().into(),
                t["format"].as_str().unwrap().into(),
                t["partition_columns"].clone(),
                t["status"].as_str().unwrap().into(),
            )
        })
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        found,
        [
            ("clicks".into(), "ndjson".into(), json!(["day"]), "created".into()),
            ("orders".into(), "delta".into(), json!(["region"]), "created".into()),
            ("visits".into(), "csv".into(), json!([]), "created".into()),
        ],
        "{report}"
    );

    // The Delta table: statistics from its log, queries at its latest version.
    let (status, info) = server.get("/v1/tables/orders").await;
    assert_eq!(status, 200, "{info}");
    assert_eq!(info["external"]["format"], "delta");
    assert_eq!(info["stats"]["rows"], 3, "{info}");
    assert_eq!(info["stats"]["version"], written.version, "{info}");
    assert_eq!(info["stats"]["files"], written.files, "{info}");
    assert_eq!(info["stats"]["bytes"], written.bytes, "{info}");
    assert_eq!(
        server.rows("SELECT region, sum(total) FROM orders GROUP BY region ORDER BY region").await,
        [json!(["eu", 300]), json!(["us", 300])]
    );
    let (status, history) = server.get("/v1/tables/orders/history").await;
    assert_eq!(status, 200, "{history}");
    orders.append(vec![batch(vec![4], vec!["us"], vec![400])]).await.unwrap();
    assert_eq!(server.rows("SELECT count(*) FROM orders").await, [json!([4])]);

    assert_eq!(
        server.rows("SELECT page, ms FROM visits ORDER BY ms").await,
        [json!(["/about", 80]), json!(["/pricing", 95]), json!(["/", 120])]
    );
    assert_eq!(
        server.rows("SELECT CAST(day AS VARCHAR) AS d, sum(n) FROM clicks WHERE button = 'buy' GROUP BY day ORDER BY day").await,
        [json!(["2026-01-01", 2]), json!(["2026-01-02", 5])]
    );

    // Re-crawl: nothing changed (new rows of a Delta table are not a change of definition).
    let (_, report) = crawl(&server, json!({"location": ext.location("warehouse")})).await;
    let statuses: Vec<&str> = report["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["unchanged"; 3], "{report}");

    // Crawling the lake's root never registers Tarn's own tables again.
    let (status, report) = crawl(&server, json!({"location": ""})).await;
    assert_eq!(status, 200, "{report}");
    assert!(
        report["skipped"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["reason"] == "Tarn's own table default.events"),
        "{report}"
    );
    assert!(!names(&report).contains(&"events".to_string()), "{report}");
    let (_, list) = server.get("/v1/tables").await;
    let mut listed = names(&list);
    listed.sort();
    assert_eq!(listed, ["clicks", "events", "orders", "visits"], "{list}");
}

/// `tarn crawl` on a local directory outside the lake (the command line may read what its
/// user can), and the HTTP API refusing that same directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tarn_crawl_prints_a_summary_and_the_api_keeps_to_the_lake() {
    let data = tempfile::tempdir().unwrap();
    let root = data.path().join("exports");
    let store = Lake::open(root.to_str().unwrap(), LakeOptions::default()).await.unwrap();
    for (path, bytes) in [
        ("sales/year=2025/month=1/part-0.parquet", sales(&[1, 2], &[10, 20], "Oslo")),
        ("sales/year=2025/month=2/part-0.parquet", sales(&[3], &[30], "Lima")),
        ("sales/year=2026/month=1/part-0.parquet", sales(&[4], &[40], "Oslo")),
    ] {
        store.store().put(&Path::from(path), PutPayload::from(bytes)).await.unwrap();
    }
    let lake = TestLake::new(Backend::Local);
    let tarn = env!("CARGO_BIN_EXE_tarn");
    let run = |args: Vec<String>| {
        let lake = lake.location.clone();
        async move {
            let output = tokio::process::Command::new(tarn)
                .arg("crawl")
                .args(["--lake", &lake])
                .args(args)
                .output()
                .await
                .unwrap();
            let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
            assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
            stdout
        }
    };
    let first = run(vec![root.display().to_string()]).await;
    println!("{first}");
    let url = format!("file://{}/", root.display());
    let lines: Vec<&str> = first.lines().collect();
    assert_eq!(lines[0], format!("crawled {url}"));
    assert!(lines[1].starts_with("TABLE") && lines[1].contains("PARTITION COLUMNS"), "{first}");
    let row: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(
        row,
        ["default.sales", "parquet", "year,", "month", "(3", "partitions)", "5", "3", "created"]
            .into_iter()
            .chain([format!("{url}sales/").as_str()])
            .collect::<Vec<_>>(),
        "{first}"
    );
    assert_eq!(lines.last().unwrap(), &"(1 table: 1 created, 0 updated, 0 unchanged; 0 skipped)");

    let again = run(vec![format!("file://{}", root.display())]).await;
    assert!(again.lines().nth(2).unwrap().contains(" unchanged "), "{again}");

    let output = tokio::process::Command::new(tarn)
        .args([
            "sql",
            "--lake",
            &lake.location,
            "SELECT sum(amount) AS total FROM sales WHERE month = 1",
        ])
        .output()
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&output.stdout).contains("| 70    |"), "{output:?}");

    // Over HTTP, local directories outside the lake are not the API's to read.
    let server = TestServer::start_on(lake, |_| {}).await;
    let (status, body) = crawl(&server, json!({"location": root.display().to_string()})).await;
    assert_eq!(status, 403, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("tarn crawl"), "{body}");
    let (status, body) = crawl(&server, json!({"location": "../x"})).await;
    assert_eq!(status, 400, "{body}");
}
