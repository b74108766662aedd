//! A storage outage: a fault-injecting TCP proxy sits between Tarn and the S3 server. While it
//! is cut, ingest keeps acknowledging until the WAL limit, then answers 503 with Retry-After;
//! once it heals, the backlog drains by itself and every acknowledged record is committed
//! exactly once.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::json;
use tarn::config::ServeConfig;
use tarn_lake::test_util::{s3_endpoint, Backend};

use crate::support::{FaultProxy, TestServer};

/// A server on S3 through a fault-injecting proxy, whose store fails fast (Tarn's own flusher
/// retries with backoff); `configure` adds to that.
async fn behind_a_proxy(configure: impl FnOnce(&mut ServeConfig)) -> (FaultProxy, TestServer) {
    let upstream: SocketAddr = s3_endpoint().trim_start_matches("http://").parse().unwrap();
    let proxy = FaultProxy::start(upstream).await;
    let endpoint = format!("http://{}", proxy.addr);
    let server = TestServer::start_with(Backend::S3, |config| {
        let storage = &mut config.lake_options.storage;
        storage.insert("AWS_ENDPOINT_URL".into(), endpoint);
        storage.insert("max_retries".into(), "2".into());
        storage.insert("retry_timeout".into(), "2s".into());
        configure(config);
    })
    .await;
    (proxy, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_outage_backpressure_then_drain() {
    let (proxy, server) = behind_a_proxy(|config| {
        config.lake_options.storage.insert("timeout".into(), "3s".into());
        config.ingest.wal.max_bytes = 160 * 1024;
        config.ingest.wal.segment_bytes = 16 * 1024;
        config.ingest.flush.max_age_ms = 100;
    })
    .await;
    let url = server.url("/v1/ingest/events");
    let post = |id: u64| {
        server
            .client
            .post(&url)
            .header("content-type", "application/json")
            .body(format!("{{\"id\": {id}, \"pad\": \"{}\"}}", "p".repeat(400)))
            .send()
    };
    let mut acked = BTreeSet::new();
    for id in 0..20 {
        assert_eq!(post(id).await.unwrap().status(), 202);
        acked.insert(id);
    }

    proxy.cut();
    let mut id = 1000;
    let started = Instant::now();
    let refusal = loop {
        let response = post(id).await.unwrap();
        match response.status().as_u16() {
            202 => {
                acked.insert(id);
                id += 1;
            }
            503 => break response,
            other => panic!("unexpected {other}"),
        }
        assert!(started.elapsed() < Duration::from_secs(60), "the WAL limit never answered 503");
    };
    assert_eq!(refusal.headers()["retry-after"], "1");
    let body: serde_json::Value = refusal.json().await.unwrap();
    assert!(
        body["error"]["message"].as_str().unwrap().contains("write-ahead log is full"),
        "{body}"
    );
    let during_outage = acked.len() - 20;
    assert!(during_outage >= 50, "kept acknowledging during the outage: {during_outage}");

    // The outage goes on for a while with the WAL full (the flusher's failing retries and
    // the 503s are what is under test), then storage comes back.
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.heal();
    // The backlog drains by itself; ingest accepts again.
    let healed = Instant::now();
    loop {
        let response = post(id).await.unwrap();
        if response.status() == 202 {
            acked.insert(id);
            break;
        }
        assert!(healed.elapsed() < Duration::from_secs(90), "never accepted again after healing");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, _) =
        server.ingest("events", "application/json", "{\"id\": 99999, \"pad\": \"\"}").await;
    assert_eq!(status, 200);
    acked.insert(99999);
    let (_, result) = server.sql("SELECT count(*), count(DISTINCT id) FROM events").await;
    let n = acked.len() as u64;
    assert_eq!(result["rows"], json!([[n, n]]), "every acknowledged record exactly once");
    println!("outage test: {during_outage} records acknowledged during the outage before 503; {n} committed exactly once after healing");
}

/// Ingest into a known table goes on during an outage longer than the catalog's definition
/// cache (2 s): the plan it had serves until storage is back, and the WAL takes the records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_longer_than_the_definition_cache_still_takes_records() {
    let (proxy, server) = behind_a_proxy(|_| {}).await;
    let (status, _) = server.ingest("events", "application/json", r#"{"id": 1}"#).await;
    assert_eq!(status, 200);
    proxy.cut();
    // The length of the outage is under test: longer than the definition cache.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let response = server
        .client
        .post(server.url("/v1/ingest/events"))
        .header("content-type", "application/json")
        .body(r#"{"id": 2}"#)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = response.text().await.unwrap();
    assert_eq!(status, 202, "the WAL has room: {body}");
    proxy.heal();
}

/// `/readyz` says 503, with the reason, while the lake's storage does not answer, and 200 again
/// once it does; `/healthz` (liveness) stays 200 throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_while_storage_does_not_answer() {
    let (proxy, server) = behind_a_proxy(|config| {
        config.lake_options.storage.insert("timeout".into(), "2s".into());
    })
    .await;
    let ready = |path: &'static str| {
        let client = server.client.clone();
        let url = server.url(path);
        async move {
            let response = client.get(url).send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.text().await.unwrap())
        }
    };
    // Waits up to a minute for `/readyz` to answer `want`.
    let until = |want: u16| async move {
        let started = Instant::now();
        loop {
            let (status, body) = ready("/readyz").await;
            if status == want {
                return (body, started.elapsed());
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "/readyz never said {want}: {body}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    until(200).await;
    proxy.cut();
    let (body, after) = until(503).await;
    assert!(body.contains("the lake's storage does not answer"), "{body}");
    assert_eq!(ready("/healthz").await.0, 200);
    proxy.heal();
    let (_, healed) = until(200).await;
    println!(
        "/readyz: 503 {} ms after the cut, 200 {} ms after healing",
        after.as_millis(),
        healed.as_millis()
    );
}
