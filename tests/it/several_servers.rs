//! Several servers on one lake.
//!
//! - A table's unique key holds across servers: three servers are sent the same keys at the
//!   same time, and the table ends up with each key once — the record of a server that
//!   acknowledged it — with every row that was acknowledged and left out accounted for.
//! - Files dropped into the drop zone are claimed: three servers watching it load each file
//!   once.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{json, Value};
use tarn_lake::backend_tests;
use tarn_lake::test_util::Backend;

use crate::support::TestServer;

backend_tests!(three_servers_keep_unique_keys_unique, three_servers_load_each_dropped_file_once);

/// Keys each server is sent.
const KEYS: usize = 150;
/// Requests each server has under way at once.
const CONCURRENCY: usize = 8;

async fn post(server: &TestServer, query: &str, record: &Value) -> (u16, Value) {
    let response = server
        .client
        .post(server.url(&format!("/v1/ingest/leads{query}")))
        .header("content-type", "application/json")
        .body(record.to_string())
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

/// `figure` of `table` in the server's `GET /v1/ingest` (0 when it did not ingest into it).
async fn ingest_figure(server: &TestServer, table: &str, figure: &str) -> u64 {
    let status: Value =
        server.client.get(server.url("/v1/ingest")).send().await.unwrap().json().await.unwrap();
    let tables = status["tables"].as_array().unwrap();
    let found = tables.iter().find(|t| t["table"] == table);
    found.map_or(0, |t| t[figure].as_u64().unwrap())
}

async fn three_servers_keep_unique_keys_unique(backend: Backend) {
    let a = TestServer::start(backend).await;
    let definition = json!({
        "columns": [
            {"name": "email", "type": "string", "nullable": false},
            {"name": "server", "type": "string"},
            {"name": "n", "type": "int64"}
        ],
        "unique_key": ["email"]
    });
    let (status, body) = a.define("leads", definition).await;
    assert_eq!(status, 201, "{body}");
    let b = TestServer::start_on(a.lake.alias(), |_| {}).await;
    let c = TestServer::start_on(a.lake.alias(), |_| {}).await;
    let servers = [("a", &a), ("b", &b), ("c", &c)];

    // Every server is sent every key, one record per request, all at once: a and b in the
    // same order, c in the opposite one.
    let sent = servers.iter().map(|&(label, server)| async move {
        let mut order: Vec<usize> = (0..KEYS).collect();
        if label == "c" {
            order.reverse();
        }
        let answers = futures::stream::iter(order)
            .map(|n| async move {
                let record = json!({"email": format!("k{n}@example.com"), "server": label, "n": n});
                let (status, answer) = post(server, "", &record).await;
                assert_eq!(status, 202, "{label}: {answer}");
                (n, answer["accepted"].as_u64().unwrap(), answer["duplicates"].as_u64().unwrap())
            })
            .buffer_unordered(CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        // A last record waited for: every record before it is committed.
        let record = json!({"email": format!("last-{label}@example.com"), "server": label});
        let (status, answer) = post(server, "?wait=commit", &record).await;
        assert_eq!(status, 200, "{label}: {answer}");
        (label, answers)
    });
    let sent = futures::future::join_all(sent).await;

    // Who acknowledged which key.
    let mut acknowledged: BTreeMap<usize, BTreeSet<&str>> = BTreeMap::new();
    let mut accepted = 0u64;
    for (label, answers) in &sent {
        for &(n, took, duplicates) in answers {
            assert_eq!(took + duplicates, 1, "{label} k{n}");
            if took == 1 {
                acknowledged.entry(n).or_default().insert(label);
                accepted += 1;
            }
        }
    }
    assert_eq!(acknowledged.len(), KEYS, "each key is acknowledged by some server");

    // No key twice.
    let (status, body) =
        a.sql("SELECT email, count(*) AS c FROM leads GROUP BY email HAVING count(*) > 1").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rows"], json!([]), "duplicate keys in the table");
    // Every acknowledged key is there, as the record of a server that acknowledged it.
    let (status, body) = a.sql("SELECT n, server FROM leads WHERE n IS NOT NULL").await;
    assert_eq!(status, 200, "{body}");
    let rows = body["rows"].as_array().unwrap();
    let stored: BTreeMap<usize, String> = rows
        .iter()
        .map(|r| (r[0].as_u64().unwrap() as usize, r[1].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(stored.len(), rows.len());
    for (n, servers) in &acknowledged {
        let server = stored.get(n).unwrap_or_else(|| panic!("k{n} acknowledged, not stored"));
        assert!(
            servers.contains(server.as_str()),
            "k{n} stored from {server}, sent by {servers:?}"
        );
    }
    // Acknowledged rows that are not in the table are the ones left out at commit, counted.
    let mut dropped = 0;
    for (_, server) in servers {
        dropped += ingest_figure(server, "default.leads", "duplicates_dropped").await;
    }
    assert_eq!(accepted - dropped, KEYS as u64, "accepted {accepted}, dropped {dropped}");
    assert!(dropped > 0, "the servers raced for keys: {accepted} acknowledged");
    println!("{KEYS} keys: {accepted} acknowledged by three servers, {dropped} left out at commit");

    // A key committed through one server is refused at admission by another once that one has
    // committed since.
    let solo = json!({"email": "solo@example.com", "server": "a"});
    let (status, answer) = post(&a, "?wait=commit", &solo).await;
    assert_eq!((status, &answer["accepted"]), (200, &json!(1)), "{answer}");
    let other = json!({"email": "other@example.com", "server": "b"});
    let (status, answer) = post(&b, "?wait=commit", &other).await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = post(&b, "", &solo).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!((&answer["accepted"], &answer["duplicates"]), (&json!(0), &json!(1)), "{answer}");
}

/// Files each test drops, and rows in each.
const FILES: usize = 12;
const ROWS_PER_FILE: usize = 50;

async fn three_servers_load_each_dropped_file_once(backend: Backend) {
    use object_store::{ObjectStoreExt, PutPayload};
    let fast = |c: &mut tarn::config::ServeConfig| {
        c.ingest.dropzone.poll_secs = 1;
        c.ingest.dropzone.settle_secs = 0;
    };
    let a = TestServer::start_with(backend, fast).await;
    let definition = json!({
        "columns": [
            {"name": "file", "type": "string", "nullable": false},
            {"name": "n", "type": "int64"}
        ]
    });
    let (status, body) = a.define("visits", definition).await;
    assert_eq!(status, 201, "{body}");
    let b = TestServer::start_on(a.lake.alias(), fast).await;
    let c = TestServer::start_on(a.lake.alias(), fast).await;

    let lake = a.lake.open().await;
    let store = lake.store().clone();
    for f in 0..FILES {
        let mut csv = String::from("file,n\n");
        for n in 0..ROWS_PER_FILE {
            csv.push_str(&format!("f{f},{n}\n"));
        }
        let path = object_store::path::Path::from(format!("_tarn/landing/visits/f{f}.csv"));
        store.put(&path, PutPayload::from(csv)).await.unwrap();
    }

    // Done when the landing folder and the claims are empty.
    let count = |prefix: &'static str| {
        let store = store.clone();
        async move {
            use futures::TryStreamExt;
            let prefix = object_store::path::Path::from(prefix);
            store.list(Some(&prefix)).try_collect::<Vec<_>>().await.unwrap().len()
        }
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (landing, claims) = (count("_tarn/landing").await, count("_tarn/claims").await);
        if landing == 0 && claims == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "left: {landing} files, {claims} claims");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let (status, body) =
        a.sql("SELECT file, count(*) AS rows FROM visits GROUP BY file ORDER BY file").await;
    assert_eq!(status, 200, "{body}");
    let rows = body["rows"].as_array().unwrap();
    assert_eq!(rows.len(), FILES, "{body}");
    for row in rows {
        assert_eq!(row[1], json!(ROWS_PER_FILE), "each file loaded once: {row}");
    }
    let mut loaded = Vec::new();
    for server in [&a, &b, &c] {
        loaded.push(ingest_figure(server, "default.visits", "records").await);
    }
    assert_eq!(loaded.iter().sum::<u64>(), (FILES * ROWS_PER_FILE) as u64, "{loaded:?}");
    println!("{FILES} dropped files: rows loaded per server {loaded:?}");
}
