//! The query service beyond `POST /v1/sql` basics: async queries with result reuse, paging,
//! cancel and expiry; limits (timeout, memory, concurrency, row cap); Parquet answers; time
//! travel recorded by async queries; namespaces. The SQL itself (time travel, `SHOW TABLES`,
//! `DESCRIBE`) is in `tests/sql/*.slt`.

use std::time::Duration;

use serde_json::{json, Value};
use tarn_lake::backend_tests;
use tarn_lake::test_util::Backend;

use crate::support::TestServer;

backend_tests!(
    async_queries_page_and_reuse_results_until_a_table_changes,
    async_queries_record_the_time_travel_they_read,
    a_table_another_server_just_created_is_queried_at_once,
);

/// The table names a server plans with are listed at most every 2 s, but a table another
/// server has just created, in a namespace new to this one too, is queried at once: a name in
/// a query is looked up by its definition, not in the list.
async fn a_table_another_server_just_created_is_queried_at_once(backend: Backend) {
    let server = TestServer::start(backend).await;
    let other = TestServer::start_on(server.lake.alias(), |_| {}).await;
    // The names are listed now, and kept.
    assert_eq!(server.rows("SELECT 1").await, vec![json!([1])]);
    let (status, receipt) =
        other.ingest("fresh_ns.readings", "application/x-ndjson", "{\"v\": 1}\n{\"v\": 2}\n").await;
    assert_eq!(status, 200, "{receipt}");
    assert_eq!(server.rows("SELECT sum(v) FROM fresh_ns.readings").await, vec![json!([3])]);
}

/// Submits `body` to `POST /v1/queries`; returns the status code and the answer.
async fn submit(server: &TestServer, body: Value) -> (u16, Value) {
    let response = server.client.post(server.url("/v1/queries")).json(&body).send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

/// Polls the query until it has finished; returns its status. The deadline is generous: a
/// debug build on a busy machine sorts and spills millions of rows slowly.
async fn finished(server: &TestServer, id: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let (code, status) = server.get(&format!("/v1/queries/{id}")).await;
        assert_eq!(code, 200, "{status}");
        if !matches!(status["state"].as_str(), Some("queued" | "running")) {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "query {id} did not finish in 120 s: {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn results(server: &TestServer, id: &str, query: &str, accept: &str) -> reqwest::Response {
    server
        .client
        .get(server.url(&format!("/v1/queries/{id}/results{query}")))
        .header("accept", accept)
        .send()
        .await
        .unwrap()
}

async fn async_queries_page_and_reuse_results_until_a_table_changes(backend: Backend) {
    let server = TestServer::start(backend).await;
    let rows: String = (1..=5).map(|i| format!("{{\"id\": {i}, \"kind\": \"view\"}}\n")).collect();
    let (code, receipt) = server.ingest("clicks", "application/x-ndjson", &rows).await;
    assert_eq!(code, 200, "{receipt}");
    let sql = "SELECT id, kind FROM clicks ORDER BY id";

    // Lifecycle: queued/running, then succeeded, with what it read.
    let (code, submitted) = submit(&server, json!({ "sql": sql })).await;
    assert_eq!(code, 202, "{submitted}");
    assert!(matches!(submitted["state"].as_str(), Some("queued")), "{submitted}");
    let first_id = submitted["id"].as_str().unwrap().to_string();
    let first = finished(&server, &first_id).await;
    assert_eq!(first["state"], "succeeded", "{first}");
    assert_eq!(first["rows"], 5);
    assert_eq!(first["reused"], false);
    assert_eq!(first["tables"], json!([{"table": "default.clicks", "version": 1}]));
    assert!(first["bytes_scanned"].as_u64().unwrap() > 0, "{first}");
    assert!(first["result_bytes"].as_u64().unwrap() > 0, "{first}");
    assert!(first["result_path"].as_str().unwrap().starts_with("_tarn/results/"));
    assert_eq!(
        first["columns"],
        json!([{"name": "id", "type": "int64"}, {"name": "kind", "type": "string"}])
    );

    // Pages of two rows, followed by their tokens.
    let mut all = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let response = results(
            &server,
            &first_id,
            &format!("?max_rows=2&page_token={token}"),
            "application/json",
        )
        .await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["tarn-total-rows"], "5");
        let page: Value = response.json().await.unwrap();
        pages += 1;
        all.extend(page["rows"].as_array().unwrap().iter().cloned());
        match page["next_page_token"].as_str() {
            Some(next) => token = next.to_string(),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let ids: Vec<i64> = all.iter().map(|r| r[0].as_i64().unwrap()).collect();
    assert_eq!(ids, vec![1, 2, 3, 4, 5]);
    // Every format; CSV from the middle.
    let csv = results(&server, &first_id, "?page_token=r3", "text/csv").await;
    assert!(csv.headers().get("tarn-next-page-token").is_none());
    assert_eq!(csv.text().await.unwrap(), "id,kind\n4,view\n5,view\n");
    let arrow = results(&server, &first_id, "", "application/vnd.apache.arrow.stream").await;
    let bytes = arrow.bytes().await.unwrap();
    let reader =
        arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None).unwrap();
    assert_eq!(reader.map(|b| b.unwrap().num_rows()).sum::<usize>(), 5);
    let parquet =
        results(&server, &first_id, "?max_rows=4", "application/vnd.apache.parquet").await;
    assert_eq!(parquet.headers()["tarn-next-page-token"], "r4");
    let batches = parquet_batches(parquet.bytes().await.unwrap());
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 4);
    let bad = results(&server, &first_id, "?page_token=xyz", "application/json").await;
    assert_eq!(bad.status(), 400);

    // The same SQL on the same versions: answered from the stored result.
    let (_, again) = submit(&server, json!({ "sql": sql })).await;
    let again = finished(&server, again["id"].as_str().unwrap()).await;
    assert_eq!(again["state"], "succeeded");
    assert_eq!(again["reused"], true, "{again}");
    assert_eq!(again["reused_from"], first_id.as_str());
    assert_eq!(again["bytes_scanned"], 0);
    assert_eq!(again["rows"], 5);
    let page: Value = results(&server, again["id"].as_str().unwrap(), "", "application/json")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["rows"].as_array().unwrap().len(), 5);
    // ... unless the caller opts out.
    let (_, fresh) = submit(&server, json!({ "sql": sql, "reuse": false })).await;
    let fresh = finished(&server, fresh["id"].as_str().unwrap()).await;
    assert_eq!(fresh["reused"], false, "{fresh}");

    // An ingest moves the version: the next run is fresh and sees the new row.
    let (code, _) =
        server.ingest("clicks", "application/json", r#"{"id": 6, "kind": "cart"}"#).await;
    assert_eq!(code, 200);
    let (_, after) = submit(&server, json!({ "sql": sql })).await;
    let after = finished(&server, after["id"].as_str().unwrap()).await;
    assert_eq!(after["reused"], false, "{after}");
    assert_eq!(after["rows"], 6);
    assert_eq!(after["tables"], json!([{"table": "default.clicks", "version": 2}]));

    // Queries whose answer changes by itself are never reused.
    let volatile = json!({ "sql": "SELECT count(*), now() FROM clicks" });
    let (_, one) = submit(&server, volatile.clone()).await;
    finished(&server, one["id"].as_str().unwrap()).await;
    let (_, two) = submit(&server, volatile).await;
    assert_eq!(finished(&server, two["id"].as_str().unwrap()).await["reused"], false);

    // A failing query fails with the API's error, and has no results.
    let (_, broken) = submit(&server, json!({ "sql": "SELECT nope FROM clicks" })).await;
    let broken_id = broken["id"].as_str().unwrap();
    let broken = finished(&server, broken_id).await;
    assert_eq!(broken["state"], "failed");
    assert_eq!(broken["error"]["code"], "bad_request", "{broken}");
    let no_results = results(&server, broken_id, "", "application/json").await;
    assert_eq!(no_results.status(), 409);

    // Its status is kept in the lake beside the result: a second server sharing the lake
    // answers for it.
    let other = TestServer::start_on(server.lake.alias(), |_| {}).await;
    let (code, seen) = other.get(&format!("/v1/queries/{first_id}")).await;
    assert_eq!(code, 200, "{seen}");
    assert_eq!(seen["rows"], 5);
    let (code, _) = other.get("/v1/queries/0123456789abcdef0123456789abcdef").await;
    assert_eq!(code, 404);
}

fn parquet_batches(bytes: bytes::Bytes) -> Vec<arrow::array::RecordBatch> {
    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
        .unwrap()
        .build()
        .unwrap()
        .map(|b| b.unwrap())
        .collect()
}

/// A query that keeps a core busy for long enough to be cancelled or timed out.
const SLOW: &str = "SELECT count(*) FROM generate_series(1, 20000000000) a WHERE a.value % 7 = 3";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_expiry_and_limits() {
    let server = TestServer::start_with(Backend::Local, |c| {
        c.query.results_ttl = Duration::from_secs(2);
        c.query.timeout = Duration::from_secs(1);
        c.query.max_concurrent = 1;
        c.query.max_queued = 1;
        c.query.max_result_rows = 5;
    })
    .await;

    // Cancel a running query.
    let (_, slow) = submit(&server, json!({ "sql": SLOW })).await;
    let slow_id = slow["id"].as_str().unwrap().to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, status) = server.get(&format!("/v1/queries/{slow_id}")).await;
        if status["state"] == "running" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the slow query never ran: {status}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The only slot is taken and one query may wait: the next waits, the one after is refused.
    let (code, queued) = submit(&server, json!({ "sql": "SELECT 1" })).await;
    assert_eq!(code, 202);
    let (code, refused) = submit(&server, json!({ "sql": "SELECT 2" })).await;
    assert_eq!(code, 429, "{refused}");
    assert!(refused["error"]["message"].as_str().unwrap().contains("waiting"), "{refused}");
    let sync = server.client.post(server.url("/v1/sql")).body("SELECT 3").send().await.unwrap();
    assert_eq!(sync.status(), 429);
    assert!(sync.headers().contains_key("retry-after"));

    // Another server sharing the lake sees the running query, and leaves cancelling to the
    // server that runs it.
    let other = TestServer::start_on(server.lake.alias(), |_| {}).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (code, status) = other.get(&format!("/v1/queries/{slow_id}")).await;
        assert_eq!(code, 200, "{status}");
        if status["state"] == "running" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the other server never saw it run: {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let response =
        other.client.delete(other.url(&format!("/v1/queries/{slow_id}"))).send().await.unwrap();
    assert_eq!(response.status(), 409);

    let response =
        server.client.delete(server.url(&format!("/v1/queries/{slow_id}"))).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let cancelled: Value = response.json().await.unwrap();
    assert_eq!(cancelled["state"], "cancelled", "{cancelled}");
    assert_eq!(server.get(&format!("/v1/queries/{slow_id}")).await.1["state"], "cancelled");
    let none = results(&server, &slow_id, "", "application/json").await;
    assert_eq!(none.status(), 409);
    // The slot is free again: the queued query runs.
    let queued = finished(&server, queued["id"].as_str().unwrap()).await;
    assert_eq!(queued["state"], "succeeded", "{queued}");

    // The sync time limit: 504 that says so.
    let (code, body) = server.sql(SLOW).await;
    assert_eq!(code, 504, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("longer than its limit"), "{body}");

    // The row cap of JSON answers, with the marker; streaming formats are not cut.
    let (_, capped) = server.sql("SELECT * FROM generate_series(1, 8)").await;
    assert_eq!(capped["rows"].as_array().unwrap().len(), 5);
    assert_eq!(capped["truncated"], true);
    let (_, exact) = server.sql("SELECT * FROM generate_series(1, 5)").await;
    assert_eq!(exact["rows"].as_array().unwrap().len(), 5);
    assert!(exact.get("truncated").is_none(), "{exact}");
    let (_, _, csv) = server.sql_as("SELECT * FROM generate_series(1, 8)", "text/csv").await;
    assert_eq!(String::from_utf8_lossy(&csv).lines().count(), 9);
    let (code, content_type, parquet) = server
        .sql_as("SELECT * FROM generate_series(1, 8)", "application/vnd.apache.parquet")
        .await;
    assert_eq!((code, content_type.as_str()), (200, "application/vnd.apache.parquet"));
    assert_eq!(parquet_batches(parquet).iter().map(|b| b.num_rows()).sum::<usize>(), 8);

    // Expiry: results and status are gone from memory and from the lake.
    let (_, quick) = submit(&server, json!({ "sql": "SELECT * FROM generate_series(1, 3)" })).await;
    let quick_id = quick["id"].as_str().unwrap().to_string();
    let done = finished(&server, &quick_id).await;
    assert_eq!(done["state"], "succeeded");
    let results_dir =
        std::path::Path::new(&server.lake.location).join("_tarn/results").join(&quick_id);
    assert!(results_dir.join("result.parquet").exists());
    // The TTL (2 s) is under test: poll for up to 10 s until both are gone.
    let mut gone = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if server.get(&format!("/v1/queries/{quick_id}")).await.0 == 404
            && !results_dir.join("result.parquet").exists()
        {
            gone = true;
            break;
        }
    }
    assert!(gone, "the result of {quick_id} did not expire");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_heavy_queries_spill_or_fail_clearly() {
    let server = TestServer::start_with(Backend::Local, |c| {
        c.query.memory_limit = 16 << 20;
    })
    .await;
    // A sort of 3M rows needs ~24 MB of keys alone: with 16 MB it spills and succeeds.
    let sort = "SELECT value, row_number() OVER (ORDER BY value DESC) AS rn FROM generate_series(1, 3000000)";
    let (code, body) =
        server.sql(&format!("SELECT count(*) AS n, min(rn) AS first FROM ({sort})")).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["rows"], json!([[3000000, 1]]));
    // The async status shows the spill.
    let (_, submitted) = submit(&server, json!({ "sql": sort })).await;
    let status = finished(&server, submitted["id"].as_str().unwrap()).await;
    assert_eq!(status["state"], "succeeded", "{status}");
    assert_eq!(status["rows"], 3000000);
    assert!(status["spilled_bytes"].as_u64().unwrap() > 0, "{status}");
    // A hash join's build side cannot spill: a clear "resources" error, 503 with Retry-After.
    let response = server
        .client
        .post(server.url("/v1/sql"))
        .body("SELECT count(*) FROM generate_series(1, 4000000) a JOIN generate_series(1, 4000000) b ON a.value = b.value")
        .send()
        .await
        .unwrap();
    let code = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    assert_eq!(code, 503, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("resources"), "{message}");
}

/// Time travel's SQL is in tests/sql/time_travel.slt; here what an async query records of it.
async fn async_queries_record_the_time_travel_they_read(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (code, _) =
        server.ingest("prices", "application/json", r#"{"sku": "a", "price": 1.0}"#).await;
    assert_eq!(code, 200);
    let (code, _) = server
        .ingest(
            "prices",
            "application/json",
            r#"[{"sku": "b", "price": 2.0}, {"sku": "c", "price": 3.0}]"#,
        )
        .await;
    assert_eq!(code, 200);
    // An async query records the version it read.
    let (_, submitted) =
        submit(&server, json!({ "sql": "SELECT * FROM prices VERSION AS OF 1" })).await;
    let status = finished(&server, submitted["id"].as_str().unwrap()).await;
    assert_eq!(status["state"], "succeeded", "{status}");
    assert_eq!(status["rows"], 1, "{status}");
    assert_eq!(
        status["tables"],
        json!([{"table": "default.prices", "version": 1, "time_travel": true}])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_and_history() {
    let server = TestServer::start(Backend::Local).await;
    let (code, _) = server.ingest("visits", "application/json", r#"{"page": "/", "ms": 12}"#).await;
    assert_eq!(code, 200);
    let (code, _) = server.ingest("web.hits", "application/json", r#"{"path": "/a"}"#).await;
    assert_eq!(code, 200);

    let (code, body) = server.get("/v1/namespaces").await;
    assert_eq!(code, 200);
    assert_eq!(
        body,
        json!({"namespaces": [{"name": "default", "tables": 1}, {"name": "web", "tables": 1}]})
    );

    // SHOW TABLES, DESCRIBE and information_schema are in tests/sql/catalog.slt.
    let (code, history) = server.get("/v1/tables/visits/history").await;
    assert_eq!(code, 200);
    assert_eq!(history["commits"][0]["version"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reuse_never_serves_stale_or_deleted_results() {
    let server = TestServer::start(Backend::Local).await;
    let lake = std::path::Path::new(&server.lake.location).to_path_buf();

    // A crawled table of files changes without a version: never reused.
    std::fs::create_dir_all(lake.join("exports/visits")).unwrap();
    std::fs::write(lake.join("exports/visits/a.csv"), "page,ms\n/,1\n/b,2\n").unwrap();
    let response = server
        .client
        .post(server.url("/v1/crawl"))
        .json(&json!({"location": "exports/visits"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    let count = json!({ "sql": "SELECT count(*) FROM visits" });
    let (_, first) = submit(&server, count.clone()).await;
    let first = finished(&server, first["id"].as_str().unwrap()).await;
    assert_eq!(first["tables"], json!([{"table": "default.visits", "version": 0, "files": true}]));
    std::fs::write(lake.join("exports/visits/b.csv"), "page,ms\n/c,3\n").unwrap();
    let (_, second) = submit(&server, count).await;
    let second_id = second["id"].as_str().unwrap().to_string();
    let second = finished(&server, &second_id).await;
    assert_eq!(second["reused"], false, "{second}");
    let page: Value =
        results(&server, &second_id, "", "application/json").await.json().await.unwrap();
    assert_eq!(page["rows"], json!([[3]]));

    // A table dropped and created again has versions of the same numbers: not the same data.
    let (code, _) = server.ingest("t", "application/json", r#"[{"x": 1}, {"x": 2}]"#).await;
    assert_eq!(code, 200);
    let sum = json!({ "sql": "SELECT sum(x) AS s FROM t" });
    let (_, old) = submit(&server, sum.clone()).await;
    let old_id = old["id"].as_str().unwrap().to_string();
    assert_eq!(finished(&server, &old_id).await["tables"][0]["version"], 1);
    let dropped = server.client.delete(server.url("/v1/tables/t?purge=true")).send().await.unwrap();
    assert_eq!(dropped.status(), 204);
    let (code, receipt) = server.ingest("t", "application/json", r#"[{"x": 5}, {"x": 5}]"#).await;
    assert_eq!((code, &receipt["version"]), (200, &json!(1)), "{receipt}");
    let (_, new) = submit(&server, sum.clone()).await;
    let new_id = new["id"].as_str().unwrap().to_string();
    let new = finished(&server, &new_id).await;
    assert_eq!(new["reused"], false, "{new}");
    let page: Value = results(&server, &new_id, "", "application/json").await.json().await.unwrap();
    assert_eq!(page["rows"], json!([[10]]));

    // A result reused by another query, deleted: the other's results are gone too (404).
    let (_, reuser) = submit(&server, sum).await;
    let reuser_id = reuser["id"].as_str().unwrap().to_string();
    assert_eq!(finished(&server, &reuser_id).await["reused_from"], new_id.as_str());
    let deleted =
        server.client.delete(server.url(&format!("/v1/queries/{new_id}"))).send().await.unwrap();
    assert_eq!(deleted.status(), 200);
    assert_eq!(results(&server, &reuser_id, "", "application/json").await.status(), 404);

    // Async SQL is bounded (its text is kept with the status).
    let long = format!("SELECT 1 -- {}", "x".repeat(300 * 1024));
    let (code, body) = submit(&server, json!({ "sql": long })).await;
    assert_eq!(code, 413, "{body}");
}
