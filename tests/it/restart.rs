//! A server restarted while storage is down: it starts, answers health checks and queries
//! that need no storage, takes records into its write-ahead log, and says it is not ready
//! until its log is replayed; once storage is back, every acknowledged record is in the table
//! exactly once. The outage is a fault-injecting TCP proxy between Tarn and the S3 server;
//! the first server dies by SIGKILL.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tarn_lake::test_util::{s3_endpoint, Backend, TestLake};

use crate::support::{FaultProxy, ServeProcess};

/// `POST /v1/ingest/events` of the records `ids`; answers the status.
async fn post(client: &reqwest::Client, addr: &str, ids: &[u64], wait: bool) -> u16 {
    let body: String = ids.iter().map(|id| format!("{{\"id\": {id}}}\n")).collect();
    let query = if wait { "?wait=commit" } else { "" };
    client
        .post(format!("http://{addr}/v1/ingest/events{query}"))
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn get(client: &reqwest::Client, addr: &str, path: &str) -> (u16, Value) {
    let response = client.get(format!("http://{addr}{path}")).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_during_an_outage_serves_and_loses_nothing() {
    let upstream: SocketAddr = s3_endpoint().trim_start_matches("http://").parse().unwrap();
    let proxy = FaultProxy::start(upstream).await;
    let endpoint = format!("http://{}", proxy.addr);
    let env = [("AWS_ENDPOINT_URL", endpoint.as_str())];
    let lake = TestLake::new(Backend::S3);
    let wal_dir = tempfile::tempdir().unwrap();
    let wal = wal_dir.path().display().to_string();
    // Commits wait for a minute unless a request asks for one: records stay in the log.
    let args =
        ["--wal-dir", wal.as_str(), "--flush-max-age-ms", "60000", "--landing-poll-secs", "0"];
    let client = reqwest::Client::builder().timeout(Duration::from_secs(120)).build().unwrap();
    let mut acked = BTreeSet::new();

    let first = ServeProcess::start_with_env(&lake, &args, &env).await;
    assert_eq!(post(&client, &first.addr, &(0..10).collect::<Vec<_>>(), true).await, 200);
    acked.extend(0..10);
    // Acknowledged, in the log, not committed.
    assert_eq!(post(&client, &first.addr, &(10..20).collect::<Vec<_>>(), false).await, 202);
    acked.extend(10..20);
    proxy.cut();
    assert_eq!(post(&client, &first.addr, &(20..30).collect::<Vec<_>>(), false).await, 202);
    acked.extend(20..30);
    first.kill().await;

    // Restarted while storage is still down: it starts at once.
    let started = Instant::now();
    let second = ServeProcess::start_with_env(&lake, &args, &env).await;
    let addr = second.addr.clone();
    println!("restarted during the outage in {} ms", started.elapsed().as_millis());
    assert_eq!(get(&client, &addr, "/healthz").await.0, 200);
    let (status, body) = get(&client, &addr, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    let reason = body["error"]["message"].as_str().unwrap().to_string();
    assert!(reason.contains("replaying the write-ahead log"), "{reason}");
    assert!(reason.contains("default.events"), "{reason}");
    // Queries that need no storage answer.
    let (status, body) = {
        let response = client
            .post(format!("http://{addr}/v1/sql"))
            .json(&json!({"sql": "SELECT 1 + 1 AS two"}))
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.json::<Value>().await.unwrap())
    };
    assert_eq!((status, &body["rows"]), (200, &json!([[2]])), "{body}");
    // Records go into the log, checked against the table's definition kept on local disk.
    assert_eq!(post(&client, &addr, &(30..40).collect::<Vec<_>>(), false).await, 202);
    acked.extend(30..40);

    proxy.heal();
    let healed = Instant::now();
    loop {
        let (status, body) = get(&client, &addr, "/readyz").await;
        if status == 200 {
            break;
        }
        assert!(healed.elapsed() < Duration::from_secs(240), "never ready after healing: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("ready {} ms after storage came back", healed.elapsed().as_millis());
    assert_eq!(post(&client, &addr, &[40], true).await, 200);
    acked.insert(40);
    let response = client
        .post(format!("http://{addr}/v1/sql"))
        .json(&json!({"sql": "SELECT count(*), count(DISTINCT id), min(id), max(id) FROM events"}))
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    let n = acked.len() as u64;
    assert_eq!(body["rows"], json!([[n, n, 0, 40]]), "every acknowledged record exactly once");
    println!("outage restart: {n} records acknowledged, {n} committed once");
    second.terminate().await;
}
