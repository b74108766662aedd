//! Ingest over HTTP, then query back in every format, over a real socket.

use arrow::ipc::reader::StreamReader;
use serde_json::{json, Value};
use tarn_lake::backend_tests;
use tarn_lake::test_util::Backend;

use crate::support::TestServer;

/// The message of an error answer.
fn message(body: &Value) -> &str {
    body["error"]["message"].as_str().unwrap_or_default()
}

backend_tests!(
    ingest_then_query_in_every_format,
    refusals_are_4xx_and_say_where,
    concurrent_ingest_keeps_every_row,
    auto_create_off_refuses_unknown_tables,
    maintenance_compacts_checkpoints_and_vacuums,
);

async fn ingest_then_query_in_every_format(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (status, body) = server.get("/healthz").await;
    assert_eq!((status, body), (200, json!({"status": "ok"})));

    // One JSON object creates the table, with an inferred schema.
    let (status, receipt) = server
        .ingest(
            "events",
            "application/json",
            r#"{"event_id": 1, "kind": "view", "price": 9.5, "buyer": {"id": 7}}"#,
        )
        .await;
    assert_eq!(status, 200, "{receipt}");
    assert_eq!(
        receipt,
        json!({"table": "default.events", "accepted": 1, "rejected": 0, "duplicates": 0, "seq": 1, "version": 1, "created": true})
    );

    // A JSON array; fields may be missing or null.
    let (status, receipt) = server
        .ingest(
            "events",
            "application/json",
            r#"[{"event_id": 2, "kind": "cart", "price": null, "buyer": {"id": 7}},
                {"event_id": 3, "kind": "purchase", "price": 19.99}]"#,
        )
        .await;
    assert_eq!(status, 200, "{receipt}");
    assert_eq!(
        receipt,
        json!({"table": "default.events", "accepted": 2, "rejected": 0, "duplicates": 0, "seq": 2, "version": 2})
    );

    // NDJSON into the qualified name; an integer is fine for a float column.
    let ndjson = "{\"event_id\": 4, \"kind\": \"view\", \"price\": 1}\n\
                  {\"event_id\": 5, \"kind\": \"view\", \"price\": 2.25, \"buyer\": {\"id\": 8}}\n\
                  {\"event_id\": 6, \"kind\": \"cart\"}\n";
    let (status, receipt) = server.ingest("default.events", "application/x-ndjson", ndjson).await;
    assert_eq!(status, 200, "{receipt}");
    assert_eq!(receipt["accepted"], 3);

    // JSON (default format): typed values, nested values as JSON.
    let (status, result) =
        server.sql("SELECT event_id, kind, price, buyer FROM events ORDER BY event_id").await;
    assert_eq!(status, 200, "{result}");
    assert_eq!(
        result,
        json!({
            "columns": [
                {"name": "event_id", "type": "int64"},
                {"name": "kind", "type": "string"},
                {"name": "price", "type": "float64"},
                {"name": "buyer", "type": "struct<id: int64>"}
            ],
            "rows": [
                [1, "view", 9.5, {"id": 7}],
                [2, "cart", null, {"id": 7}],
                [3, "purchase", 19.99, null],
                [4, "view", 1.0, null],
                [5, "view", 2.25, {"id": 8}],
                [6, "cart", null, null]
            ]
        })
    );
    let (_, count) = server.sql("SELECT count(*) AS n FROM default.events").await;
    assert_eq!(count["rows"], json!([[6]]));

    // NDJSON.
    let sql = "SELECT event_id, kind, price FROM events WHERE event_id <= 2 ORDER BY event_id";
    let (status, content_type, body) = server.sql_as(sql, "application/x-ndjson").await;
    assert_eq!((status, content_type.as_str()), (200, "application/x-ndjson"));
    assert_eq!(
        std::str::from_utf8(&body).unwrap(),
        "{\"event_id\":1,\"kind\":\"view\",\"price\":9.5}\n{\"event_id\":2,\"kind\":\"cart\",\"price\":null}\n"
    );

    // CSV with a header.
    let (status, content_type, body) = server.sql_as(sql, "text/csv").await;
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/csv"), "{content_type}");
    assert_eq!(std::str::from_utf8(&body).unwrap(), "event_id,kind,price\n1,view,9.5\n2,cart,\n");

    // Arrow IPC stream.
    let (status, content_type, body) = server
        .sql_as("SELECT * FROM events ORDER BY event_id", "application/vnd.apache.arrow.stream")
        .await;
    assert_eq!((status, content_type.as_str()), (200, "application/vnd.apache.arrow.stream"));
    let reader = StreamReader::try_new(std::io::Cursor::new(body), None).unwrap();
    let schema = reader.schema();
    let batches: Vec<_> = reader.map(|b| b.unwrap()).collect();
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 6);
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(
        names,
        vec!["event_id", "kind", "price", "buyer"],
        "inferred columns keep the order of the fields as they first arrived"
    );

    // A query with no rows still has its columns.
    let (_, empty) = server.sql("SELECT kind FROM events WHERE event_id > 100").await;
    assert_eq!(empty, json!({"columns": [{"name": "kind", "type": "string"}], "rows": []}));

    // The catalog shows schema and stats.
    let (status, table) = server.get("/v1/tables/events").await;
    assert_eq!(status, 200, "{table}");
    assert_eq!(table["name"], "events");
    assert_eq!(table["namespace"], "default");
    assert_eq!(table["created_by"], "auto");
    assert_eq!(table["stats"]["version"], 3);
    assert_eq!(table["stats"]["rows"], 6);
    assert_eq!(table["stats"]["files"], 3);
    assert!(table["stats"]["bytes"].as_u64().unwrap() > 0);
    let columns: Vec<(String, String)> = crate::support::column_types(&table);
    assert!(columns.contains(&("event_id".into(), "int64".into())), "{columns:?}");
    let (_, tables) = server.get("/v1/tables").await;
    assert_eq!(tables["tables"][0]["qualified_name"], "default.events");
    let (_, history) = server.get("/v1/tables/events/history?limit=2").await;
    assert_eq!(history["commits"][0]["version"], 3);
    assert_eq!(history["commits"][0]["rows_added"], 3);

    // SQL as a text/plain body works too, and sees information_schema.
    let response = server
        .client
        .post(server.url("/v1/sql"))
        .header("content-type", "text/plain")
        .body("SELECT table_schema, table_name FROM information_schema.tables WHERE table_schema = 'default'")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let value: Value = response.json().await.unwrap();
    assert_eq!(value["rows"], json!([["default", "events"]]));
}

async fn refusals_are_4xx_and_say_where(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (status, _) =
        server.ingest("events", "application/json", r#"{"id": 1, "name": "a"}"#).await;
    assert_eq!(status, 200);

    // The SQL refusals and mistakes are in tests/sql/read_only.slt; here what a .slt cannot
    // say: a refused COPY leaves no file behind, an empty request, an unknown format.
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("copy.csv");
    let (status, body) = server.sql(&format!("COPY (SELECT 1) TO '{}'", target.display())).await;
    assert_eq!(status, 403, "{body}");
    assert!(message(&body).contains("read-only"), "{body}");
    assert!(!target.exists(), "a refused COPY writes nothing");
    let (status, body) = server.sql("  ").await;
    assert_eq!(status, 400, "{body}");
    let (status, _, _) = server.sql_as("SELECT 1", "image/png").await;
    assert_eq!(status, 406);

    // Malformed JSON: 400 naming the line; nothing of the request is appended.
    let (status, body) = server
        .ingest(
            "events",
            "application/x-ndjson",
            "{\"id\": 2, \"name\": \"b\"}\n{\"id\": 3, \"name\": \"c\"\n",
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let text = message(&body);
    assert!(text.starts_with("line 2"), "{text}");
    let (status, body) =
        server.ingest("events", "application/x-ndjson", "{\"id\": 2}\n{\"id\": \"three\"}\n").await;
    assert_eq!(status, 400, "{body}");
    let text = message(&body);
    assert!(text.starts_with("line 2") && text.contains("three"), "{text}");
    let (status, body) =
        server.ingest("events", "application/json", r#"{"id": 4, "colour": "red"}"#).await;
    assert_eq!(status, 400, "{body}");
    assert!(message(&body).contains("colour"), "{body}");
    let (_, count) = server.sql("SELECT count(*) FROM events").await;
    assert_eq!(count["rows"], json!([[1]]), "rejected requests append nothing");

    // Bodies and names Tarn cannot take.
    let (status, body) = server.ingest("events", "application/xml", "<id>1</id>").await;
    assert_eq!(status, 415, "{body}");
    let (status, body) = server.ingest("events", "application/json", "").await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = server.ingest("bad-name", "application/json", r#"{"a": 1}"#).await;
    assert_eq!(status, 400, "{body}");
    assert!(message(&body).contains("bad-name"), "{body}");
    let (status, body) = server.get("/v1/nothing-here").await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")));
}

/// Concurrent requests: every row lands exactly once, and the flusher shares commits between
/// requests instead of making one per request.
async fn concurrent_ingest_keeps_every_row(backend: Backend) {
    // Buffers commit at 200 rows, or after an hour; `?wait=commit` flushes at once.
    let server = TestServer::start_with(backend, |c| {
        c.ingest.flush.max_age_ms = 3_600_000;
        c.ingest.flush.max_rows = 200;
    })
    .await;
    let body = |r: usize| -> String {
        (0..25).map(|i| format!("{{\"request\": {r}, \"seq\": {i}}}\n")).collect()
    };

    // Eight `?wait=commit` requests at once: each answer names the commit that holds it.
    let requests = (0..8).map(|r| {
        let (server, body) = (&server, body(r));
        async move { server.ingest("clicks", "application/x-ndjson", &body).await }
    });
    let answers = futures::future::join_all(requests).await;
    let mut seqs = std::collections::BTreeSet::new();
    let mut versions = std::collections::BTreeSet::new();
    for (status, receipt) in &answers {
        assert_eq!(*status, 200, "{receipt}");
        seqs.insert(receipt["seq"].as_u64().unwrap());
        versions.insert(receipt["version"].as_u64().unwrap());
    }
    assert_eq!(seqs.len(), 8, "one WAL record per request");
    let (_, result) =
        server.sql("SELECT count(*), count(DISTINCT request * 1000 + seq) FROM clicks").await;
    assert_eq!(result["rows"], json!([[200, 200]]));
    let writes = |history: &Value| -> Vec<(u64, u64)> {
        history["commits"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["operation"] == "WRITE")
            .map(|c| (c["version"].as_u64().unwrap(), c["rows_added"].as_u64().unwrap()))
            .collect()
    };
    let (_, history) = server.get("/v1/tables/clicks/history?limit=100").await;
    let committed = writes(&history);
    assert_eq!(
        committed.iter().map(|(v, _)| *v).collect::<std::collections::BTreeSet<_>>(),
        versions,
        "the answers name exactly the table's commits: {history}"
    );
    assert_eq!(committed.iter().map(|(_, rows)| rows).sum::<u64>(), 200, "{history}");

    // Eight requests acknowledged with 202 (durable in the WAL, not yet committed): their
    // rows reach the 200-row threshold together, and the flusher commits them as one.
    let requests = (0..8).map(|r| {
        server
            .client
            .post(server.url("/v1/ingest/shared"))
            .header("content-type", "application/x-ndjson")
            .body(body(r))
            .send()
    });
    for response in futures::future::join_all(requests).await {
        assert_eq!(response.unwrap().status(), 202);
    }
    server.eventually("SELECT count(*) FROM shared", vec![json!([200])]).await;
    let (_, history) = server.get("/v1/tables/shared/history?limit=100").await;
    assert_eq!(writes(&history), [(1, 200)], "8 requests, 1 commit: {history}");
}

async fn auto_create_off_refuses_unknown_tables(backend: Backend) {
    let server = TestServer::start_with(backend, |c| c.ingest.auto_create = false).await;
    let (status, body) = server.ingest("events", "application/json", r#"{"a": 1}"#).await;
    assert_eq!(status, 404, "{body}");
    assert!(message(&body).contains("auto-create is off"), "{body}");
}

/// Many small commits: the background maintenance compacts them, writes a checkpoint and
/// vacuums the rewritten files, and queries return the same rows throughout.
async fn maintenance_compacts_checkpoints_and_vacuums(backend: Backend) {
    let server = TestServer::start_with(backend, |c| {
        c.ingest.maintenance.compact_min_files = 8;
        c.ingest.maintenance.checkpoint_every = 4;
        c.ingest.maintenance.vacuum_retention_hours = 0;
        c.ingest.maintenance.vacuum_every_secs = 0;
    })
    .await;
    let sql = "SELECT id, sum(amount) AS total, count(*) AS n FROM sales GROUP BY id ORDER BY id";
    for i in 0..10 {
        let body: String = (0..5).map(|j| format!("{{\"id\": {j}, \"amount\": {i}}}\n")).collect();
        assert_eq!(server.ingest("sales", "application/x-ndjson", &body).await.0, 200);
    }
    let expected = json!([[0, 45, 10], [1, 45, 10], [2, 45, 10], [3, 45, 10], [4, 45, 10]]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let stats = loop {
        // Results are the same before, during and after compaction.
        let (status, result) = server.sql(sql).await;
        assert_eq!(status, 200, "{result}");
        assert_eq!(result["rows"], expected);
        let (_, table) = server.get("/v1/tables/sales").await;
        if table["stats"]["files"].as_u64().unwrap() < 10 {
            break table["stats"].clone();
        }
        assert!(std::time::Instant::now() < deadline, "never compacted: {table}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(stats["rows"], 50);
    let (_, history) = server.get("/v1/tables/sales/history").await;
    let operations: Vec<&str> = history["commits"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["operation"].as_str())
        .collect();
    assert!(operations.contains(&"OPTIMIZE"), "{operations:?}");

    // A checkpoint exists, and the vacuum leaves only the live data files.
    use futures::TryStreamExt;
    let lake = server.lake.open().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let objects: Vec<String> = tarn_lake::deltalake::ObjectStore::list(
            lake.store().as_ref(),
            Some(&"default/sales".into()),
        )
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .unwrap();
        let checkpoints = objects.iter().filter(|p| p.contains(".checkpoint.")).count();
        let data_files =
            objects.iter().filter(|p| !p.contains("_delta_log") && p.ends_with(".parquet")).count();
        let (_, table) = server.get("/v1/tables/sales").await;
        let live = table["stats"]["files"].as_u64().unwrap() as usize;
        if checkpoints > 0 && data_files == live {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "checkpoints {checkpoints}, data files {data_files}, live {live}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let (_, result) = server.sql(sql).await;
    assert_eq!(result["rows"], expected);
}
