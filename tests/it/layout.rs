//! Data layout: a table's `cluster_by` columns order the rows of the files ingest writes.

use serde_json::{json, Value};
use tarn_lake::backend_tests;
use tarn_lake::test_util::Backend;

use crate::support::TestServer;

backend_tests!(ingest_writes_files_sorted_by_cluster_by, compaction_sorts_by_cluster_by);

/// Each flush is written sorted by `cluster_by` (nulls last), whatever order the records
/// came in; a `cluster_by` naming no column, or a partition column, is refused.
async fn ingest_writes_files_sorted_by_cluster_by(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (status, answer) = server
        .define(
            "clicks",
            json!({
                "columns": [
                    {"name": "user_id", "type": "int64"},
                    {"name": "page", "type": "string"},
                    {"name": "day", "type": "date"}
                ],
                "partition_by": ["day"],
                "cluster_by": ["user_id", "page"]
            }),
        )
        .await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(answer["cluster_by"], json!(["user_id", "page"]), "{answer}");

    // 40 records, user ids in a scrambled order, one without a user id, in one commit.
    let mut body = String::new();
    for i in 0..40u64 {
        let user = (i * 17) % 40;
        body.push_str(&format!(
            "{{\"user_id\": {user}, \"page\": \"p{}\", \"day\": \"2026-12-01\"}}\n",
            i % 3
        ));
    }
    body.push_str("{\"page\": \"anonymous\", \"day\": \"2026-12-01\"}\n");
    let (status, receipt) = server.ingest("clicks", "application/x-ndjson", &body).await;
    assert_eq!(status, 200, "{receipt}");
    assert_eq!(receipt["accepted"], 41, "{receipt}");

    // One small file: a plain scan returns its rows in the file's order.
    let rows = server.rows("SELECT user_id FROM clicks").await;
    let mut expected: Vec<Value> = (0..40).map(|u| json!([u])).collect();
    expected.push(json!([null]));
    assert_eq!(rows, expected);

    for (cluster_by, reason) in [
        (json!(["nope"]), "cluster_by names 'nope', which is not a column"),
        (json!(["day"]), "cluster_by names the partition column 'day'"),
    ] {
        let (status, answer) = server
            .define(
                "bad_layout",
                json!({
                    "columns": [{"name": "user_id", "type": "int64"}, {"name": "day", "type": "date"}],
                    "partition_by": ["day"],
                    "cluster_by": cluster_by
                }),
            )
            .await;
        assert_eq!(status, 400, "{answer}");
        assert!(answer["error"]["message"].as_str().unwrap().contains(reason), "{answer}");
    }
}

/// Background compaction of a table with `cluster_by` rewrites its small files as one file
/// sorted by those columns (each commit's file is sorted, the files' ranges overlap).
async fn compaction_sorts_by_cluster_by(backend: Backend) {
    let server =
        TestServer::start_with(backend, |c| c.ingest.maintenance.compact_min_files = 5).await;
    let definition = json!({
        "columns": [{"name": "user_id", "type": "int64"}, {"name": "n", "type": "int64"}],
        "cluster_by": ["user_id"]
    });
    let (status, answer) = server.define("visits", definition).await;
    assert_eq!(status, 201, "{answer}");
    // Five commits of 20 user ids each, scattered over 0..100.
    for k in 0..5u64 {
        let body: String = (0..20u64)
            .map(|i| format!("{{\"user_id\": {}, \"n\": {k}}}\n", (i * 37 + k * 11) % 100))
            .collect();
        let (status, receipt) = server.ingest("visits", "application/x-ndjson", &body).await;
        assert_eq!(status, 200, "{receipt}");
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (_, table) = server.get("/v1/tables/visits").await;
        if table["stats"]["files"] == 1 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never compacted: {table}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // One file: a plain scan returns its rows in the file's order.
    let ids: Vec<u64> = server
        .rows("SELECT user_id FROM visits")
        .await
        .iter()
        .map(|row| row[0].as_u64().unwrap())
        .collect();
    assert_eq!(ids.len(), 100);
    assert!(ids.windows(2).all(|w| w[0] <= w[1]), "not sorted: {ids:?}");
    let (_, history) = server.get("/v1/tables/visits/history").await;
    assert_eq!(history["commits"][0]["operation"], "OPTIMIZE", "{history}");
}
