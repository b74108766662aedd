//! Other engines read what Tarn writes: python `deltalake` (delta-rs' Python binding, from the
//! test virtualenv) reads a Tarn table on the temp dir and on S3 and sees the same rows; Sail
//! (Spark SQL over Spark Connect, `pysail`) reads one with `spark.read.format("delta")`.

use serde_json::{json, Value};
use tarn_lake::backend_tests;
use tarn_lake::test_util::{python, Backend};

use crate::support::TestServer;

const READ_TABLE: &str = r#"
import json, sys
from deltalake import DeltaTable
uri, options = sys.argv[1], json.loads(sys.argv[2])
table = DeltaTable(uri, storage_options=options or None)
rows = table.to_pyarrow_table().sort_by("order_id").to_pylist()
print(json.dumps({"version": table.version(), "rows": rows}), flush=True)
# deltalake 1.6 + pyarrow 26 abort now and then in their own thread teardown at interpreter
# exit ("terminate called without an active exception"), after the work is done: skip it.
import os; os._exit(0)
"#;

backend_tests!(python_deltalake_reads_tarn_tables);

async fn python_deltalake_reads_tarn_tables(backend: Backend) {
    let server = TestServer::start(backend).await;
    let body = "{\"order_id\": 1, \"sku\": \"A-1\", \"amount\": 12.5, \"paid\": true}\n\
                {\"order_id\": 2, \"sku\": \"B-2\", \"amount\": 3.0, \"paid\": false}\n";
    assert_eq!(server.ingest("orders", "application/x-ndjson", body).await.0, 200);
    let more = r#"[{"order_id": 3, "sku": "C-3", "amount": null, "paid": true}]"#;
    assert_eq!(server.ingest("orders", "application/json", more).await.0, 200);

    let (_, table) = server.get("/v1/tables/orders").await;
    let url = table["url"].as_str().unwrap().to_string();
    let uri = match url.strip_prefix("file://") {
        Some(path) => path.to_string(),
        None => url,
    };
    let options: serde_json::Map<String, Value> =
        server.lake.env().into_iter().map(|(k, v)| (k, Value::String(v))).collect();
    let output = tokio::process::Command::new(python())
        .arg("-c")
        .arg(READ_TABLE)
        .arg(&uri)
        .arg(Value::Object(options).to_string())
        .output()
        .await
        .expect("run python");
    assert!(
        output.status.success(),
        "python deltalake failed on {uri}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(seen["version"], 2);
    assert_eq!(
        seen["rows"],
        json!([
            {"amount": 12.5, "order_id": 1, "paid": true, "sku": "A-1"},
            {"amount": 3.0, "order_id": 2, "paid": false, "sku": "B-2"},
            {"amount": null, "order_id": 3, "paid": true, "sku": "C-3"}
        ])
    );

    // And Tarn's own SQL agrees, row for row.
    let (_, result) =
        server.sql("SELECT amount, order_id, paid, sku FROM orders ORDER BY order_id").await;
    let tarn_rows: Vec<Value> = result["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| json!({"amount": r[0], "order_id": r[1], "paid": r[2], "sku": r[3]}))
        .collect();
    assert_eq!(Value::Array(tarn_rows), seen["rows"]);
}

const SAIL_READ: &str = r#"
import json, sys
from pysail.spark import SparkConnectServer
from pyspark.sql import SparkSession
server = SparkConnectServer(ip="127.0.0.1", port=0)
server.start(background=True)
_, port = server.listening_address
spark = SparkSession.builder.remote(f"sc://127.0.0.1:{port}").getOrCreate()
spark.read.format("delta").load(sys.argv[1]).createOrReplaceTempView("clicks")
rows = spark.sql(
    "SELECT page, count(*) AS views, sum(ms) AS ms FROM clicks GROUP BY page ORDER BY page"
).collect()
print(json.dumps([[r.page, r.views, r.ms] for r in rows]), flush=True)
spark.stop()
server.stop()
"#;

/// Sail (Spark SQL) reads a table Tarn wrote, as `spark.read.format("delta").load(<lake>/<namespace>/<table>)`,
/// and answers a GROUP BY as Tarn does.
#[tokio::test]
async fn sail_reads_tarn_tables() {
    let server = TestServer::start(Backend::Local).await;
    let body: String =
        (0..500).map(|i| format!("{{\"page\": \"/p{}\", \"ms\": {}}}\n", i % 7, i * 3)).collect();
    assert_eq!(server.ingest("clicks", "application/x-ndjson", &body).await.0, 200);
    let more: String =
        (500..800).map(|i| format!("{{\"page\": \"/p{}\", \"ms\": {}}}\n", i % 5, i)).collect();
    assert_eq!(server.ingest("clicks", "application/x-ndjson", &more).await.0, 200);
    let (_, table) = server.get("/v1/tables/clicks").await;
    let url = table["url"].as_str().unwrap();
    let path = url.strip_prefix("file://").expect("a local table");

    // From a file: pyspark looks for a Spark home beside the script, which `-c` has not.
    let script = tempfile::Builder::new().suffix(".py").tempfile().unwrap();
    std::fs::write(script.path(), SAIL_READ).unwrap();
    let output = tokio::process::Command::new(python())
        .arg(script.path())
        .arg(path)
        .output()
        .await
        .expect("run python");
    assert!(
        output.status.success(),
        "Sail failed to read {path}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let sail: Value = serde_json::from_slice(&output.stdout).unwrap();
    let (_, result) = server
        .sql(
            "SELECT page, count(*) AS views, sum(ms) AS ms FROM clicks GROUP BY page ORDER BY page",
        )
        .await;
    assert_eq!(sail, result["rows"], "Sail and Tarn answer alike");
    assert_eq!(sail.as_array().unwrap().len(), 7, "{sail}");
}
