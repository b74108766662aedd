//! Operating a server: `/metrics` read by Prometheus' own parser, the `metrics` scope and
//! `/v1/whoami`, rate limits per key (429 with Retry-After), and JSON logs that name each
//! request's id and key but never the key itself.

use std::time::Duration;

use serde_json::{json, Value};
use tarn_catalog::auth::RateLimit;
use tarn_lake::test_util::{python, Backend, TestLake};

use crate::support::{key, ServeProcess, TestServer};

/// `GET path` with `key` as a bearer token (none: no header): the status, the Retry-After
/// header and the body.
async fn get_as(
    server: &TestServer,
    key: Option<&str>,
    path: &str,
) -> (u16, Option<String>, String) {
    let mut request = server.client.get(server.url(path));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let retry_after =
        response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
    (status, retry_after, response.text().await.unwrap())
}

/// One sample of `/metrics` as `prometheus_client`'s parser read it.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: Value,
    value: f64,
    family_type: String,
}

/// Parses `text` with `prometheus_client.parser.text_string_to_metric_families` (the parser
/// of Prometheus' Python client, from PyPI).
async fn parse_prometheus(text: &str) -> Vec<Sample> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.txt");
    std::fs::write(&path, text).unwrap();
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
with open(sys.argv[1]) as f:
    families = list(text_string_to_metric_families(f.read()))
for family in families:
    for s in family.samples:
        print(json.dumps([s.name, s.labels, s.value, family.type]))
"#;
    let output = tokio::process::Command::new(python())
        .args(["-c", script])
        .arg(&path)
        .output()
        .await
        .expect("python runs");
    assert!(
        output.status.success(),
        "prometheus_client cannot parse /metrics: {}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).unwrap();
            Sample {
                name: v[0].as_str().unwrap().into(),
                labels: v[1].clone(),
                value: v[2].as_f64().unwrap(),
                family_type: v[3].as_str().unwrap().into(),
            }
        })
        .collect()
}

/// The value of the sample `name` whose labels include `labels` (panics when there is none).
fn value(samples: &[Sample], name: &str, labels: Value) -> f64 {
    let wanted = labels.as_object().unwrap();
    samples
        .iter()
        .find(|s| s.name == name && wanted.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
        .unwrap_or_else(|| panic!("no sample {name} {labels}"))
        .value
}

fn family_type(samples: &[Sample], name: &str) -> String {
    samples.iter().find(|s| s.name == name).map(|s| s.family_type.clone()).unwrap_or_default()
}

/// Ingest, queries (one failing) and requests show in `/metrics`, which Prometheus' parser
/// reads: counters by table, route and outcome, latency histograms, gauges of the WAL and the
/// query slots. (The recorder is the process's, shared by the tests of this binary: the table
/// is this test's own, and route and query counts are at least this test's.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_prometheus_text_its_parser_reads() {
    let server = TestServer::start_with(Backend::Local, |config| {
        config.pg_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let (status, receipt) = server
        .ingest("ops_metrics_probe", "application/x-ndjson", "{\"n\": 1}\n{\"n\": 2}\n{\"n\": 3}\n")
        .await;
    assert_eq!(status, 200, "{receipt}");
    assert_eq!(server.sql("SELECT sum(n) FROM ops_metrics_probe").await.0, 200);
    assert_eq!(server.sql("SELECT nope FROM ops_metrics_probe").await.0, 400);
    let pg = server.pg_addr.unwrap();
    let psql = tokio::process::Command::new("psql")
        .args(["-X", "-w", "-h", &pg.ip().to_string(), "-p", &pg.port().to_string()])
        .args(["-U", "ops", "-d", "tarn", "-c", "SELECT count(*) FROM ops_metrics_probe"])
        .output()
        .await
        .expect("psql runs (Debian package postgresql-client)");
    assert!(psql.status.success(), "{}", String::from_utf8_lossy(&psql.stderr));
    let (status, _, text) = get_as(&server, None, "/metrics").await;
    assert_eq!(status, 200);
    let samples = parse_prometheus(&text).await;
    let table = json!({"table": "default.ops_metrics_probe"});
    assert_eq!(value(&samples, "tarn_ingest_records_total", table.clone()), 3.0);
    assert_eq!(value(&samples, "tarn_ingest_rejected_rows_total", table.clone()), 0.0);
    assert!(value(&samples, "tarn_ingest_bytes_total", table.clone()) >= 24.0);
    assert!(value(&samples, "tarn_commits_total", table.clone()) >= 1.0);
    assert!(value(&samples, "tarn_commit_duration_seconds_count", table.clone()) >= 1.0);
    assert_eq!(family_type(&samples, "tarn_commit_duration_seconds_bucket"), "histogram");
    let ingest = json!({"route": "/v1/ingest/{table}", "method": "POST", "status": "200"});
    assert!(value(&samples, "tarn_http_requests_total", ingest) >= 1.0);
    let latency = json!({"route": "/v1/sql", "method": "POST", "le": "+Inf"});
    assert!(value(&samples, "tarn_http_request_duration_seconds_bucket", latency) >= 2.0);
    let ok = json!({"interface": "sql", "outcome": "succeeded"});
    assert!(value(&samples, "tarn_queries_total", ok) >= 1.0);
    let failed = json!({"interface": "sql", "outcome": "failed"});
    assert!(value(&samples, "tarn_queries_total", failed) >= 1.0);
    let over_pg = json!({"interface": "pg", "outcome": "succeeded"});
    assert!(value(&samples, "tarn_queries_total", over_pg) >= 1.0);
    assert_eq!(family_type(&samples, "tarn_queries_total"), "counter");
    assert_eq!(family_type(&samples, "tarn_wal_bytes"), "gauge");
    assert!(value(&samples, "tarn_wal_segments", json!({})) >= 1.0);
    assert_eq!(value(&samples, "tarn_queries_running", json!({})), 0.0);
    assert_eq!(value(&samples, "tarn_ingest_buffered_rows", table), 0.0);
    println!("/metrics: {} samples parsed by prometheus_client", samples.len());
}

/// With keys, `/metrics` needs the `metrics` scope (or admin); `/v1/whoami` names the key a
/// request shows and its scopes, and asks for one without.
#[tokio::test]
async fn metrics_need_their_scope_and_whoami_names_the_key() {
    let server = TestServer::start_with(Backend::Local, |config| {
        config.keys = vec![
            key("prometheus", "tk_ops_prometheus", &["metrics"], false),
            key("analyst", "tk_ops_analyst", &["query"], false),
        ]
    })
    .await;
    assert_eq!(get_as(&server, None, "/metrics").await.0, 401);
    let (status, _, body) = get_as(&server, Some("tk_ops_analyst"), "/metrics").await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("key 'analyst' does not allow reading metrics"), "{body}");
    let (status, _, body) = get_as(&server, Some("tk_ops_prometheus"), "/metrics").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("# TYPE tarn_http_requests_total counter"), "{body}");
    assert_eq!(get_as(&server, Some("tk_ops_prometheus"), "/v1/tables").await.0, 403);

    let (status, _, body) = get_as(&server, Some("tk_ops_prometheus"), "/v1/whoami").await;
    assert_eq!(status, 200);
    let whoami: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(whoami, json!({"open": false, "key": "prometheus", "scopes": ["metrics"]}));
    assert_eq!(get_as(&server, None, "/v1/whoami").await.0, 401);
    assert_eq!(get_as(&server, Some("tk_wrong"), "/v1/whoami").await.0, 401);
}

/// A key over its rate limit gets 429 with `Retry-After` and a message naming the limit; other
/// keys are not slowed; after the wait, the key is served again. A key with an ingest byte
/// limit may overdraw it with one large body, and then waits. An open server's
/// `[rate_limit]` bounds everyone.
#[tokio::test]
async fn rate_limits_answer_429_with_retry_after() {
    let limited = |rps, burst, bytes| {
        Some(RateLimit { requests_per_second: rps, burst, ingest_bytes_per_second: bytes })
    };
    let server = TestServer::start_with(Backend::Local, |config| {
        let mut slow = key("slow", "tk_ops_slow", &["query"], false);
        slow.rate_limit = limited(1, Some(3), None);
        let mut loader = key("loader", "tk_ops_loader", &["ingest:*"], false);
        loader.rate_limit = limited(1000, None, Some(1000));
        config.keys = vec![slow, key("free", "tk_ops_free", &["query"], false), loader];
        config.ingest.auto_create = true;
        config.auto_create_set = true;
    })
    .await;
    for i in 0..3 {
        let (status, _, body) = get_as(&server, Some("tk_ops_slow"), "/v1/tables").await;
        assert_eq!(status, 200, "request {i} of the burst: {body}");
    }
    let (status, retry_after, body) = get_as(&server, Some("tk_ops_slow"), "/v1/tables").await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(retry_after.as_deref(), Some("1"));
    let error: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["error"]["code"], "too_many_requests");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("key 'slow' is over its rate limit of 1 requests per second (burst 3)"),
        "{message}"
    );
    for _ in 0..10 {
        assert_eq!(get_as(&server, Some("tk_ops_free"), "/v1/tables").await.0, 200);
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(get_as(&server, Some("tk_ops_slow"), "/v1/tables").await.0, 200);

    // 3000 bytes against 1000 a second: taken, then the budget is overdrawn for ~2 s.
    let post = |body: String| {
        server
            .client
            .post(server.url("/v1/ingest/ops_limited"))
            .bearer_auth("tk_ops_loader")
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let big = format!("{{\"pad\": \"{}\"}}", "x".repeat(3000));
    assert_eq!(post(big).await.unwrap().status(), 202);
    let refused = post("{\"pad\": \"\"}".into()).await.unwrap();
    assert_eq!(refused.status(), 429);
    let wait: u64 = refused.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((2..=3).contains(&wait), "Retry-After {wait}");
    let message = refused.text().await.unwrap();
    assert!(message.contains("over its ingest limit of 1000 bytes per second"), "{message}");
    tokio::time::sleep(Duration::from_secs(wait)).await;
    assert_eq!(post("{\"pad\": \"\"}".into()).await.unwrap().status(), 202);

    let open = TestServer::start_with(Backend::Local, |config| {
        config.rate_limit = limited(1, Some(2), None);
    })
    .await;
    let codes: Vec<u16> = futures::future::join_all(
        (0..3).map(|_| async { get_as(&open, None, "/v1/tables").await.0 }),
    )
    .await;
    let mut sorted = codes.clone();
    sorted.sort();
    assert_eq!(sorted, [200, 200, 429], "{codes:?}");
    // Health checks are never limited.
    assert_eq!(get_as(&open, None, "/healthz").await.0, 200);
}

/// `--log-format json`: every line is a JSON object; a request's lines carry its request id
/// and its key's name, never the key; the query it ran is logged with its outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_name_the_request_and_its_key() {
    let lake = TestLake::new(Backend::Local);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tarn.toml");
    std::fs::write(
        &config,
        format!(
            "[[keys]]\nname = \"ops\"\nhash = \"{}\"\nscopes = [\"admin\"]\n",
            tarn_catalog::auth::hash_secret("tk_ops_json_secret")
        ),
    )
    .unwrap();
    let wal = dir.path().join("wal");
    let server = ServeProcess::start(
        &lake,
        &[
            "--log-format",
            "json",
            "--config",
            config.to_str().unwrap(),
            "--wal-dir",
            wal.to_str().unwrap(),
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let response = client
        .post(format!("http://{}/v1/sql", server.addr))
        .bearer_auth("tk_ops_json_secret")
        .header("x-request-id", "req-ops-json-1")
        .body("SELECT 41 + 1 AS answer")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.text().await.unwrap().contains("42"));
    let log = server.terminate().await;
    assert!(!log.contains("tk_ops_json_secret"), "the key itself is never logged:\n{log}");
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let of_request: Vec<&Value> =
        lines.iter().filter(|l| l["span"]["id"] == "req-ops-json-1").collect();
    let answered = of_request
        .iter()
        .find(|l| l["fields"]["message"] == "finished processing request")
        .unwrap_or_else(|| panic!("no access line for the request:\n{log}"));
    assert_eq!(answered["span"]["key"], "ops", "{answered}");
    assert_eq!(answered["fields"]["status"], 200, "{answered}");
    assert!(answered["fields"]["latency"].is_string(), "{answered}");
    let query = of_request
        .iter()
        .find(|l| l["fields"]["message"] == "query ended")
        .unwrap_or_else(|| panic!("no query line for the request:\n{log}"));
    assert_eq!(query["fields"]["outcome"], "succeeded", "{query}");
    assert_eq!(query["fields"]["rows"], 1, "{query}");
    assert_eq!(query["span"]["key"], "ops", "{query}");
    println!("json log lines of the request: {}", of_request.len());
}

/// A key has one budget over both endpoints: over the Postgres protocol each query counts
/// against the key's rate limit and is refused with SQLSTATE 53400 when over, and the HTTP API
/// then refuses the same key too.
#[tokio::test]
async fn a_keys_rate_limit_holds_over_the_postgres_protocol_too() {
    let server = TestServer::start_with(Backend::Local, |config| {
        let mut analyst = key("analyst", "tk_ops_pg_limited", &["query"], false);
        analyst.rate_limit = Some(RateLimit {
            requests_per_second: 1,
            burst: Some(2),
            ingest_bytes_per_second: None,
        });
        config.keys = vec![analyst];
        config.pg_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let pg = server.pg_addr.unwrap();
    let output = tokio::process::Command::new("psql")
        .args(["-X", "-w", "-h", &pg.ip().to_string(), "-p", &pg.port().to_string()])
        .args(["-U", "analyst", "-d", "tarn", "-v", "ON_ERROR_STOP=1", "-At"])
        .args(["-c", "SELECT 1", "-c", "SELECT 2", "-c", "SELECT 3"])
        .env("PGPASSWORD", "tk_ops_pg_limited")
        .output()
        .await
        .expect("psql runs (Debian package postgresql-client)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "the third query is over the limit:\n{stdout}\n{stderr}");
    assert_eq!(stdout.lines().collect::<Vec<_>>(), ["1", "2"], "{stderr}");
    assert!(
        stderr.contains("key 'analyst' is over its rate limit of 1 requests per second (burst 2)"),
        "{stderr}"
    );
    let (status, retry_after, _) = get_as(&server, Some("tk_ops_pg_limited"), "/v1/tables").await;
    assert_eq!((status, retry_after.as_deref()), (429, Some("1")));
}

/// A landing page's script can read its refusals: the CORS headers of the page's origin are on
/// a 429 of its publishable key (and on a 401 of a wrong key) as on its answers.
#[tokio::test]
async fn a_page_can_read_the_refusals_of_its_publishable_key() {
    let server = TestServer::start_with(Backend::Local, |config| {
        let mut site = key("site", "pk_ops_site", &["ingest:ops_leads"], true);
        site.rate_limit = Some(RateLimit {
            requests_per_second: 1,
            burst: Some(1),
            ingest_bytes_per_second: None,
        });
        config.keys = vec![site];
        config.ingest.auto_create = true;
        config.auto_create_set = true;
    })
    .await;
    let origin = "https://www.example.com";
    let post = |key: &'static str| {
        server
            .client
            .post(server.url(&format!("/v1/ingest/ops_leads?key={key}")))
            .header("origin", origin)
            .header("content-type", "application/json")
            .body("{\"email\": \"ada@example.com\"}")
            .send()
    };
    let allowed = |response: &reqwest::Response| {
        response
            .headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap().to_string())
    };
    let first = post("pk_ops_site").await.unwrap();
    assert_eq!((first.status().as_u16(), allowed(&first).as_deref()), (202, Some(origin)));
    let refused = post("pk_ops_site").await.unwrap();
    assert_eq!((refused.status().as_u16(), allowed(&refused).as_deref()), (429, Some(origin)));
    assert_eq!(refused.headers()["retry-after"], "1");
    let wrong = post("pk_ops_wrong").await.unwrap();
    assert_eq!((wrong.status().as_u16(), allowed(&wrong).as_deref()), (401, Some(origin)));
}
