//! Crash safety: `tarn serve` is SIGKILLed at random points while several clients send
//! records with unique ids; after restarts, every record that got a 2xx is in the table
//! exactly once (and no record is there twice). On a temp dir and on S3.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tarn_lake::backend_tests;
use tarn_lake::test_util::{Backend, TestLake};

use crate::support::ServeProcess;

backend_tests!(sigkill_loses_and_duplicates_nothing);

const CLIENTS: u64 = 4;
const KILLS: usize = 3;

/// xorshift: enough randomness for kill points, and the seed is printed to replay a failure.
struct Rng(u64);
impl Rng {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

async fn sigkill_loses_and_duplicates_nothing(backend: Backend) {
    let seed =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
            as u64
            | 1;
    println!("crash test seed {seed}");
    let mut rng = Rng(seed);
    let lake = TestLake::new(backend);
    let wal_dir = tempfile::tempdir().unwrap();
    let wal = wal_dir.path().display().to_string();
    let args = ["--wal-dir", wal.as_str(), "--flush-max-age-ms", "150"];
    let acked: Arc<Mutex<BTreeSet<u64>>> = Default::default();
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();

    for round in 0..KILLS as u64 {
        let server = ServeProcess::start(&lake, &args).await;
        let url = format!("http://{}/v1/ingest/orders", server.addr);
        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let (client, url, acked) = (client.clone(), url.clone(), acked.clone());
                let batch = 1 + (c % 3) * 7; // 1, 8 or 15 records per request
                tokio::spawn(async move {
                    for n in 0.. {
                        let first = round * 100_000_000 + c * 1_000_000 + n * 100;
                        let ids: Vec<u64> = (first..first + batch).collect();
                        let body: String = ids
                            .iter()
                            .map(|id| format!("{{\"id\": {id}, \"client\": {c}}}\n"))
                            .collect();
                        let sent = client
                            .post(&url)
                            .header("content-type", "application/x-ndjson")
                            .body(body)
                            .send()
                            .await;
                        match sent {
                            Ok(r) if r.status().is_success() => acked.lock().unwrap().extend(ids),
                            // A client backing off, as Retry-After asks.
                            Ok(r) if r.status() == 503 => {
                                tokio::time::sleep(Duration::from_millis(50)).await
                            }
                            Ok(r) => panic!("unexpected answer {}", r.status()),
                            Err(_) => return, // the server is gone
                        }
                    }
                })
            })
            .collect();
        // The kill point is under test: a random moment while the clients send.
        tokio::time::sleep(Duration::from_millis(300 + rng.next(1200))).await;
        server.kill().await;
        for c in clients {
            c.await.unwrap();
        }
    }

    // A last start replays what the WAL holds; SIGTERM commits the rest.
    let server = ServeProcess::start(&lake, &args).await;
    let addr = server.addr.clone();
    let count = |sql: &'static str| {
        let client = client.clone();
        let addr = addr.clone();
        async move {
            let r = client
                .post(format!("http://{addr}/v1/sql"))
                .json(&serde_json::json!({"sql": sql}))
                .send()
                .await
                .unwrap();
            let v: Value = r.json().await.unwrap();
            v
        }
    };
    // wait=commit on a fresh record flushes the table, after the replayed records.
    let r = client
        .post(format!("http://{addr}/v1/ingest/orders?wait=commit"))
        .header("content-type", "application/json")
        .body("{\"id\": 999999999999, \"client\": 99}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let duplicates =
        count("SELECT id, count(*) AS n FROM orders GROUP BY id HAVING count(*) > 1 LIMIT 5").await;
    assert_eq!(duplicates["rows"], serde_json::json!([]), "duplicated ids: {duplicates}");
    let ids = count("SELECT id FROM orders").await;
    let stored: BTreeSet<u64> =
        ids["rows"].as_array().unwrap().iter().map(|r| r[0].as_u64().unwrap()).collect();
    let acked = acked.lock().unwrap().clone();
    let missing: Vec<&u64> = acked.difference(&stored).take(10).collect();
    assert!(missing.is_empty(), "acknowledged but missing (first 10): {missing:?}");
    println!(
        "crash test: {} kills, {} acknowledged records, {} stored (unacknowledged ones may land too), 0 lost, 0 duplicated",
        KILLS,
        acked.len(),
        stored.len() - 1
    );
    assert!(acked.len() > 100, "the clients got work done between kills");
    server.terminate().await;
}
