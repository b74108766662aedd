//! `tarn-bench s3-requests`: how many S3 requests a query costs before its scan.
//!
//! Starts moto's S3 server (the test virtualenv's `moto_server`: `$TARN_TEST_VENV`, default
//! `~/.cache/tarn/venv`, which `scripts/test` creates) on a free loopback port with its
//! request log in a file, and a release `tarn serve` on `s3://tarn-bench/lake` there; ingests
//! three tables, then runs each query twice through `POST /v1/sql`: *cold* (after the
//! catalog's and the tables' caches could have expired) and *warm* (right after the first).
//! For each run it counts the requests moto logged, by kind, and those before the first read
//! of a data file (the cost of planning: catalog, Delta log). Figures, not assertions: the
//! query-speed work's "O(1) requests before the scan" is measured here.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};

/// The bucket the lake is in.
const BUCKET: &str = "tarn-bench";

/// The queries measured: what they are, and their SQL.
const QUERIES: &[(&str, &str)] = &[
    ("no table", "SELECT 1"),
    ("count(*) of one table", "SELECT count(*) FROM events"),
    ("point lookup", "SELECT * FROM events WHERE id = 17"),
    ("join of three tables", "SELECT count(*) FROM events JOIN t2 ON true JOIN t3 ON true"),
];

/// How long the bench waits before a cold run (longer than the catalog's definition cache).
const COLD_AFTER: Duration = Duration::from_secs(6);

/// Requests moto logged during one query, by kind.
#[derive(Debug, Default)]
struct Counts {
    list: usize,
    get_data: usize,
    get_other: usize,
    head: usize,
    put: usize,
    other: usize,
    /// Requests before the first `GET` of a data file.
    before_scan: usize,
    /// Requests of the server's background work meanwhile (the readiness probe), not counted
    /// above.
    background: usize,
}

impl Counts {
    fn total(&self) -> usize {
        self.list + self.get_data + self.get_other + self.head + self.put + self.other
    }

    /// Counts moto's log lines (`... "GET /bucket/key HTTP/1.1" 200 -`).
    fn of(lines: &[String]) -> Self {
        let mut counts = Counts::default();
        let mut scanning = false;
        for line in lines {
            let Some(request) = line.split('"').nth(1) else { continue };
            let mut parts = request.split_whitespace();
            let (Some(method), Some(target)) = (parts.next(), parts.next()) else { continue };
            if target.contains("_tarn/readyz-probe") {
                counts.background += 1;
                continue;
            }
            let data = target.ends_with(".parquet");
            match method {
                "GET" if target.contains("list-type=2") => counts.list += 1,
                "GET" if data => counts.get_data += 1,
                "GET" => counts.get_other += 1,
                "HEAD" => counts.head += 1,
                "PUT" => counts.put += 1,
                _ => counts.other += 1,
            }
            scanning |= data;
            if !scanning {
                counts.before_scan += 1;
            }
        }
        counts
    }
}

/// The log file's request lines (ANSI colours removed).
fn requests(log: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(log)?;
    Ok(text
        .lines()
        .map(strip_ansi)
        .filter(|l| {
            l.contains("\"GET ")
                || l.contains("\"HEAD ")
                || l.contains("\"PUT ")
                || l.contains("\"POST ")
                || l.contains("\"DELETE ")
        })
        .collect())
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn moto_server() -> anyhow::Result<PathBuf> {
    let venv = match std::env::var_os("TARN_TEST_VENV") {
        Some(venv) => PathBuf::from(venv),
        None => PathBuf::from(std::env::var_os("HOME").context("HOME")?).join(".cache/tarn/venv"),
    };
    let moto = venv.join("bin/moto_server");
    if !moto.exists() {
        bail!("{} is missing: run scripts/test once (it creates the virtualenv)", moto.display());
    }
    Ok(moto)
}

pub async fn run() -> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let log = work.path().join("moto.log");
    let mut moto = tokio::process::Command::new(moto_server()?)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        // Its request log (werkzeug's) goes to stderr.
        .stdout(std::fs::File::create(work.path().join("moto.out"))?)
        .stderr(std::fs::File::create(&log)?)
        .kill_on_drop(true)
        .spawn()
        .context("cannot start moto_server")?;
    let endpoint = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let mut up = false;
    for _ in 0..150 {
        if client
            .put(format!("{endpoint}/{BUCKET}"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if !up {
        bail!("moto_server did not answer on {endpoint}");
    }
    let env = [
        ("AWS_ENDPOINT_URL", endpoint.clone()),
        ("AWS_ACCESS_KEY_ID", "bench".to_string()),
        ("AWS_SECRET_ACCESS_KEY", "bench".to_string()),
        ("AWS_REGION", "us-east-1".to_string()),
        ("AWS_ALLOW_HTTP", "true".to_string()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
    ];
    let lake = format!("s3://{BUCKET}/lake");
    let server = crate::Server::start_with(lake.as_ref(), &work.path().join("wal"), &env).await?;
    let events: String = (0..1000)
        .map(|i| format!("{{\"id\": {i}, \"kind\": \"{}\"}}\n", ["view", "click", "buy"][i % 3]))
        .collect();
    for (table, body) in [("events", events.as_str()), ("t2", "{\"x\": 1}"), ("t3", "{\"y\": 2}")] {
        let response = client
            .post(server.url(&format!("/v1/ingest/{table}?wait=commit")))
            .header("content-type", "application/x-ndjson")
            .body(body.to_string())
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("ingest into {table}: {} {}", response.status(), response.text().await?);
        }
    }

    println!("S3 requests per query (moto's request log), lake on {lake}\n");
    println!("| query | run | requests | before the scan | LIST | GET log/catalog | GET data | HEAD | PUT | background |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (name, sql) in QUERIES {
        for run in ["cold", "warm"] {
            if run == "cold" {
                tokio::time::sleep(COLD_AFTER).await;
            }
            let before = requests(&log)?.len();
            let response = client.post(server.url("/v1/sql")).body(sql.to_string()).send().await?;
            if !response.status().is_success() {
                bail!("{sql}: {} {}", response.status(), response.text().await?);
            }
            response.bytes().await?;
            // moto writes its log line after answering.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let lines = requests(&log)?;
            let c = Counts::of(&lines[before..]);
            println!(
                "| {name} | {run} | {} | {} | {} | {} | {} | {} | {} | {} |",
                c.total(),
                c.before_scan,
                c.list,
                c.get_other,
                c.get_data,
                c.head,
                c.put,
                c.background
            );
        }
    }
    server.stop().await?;
    moto.kill().await?;
    Ok(())
}
