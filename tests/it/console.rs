//! The web console (`GET /`) in headless Chromium: `tests/browser/console.py` drives it as a
//! person would (Playwright on Debian's Chromium) and screenshots each view into
//! `$CARGO_TARGET_TMPDIR/console-screenshots`; these tests put the data in and check what the
//! script saw, one `ok: ...` line per step.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use tarn::config::FileConfig;
use tarn_lake::test_util::{python, Backend};

use crate::support::{key, TestServer};

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(name)
}

/// Where the script puts its screenshots (printed, to look at them after a run).
fn screenshots() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    println!("console screenshots: {}", dir.display());
    dir
}

/// Runs `tests/browser/console.py` with `args`; answers its lines once it succeeded.
async fn drive(args: &[&str]) -> Vec<String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/console.py");
    let output = tokio::process::Command::new(python())
        .arg(&script)
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "console.py failed:\n{stdout}\n--- stderr ---\n{stderr}");
    println!("{stdout}");
    stdout.lines().map(str::to_string).collect()
}

/// The line that starts with `prefix` (panics with every line when there is none).
fn line<'a>(lines: &'a [String], prefix: &str) -> &'a str {
    lines
        .iter()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starts with {prefix:?}:\n{}", lines.join("\n")))
}

/// A request with `key` as `Authorization: Bearer` (none: no header).
async fn send(
    server: &TestServer,
    key: Option<&str>,
    method: reqwest::Method,
    path: &str,
    content_type: &str,
    body: String,
) -> (u16, Value) {
    let mut request = server
        .client
        .request(method, server.url(path))
        .header("content-type", content_type)
        .body(body);
    if let Some(key) = key {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// 250 readings of three sensors, ten minutes apart from 2026-11-23T00:00:00Z: more than two
/// pages of the console's grid, and a curve to chart.
fn readings() -> String {
    (0..250i32)
        .map(|i| {
            let t = f64::from(i);
            json!({
                "ts": 1_795_392_000 + i * 600,
                "sensor": format!("s-{}", i % 3 + 1),
                "temperature": ((18.0 + 4.0 * (t / 12.0).sin() + f64::from(i % 7) * 0.1) * 100.0).round() / 100.0,
                "humidity": ((55.0 + 10.0 * (t / 20.0).cos()) * 100.0).round() / 100.0,
            })
            .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn readings_definition() -> Value {
    json!({
        "comment": "Temperature and humidity from the greenhouse sensors",
        "columns": [
            {"name": "ts", "type": "timestamp", "nullable": false},
            {"name": "sensor", "type": "string", "nullable": false},
            {"name": "temperature", "type": "float64", "comment": "°C"},
            {"name": "humidity", "type": "float64", "comment": "% relative"}
        ]
    })
}

fn sensor_job() -> Value {
    json!({
        "schedule": "0 7 * * *",
        "timezone": "Europe/Oslo",
        "sql": "SELECT sensor, avg(temperature) AS temperature, avg(humidity) AS humidity FROM readings GROUP BY sensor ORDER BY sensor",
        "into": {"table": "reports.sensor_means", "mode": "replace"}
    })
}

/// An open server with the click-stream example, sensor readings and a job that ran: the
/// catalog shows a table's columns, contract, partitions, history and rejected rows; a query
/// typed in the editor runs with Ctrl+Enter, is paged, downloaded as CSV and charted (again
/// after it ran again); Ingest & jobs shows rates, commits and the job's run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_in_a_browser() {
    let declared = FileConfig::read(&example("clickstream").join("tarn.toml"), true)
        .expect("the example's tarn.toml")
        .tables;
    let server = TestServer::start_with(Backend::Local, |c| c.tables = declared).await;
    let events = std::fs::read_to_string(example("clickstream").join("events.ndjson")).unwrap();
    let (status, receipt) = server.ingest("events", "application/x-ndjson", &events).await;
    assert_eq!((status, &receipt["accepted"], &receipt["rejected"]), (200, &json!(10), &json!(2)));
    let (status, defined) = server.define("readings", readings_definition()).await;
    assert_eq!(status, 201, "{defined}");
    let (status, receipt) = server.ingest("readings", "application/x-ndjson", &readings()).await;
    assert_eq!((status, &receipt["accepted"]), (200, &json!(250)), "{receipt}");
    let (status, job) = server.put_job("sensor_means", sensor_job()).await;
    assert_eq!(status, 201, "{job}");
    let run = server.run_job("sensor_means").await;
    assert_eq!(run["state"], "succeeded", "{run}");

    let shots = screenshots();
    let url = format!("http://{}", server.addr);
    let lines = drive(&[&url, shots.to_str().unwrap()]).await;

    let listed = line(&lines, "ok: tables listed: ");
    for table in
        ["default.events", "default.events_rejected", "default.readings", "reports.sensor_means"]
    {
        assert!(listed.split([' ', ',']).any(|t| t == table), "{table} not in {listed}");
    }
    let columns = line(&lines, "ok: table columns shown: ");
    assert!(
        columns.starts_with("ok: table columns shown: event_id,event_type,session_id,user_id,sku,price,quantity,ts,context"),
        "{columns}"
    );
    assert!(columns.contains("event_date"), "{columns}");
    line(&lines, "ok: contract shown: ");
    line(&lines, "ok: partitions shown: 2");
    line(&lines, "ok: history shown: ");
    assert_eq!(line(&lines, "ok: rejected rows shown: "), "ok: rejected rows shown: 2 rows");
    assert!(line(&lines, "ok: completion offers: ").contains("humidity"));
    assert_eq!(
        line(&lines, "ok: query ran with Ctrl+Enter: "),
        "ok: query ran with Ctrl+Enter: 250 rows; rows 1–100 of 250 · page 1 of 3"
    );
    assert_eq!(line(&lines, "ok: next page: "), "ok: next page: rows 101–200 of 250 · page 2 of 3");
    assert_eq!(
        line(&lines, "ok: previous page: "),
        "ok: previous page: rows 1–100 of 250 · page 1 of 3"
    );
    assert!(
        line(&lines, "ok: CSV downloaded: ")
            .ends_with(": ts,sensor,temperature,humidity and 250 rows"),
        "{lines:?}"
    );
    assert_eq!(
        line(&lines, "ok: line chart drawn: "),
        "ok: line chart drawn: temperature,humidity over ts (250 rows.)"
    );
    line(&lines, "ok: chart redrawn after the query ran again: 40 rows");
    line(&lines, "ok: recent queries kept: ");
    assert!(line(&lines, "ok: Parquet downloaded: ").ends_with(" bytes"));
    line(&lines, "ok: long query cancelled: cancelled");
    // The server stopped it too: an async query counted as cancelled.
    let metrics = server.client.get(server.url("/metrics")).send().await.unwrap();
    let metrics = metrics.text().await.unwrap();
    assert!(
        metrics.contains("tarn_queries_total{interface=\"async\",outcome=\"cancelled\"}"),
        "{metrics}"
    );
    let ingest = line(&lines, "ok: ingest shown: ");
    assert!(
        ingest.contains("default.events records=")
            && ingest.contains("default.readings records=250 rejected=0"),
        "{ingest}"
    );
    let jobs = line(&lines, "ok: jobs shown: ");
    assert!(jobs.contains("sensor_means") && jobs.contains("succeeded"), "{jobs}");
    line(&lines, "ok: job runs shown");
    assert_eq!(lines.last().map(String::as_str), Some("done"));
    for shot in ["catalog.png", "editor.png", "chart.png", "ingest.png"] {
        assert!(shots.join(shot).is_file(), "{shot} was not written");
    }
}

/// A server with keys: the console asks for one, refuses a wrong one with the server's
/// message, offers an ingest-only key neither the catalog nor SQL and shows the 403 of a table
/// outside its scope, and offers a query key no ingest form and no "Run now".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_with_keys_in_a_browser() {
    let declared = FileConfig::read(&example("clickstream").join("tarn.toml"), true)
        .expect("the example's tarn.toml")
        .tables;
    let keys = vec![
        key("admin", "tk_console_admin", &["admin"], false),
        key("analyst", "tk_console_analyst", &["query"], false),
        key("loader", "tk_console_loader", &["ingest:events"], false),
    ];
    let server = TestServer::start_with(Backend::Local, |c| {
        c.tables = declared;
        c.keys = keys;
    })
    .await;
    let events = std::fs::read_to_string(example("clickstream").join("events.ndjson")).unwrap();
    let (status, receipt) = send(
        &server,
        Some("tk_console_loader"),
        reqwest::Method::POST,
        "/v1/ingest/events?wait=commit",
        "application/x-ndjson",
        events,
    )
    .await;
    assert_eq!((status, &receipt["accepted"]), (200, &json!(10)), "{receipt}");
    let (status, job) = send(
        &server,
        Some("tk_console_admin"),
        reqwest::Method::PUT,
        "/v1/jobs/event_counts",
        "application/json",
        json!({
            "schedule": "@daily",
            "sql": "SELECT event_type, count(*) AS n FROM events GROUP BY event_type",
            "into": {"table": "reports.event_counts", "mode": "replace"}
        })
        .to_string(),
    )
    .await;
    assert_eq!(status, 201, "{job}");

    let shots = screenshots();
    let url = format!("http://{}", server.addr);
    let lines =
        drive(&[&url, shots.to_str().unwrap(), "keys", "tk_console_analyst", "tk_console_loader"])
            .await;

    line(&lines, "ok: login form shown");
    let refused = line(&lines, "ok: wrong key refused: ");
    assert!(refused.contains("not valid"), "{refused}");
    let signed_in = line(&lines, "ok: ingest key signed in (");
    assert!(
        signed_in.contains("ingest:") && signed_in.ends_with("catalog, SQL and jobs not offered"),
        "{signed_in}"
    );
    line(&lines, "ok: key kept in sessionStorage only");
    line(&lines, "ok: record sent to events: accepted 1");
    let forbidden = line(&lines, "ok: 403 shown: ");
    assert!(forbidden.contains("orders"), "{forbidden}");
    line(&lines, "ok: query key signed in: catalog shown, no ingest form");
    line(&lines, "ok: jobs shown to the query key without Run now");
    let write = line(&lines, "ok: a statement that writes is refused: ");
    assert!(write.contains("read-only"), "{write}");
    assert_eq!(lines.last().map(String::as_str), Some("done"));
    assert!(shots.join("login.png").is_file(), "login.png was not written");
}
