//! Arrow Flight SQL, with ADBC's Flight SQL driver from the test virtualenv (the client data
//! tools use): a table read into pyarrow and pandas, the catalog listed, writes refused, and
//! the API keys of the HTTP API.

use serde_json::Value;
use tarn_lake::test_util::{python, Backend};

use crate::support::{key, TestServer};

const ADBC: &str = r#"
import json, sys
import adbc_driver_flightsql.dbapi as flightsql
import adbc_driver_manager
uri, token = sys.argv[1], sys.argv[2]
kwargs = {"adbc.flight.sql.authorization_header": f"Bearer {token}"} if token else {}
out = {}
with flightsql.connect(uri, db_kwargs=kwargs) as conn:
    cur = conn.cursor()
    cur.execute("SELECT page, count(*) AS views, sum(ms) AS ms FROM clicks GROUP BY page ORDER BY page")
    table = cur.fetch_arrow_table()
    out["arrow_columns"] = table.column_names
    out["rows"] = [list(r.values()) for r in table.to_pylist()]
    cur.execute("SELECT count(*) AS n FROM default.clicks")
    out["pandas"] = int(cur.fetch_df()["n"][0])
    objects = conn.adbc_get_objects(depth="tables").read_all().to_pylist()
    out["tables"] = sorted(
        f"{c['catalog_name']}.{s['db_schema_name']}.{t['table_name']}"
        for c in objects for s in c["catalog_db_schemas"] or [] for t in s["db_schema_tables"] or []
        if s["db_schema_name"] != "information_schema"
    )
    schema = conn.adbc_get_table_schema("clicks", catalog_filter="tarn", db_schema_filter="default")
    out["schema"] = [f"{f.name}:{f.type}" for f in schema]
    try:
        cur.execute("CREATE TABLE x AS SELECT 1")
        out["write"] = "accepted"
    except adbc_driver_manager.Error as e:
        out["write"] = type(e).__name__ + ": " + str(e).splitlines()[0]
    try:
        cur.execute("SELECT * FROM nowhere")
        out["missing"] = "found"
    except adbc_driver_manager.Error as e:
        out["missing"] = type(e).__name__ + ": " + str(e).splitlines()[0]
print(json.dumps(out), flush=True)
"#;

const REFUSED: &str = r#"
import sys
import adbc_driver_flightsql.dbapi as flightsql
import adbc_driver_manager
kwargs = {"adbc.flight.sql.authorization_header": f"Bearer {sys.argv[2]}"}
with flightsql.connect(sys.argv[1], db_kwargs=kwargs) as conn:
    try:
        conn.cursor().execute("SELECT 1")
        print("accepted")
    except adbc_driver_manager.Error as e:
        print(type(e).__name__ + ": " + str(e).splitlines()[0])
"#;

async fn adbc(script: &str, uri: &str, token: &str) -> String {
    let output = tokio::process::Command::new(python())
        .arg("-c")
        .arg(script)
        .arg(uri)
        .arg(token)
        .output()
        .await
        .expect("run python");
    assert!(output.status.success(), "ADBC failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test]
async fn adbc_reads_tables_over_flight_sql() {
    let server = TestServer::start_with(Backend::Local, |config| {
        config.flight_listen = Some("127.0.0.1:0".parse().unwrap());
        config.keys = vec![
            key("analyst", "analyst-secret-key", &["query"], false),
            key("writer", "writer-secret-key", &["ingest:*"], false),
        ];
        config.auto_create_set = true;
        config.ingest.auto_create = true;
    })
    .await;
    let body: String =
        (0..300).map(|i| format!("{{\"page\": \"/p{}\", \"ms\": {i}}}\n", i % 4)).collect();
    let response = server
        .client
        .post(server.url("/v1/ingest/clicks?wait=commit"))
        .bearer_auth("writer-secret-key")
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    let uri = format!("grpc://{}", server.flight_addr.expect("Flight SQL is on"));

    let seen: Value = serde_json::from_str(&adbc(ADBC, &uri, "analyst-secret-key").await).unwrap();
    println!("{seen}");
    assert_eq!(seen["arrow_columns"], serde_json::json!(["page", "views", "ms"]));
    let expected: Vec<Value> = (0..4)
        .map(|p| {
            let ms: Vec<i64> = (0..300).filter(|i| i % 4 == p).collect();
            serde_json::json!([format!("/p{p}"), ms.len(), ms.iter().sum::<i64>()])
        })
        .collect();
    assert_eq!(seen["rows"], Value::Array(expected));
    assert_eq!(seen["pandas"], 300);
    assert_eq!(seen["tables"], serde_json::json!(["tarn.default.clicks"]));
    assert_eq!(seen["schema"], serde_json::json!(["page:string_view", "ms:int64"]));
    let write = seen["write"].as_str().unwrap();
    assert!(write.contains("read-only"), "{write}");
    let missing = seen["missing"].as_str().unwrap();
    assert!(missing.contains("NOT_FOUND") || missing.contains("does not exist"), "{missing}");

    // A wrong key, and a key without the query scope, are refused.
    let wrong = adbc(REFUSED, &uri, "not-a-key").await;
    assert!(wrong.contains("UNAUTHENTICATED"), "{wrong}");
    let refused = adbc(REFUSED, &uri, "writer-secret-key").await;
    assert!(
        refused.contains("PERMISSION_DENIED") || refused.contains("does not allow"),
        "{refused}"
    );
}
