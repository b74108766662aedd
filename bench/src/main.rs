//! `cargo run --release -p tarn-bench -- ingest`: the ingest benchmark.
//!
//! Starts a release `tarn serve` on loopback (a child process, on a fresh lake and WAL in a
//! temp dir) and measures, with the load generator in the same run:
//!
//! 1. NDJSON bodies of 1,000 e-commerce events (12 fields) from several connections: events/s
//!    acknowledged (durable in the WAL) and events/s committed to Delta;
//! 2. the physical limit without HTTP and WAL: the same bodies decoded in-process with
//!    arrow-json (in parallel) and written with the deltalake writer in commits of the size
//!    the server made;
//! 3. single-event JSON posts: requests/s and p50/p99 latency of the acknowledgement;
//! 4. freshness: time from the acknowledgement to the record being visible to `POST /v1/sql`;
//! 5. peak RSS of the server during (1).
//!
//! It prints a Markdown table (for BENCHMARKS.md). Figures, not assertions. With
//! `TARN_BENCH_PERF=<file>`, `perf record` profiles the server during (1).
//!
//! `cargo run --release -p tarn-bench -- load` writes a CSV file of at least 1 GB and times
//! `tarn load` of it into a declared table (see [`load`]).
//!
//! `cargo run --release -p tarn-bench -- tpch` loads TPC-H into Delta tables through the
//! catalog and runs its 22 queries through `POST /v1/sql` and with DuckDB over the same
//! Parquet files (see [`tpch`]).
//!
//! `cargo run --release -p tarn-bench -- s3-requests` counts the S3 requests each query makes
//! before its scan, on moto's S3 server (see [`s3_requests`]).
//!
//! `cargo run --release -p tarn-bench -- layout` times a date-filtered query over ingested
//! events with and without `cluster_by` (see [`layout`]).

mod layout;
mod load;
mod s3_requests;
mod tpch;
mod tpch_data;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

/// The same allocator as the server, so that the in-process limit is measured alike.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const EVENTS_PER_BODY: usize = 1000;

struct Options {
    seconds: u64,
    connections: usize,
    single_connections: usize,
    freshness_samples: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return Ok(());
    }
    match args.first().map(String::as_str) {
        Some("ingest") => ingest(&args).await,
        Some("load") => load::run(&args[1..]).await,
        Some("tpch") => tpch::run(&args[1..]).await,
        Some("s3-requests") => s3_requests::run().await,
        Some("layout") => layout::run(&args[1..]).await,
        _ => bail!("{USAGE}"),
    }
}

/// What `tarn-bench --help` prints (and any unknown subcommand).
const USAGE: &str = "usage: tarn-bench ingest [--seconds N] [--connections N]
       tarn-bench load [--rows N]
       tarn-bench tpch [--scale F] [--runs N] [--lake DIR] [--queries q1,q2,...] [--compare-deltalake | --compare-binary PATH]
       tarn-bench s3-requests
       tarn-bench layout [--events N]";

async fn ingest(args: &[String]) -> anyhow::Result<()> {
    let mut options =
        Options { seconds: 15, connections: 4, single_connections: 32, freshness_samples: 40 };
    let mut i = 1;
    while i < args.len() {
        let value = args.get(i + 1).context("missing value")?.parse::<u64>()?;
        match args[i].as_str() {
            "--seconds" => options.seconds = value,
            "--connections" => options.connections = value as usize,
            other => bail!("unknown option {other}"),
        }
        i += 2;
    }
    let work = tempfile::tempdir()?;
    let bodies: Arc<Vec<Bytes>> = Arc::new((0..64).map(|b| body(b * EVENTS_PER_BODY)).collect());
    let body_bytes = bodies[0].len();
    println!(
        "bodies: {EVENTS_PER_BODY} events, {} KiB each ({} bytes/event)",
        body_bytes / 1024,
        body_bytes / EVENTS_PER_BODY
    );

    let server = Server::start(work.path()).await?;
    let client = reqwest::Client::builder().pool_max_idle_per_host(256).build()?;

    // 1. Bulk NDJSON; with TARN_BENCH_PERF=<file>, the server is profiled meanwhile.
    let profiler = match std::env::var("TARN_BENCH_PERF") {
        Ok(path) => Some(
            tokio::process::Command::new("perf")
                .args(["record", "-e", "cpu-clock", "-F", "499", "-g", "-o", &path, "-p"])
                .arg(server.pid.to_string())
                .arg("--")
                .arg("sleep")
                .arg(options.seconds.to_string())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .context("TARN_BENCH_PERF needs perf")?,
        ),
        Err(_) => None,
    };
    // Peak RSS is the kernel's high-water mark; the anonymous part (heap, stacks) is sampled,
    // because RSS also counts the pages of the binary's code that the server has touched.
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (sampling, pid) = (sampling.clone(), server.pid);
        tokio::spawn(async move {
            let mut peak_anon = 0f64;
            while sampling.load(Ordering::Relaxed) {
                peak_anon = peak_anon.max(status_mib(pid, "RssAnon"));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            peak_anon
        })
    };
    let bulk = bulk(&client, &server, &bodies, &options).await?;
    sampling.store(false, Ordering::Relaxed);
    if let Some(mut profiler) = profiler {
        profiler.wait().await?;
    }
    let rss_mib = status_mib(server.pid, "VmHWM");
    let anon_mib = sampler.await?;
    let file_mib = status_mib(server.pid, "RssFile");
    // 3. Single-event posts.
    let single = single(&client, &server, &options).await?;
    // 4. Freshness.
    let fresh = freshness(&client, &server, options.freshness_samples).await?;
    server.stop().await?;

    // 2. The physical limit, in this process, in commits of the size the server made.
    let limit = physical_limit(work.path(), &bodies, bulk.acked, bulk.rows_per_commit).await?;

    let ratio = bulk.acked_per_sec / limit;
    println!();
    println!("| measure | result | target |");
    println!("|---|---|---|");
    println!(
        "| (1) bulk NDJSON, {} connections: acknowledged | {:.0} events/s | ≥ 300,000 |",
        options.connections, bulk.acked_per_sec
    );
    println!(
        "| (1) bulk NDJSON: committed | {:.0} events/s ({} commits, {:.0} rows each) | |",
        bulk.committed_per_sec, bulk.commits, bulk.rows_per_commit
    );
    println!("| (2) decode + Delta write in-process | {limit:.0} events/s | |");
    println!("| (1)/(2) | {ratio:.2} | ≥ 0.7 |");
    println!(
        "| (3) single-event posts, {} connections | {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms | ≥ 20,000 req/s, p99 ≤ 5 ms |",
        options.single_connections, single.per_sec, single.p50_ms, single.p99_ms
    );
    println!(
        "| (4) freshness, ack → visible in SQL ({} samples) | p50 {:.0} ms, p99 {:.0} ms | p99 ≤ 1,500 ms |",
        options.freshness_samples, fresh.0, fresh.1
    );
    println!(
        "| (5) server peak RSS during (1) | {rss_mib:.0} MiB (heap and stacks {anon_mib:.0} MiB, mapped binary {file_mib:.0} MiB) | ≤ 256 MiB |"
    );
    Ok(())
}

/// NDJSON body of `EVENTS_PER_BODY` click-stream events starting at id `first`.
fn body(first: usize) -> Bytes {
    const TYPES: [&str; 3] = ["product_view", "add_to_cart", "purchase"];
    const CATEGORIES: [&str; 5] = ["shoes", "jackets", "bags", "hats", "socks"];
    let mut out = String::with_capacity(EVENTS_PER_BODY * 360);
    for i in first..first + EVENTS_PER_BODY {
        let sku = (i * 7919) % 20_000;
        out.push_str(&format!(
            concat!(
                "{{\"event_id\":\"evt-{:010}\",\"event_type\":\"{}\",\"user_id\":\"u-{:06}\",",
                "\"session_id\":\"s-{:08x}\",\"sku\":\"SKU-{:05}\",\"category\":\"{}\",",
                "\"price\":{}.{:02},\"quantity\":{},\"currency\":\"EUR\",",
                "\"page_url\":\"https://shop.example.com/p/sku-{:05}?ref=campaign-{}\",",
                "\"user_agent\":\"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/131.0\",",
                "\"ts\":\"2026-11-23T{:02}:{:02}:{:02}.{:03}Z\"}}\n"
            ),
            i,
            TYPES[i % 3],
            (i * 31) % 1_000_000,
            (i / 20) as u32,
            sku,
            CATEGORIES[sku % 5],
            5 + sku % 300,
            i % 100,
            1 + i % 3,
            sku,
            i % 17,
            (i / 3_600_000) % 24,
            (i / 60_000) % 60,
            (i / 1000) % 60,
            i % 1000
        ));
    }
    Bytes::from(out)
}

/// The JSON body of a response.
async fn json(response: reqwest::Response) -> anyhow::Result<Value> {
    Ok(serde_json::from_slice(&response.bytes().await?)?)
}

/// A field of `/proc/<pid>/status` in MiB (`VmHWM`, `RssAnon`, `RssFile`, ...).
pub(crate) fn status_mib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

struct Server {
    child: tokio::process::Child,
    addr: String,
    pid: u32,
}

impl Server {
    /// A server on a fresh lake and WAL in `work`.
    async fn start(work: &Path) -> anyhow::Result<Self> {
        Self::start_on(&work.join("lake"), &work.join("wal")).await
    }

    /// A server on the lake at `lake`, with its write-ahead log in `wal`.
    async fn start_on(lake: &Path, wal: &Path) -> anyhow::Result<Self> {
        Self::start_with(lake.as_os_str(), wal, &[]).await
    }

    /// A server on the lake at `lake` (a directory or an `s3://` URL), with its write-ahead log
    /// in `wal` and `env` added to its environment.
    async fn start_with(
        lake: &std::ffi::OsStr,
        wal: &Path,
        env: &[(&str, String)],
    ) -> anyhow::Result<Self> {
        Self::start_binary(None, lake, wal, env).await
    }

    /// [`Server::start_with`], running `binary` (by default the release `tarn` beside this
    /// benchmark).
    async fn start_binary(
        binary: Option<PathBuf>,
        lake: &std::ffi::OsStr,
        wal: &Path,
        env: &[(&str, String)],
    ) -> anyhow::Result<Self> {
        let binary = match binary {
            Some(binary) => binary,
            None => tarn_binary()?,
        };
        let mut child = tokio::process::Command::new(&binary)
            .args(["serve", "--listen", "127.0.0.1:0", "--pg-listen", "off", "--lake"])
            .arg(lake)
            .arg("--wal-dir")
            .arg(wal)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("RUST_LOG", "warn,tarn=info")
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let mut lines = BufReader::new(child.stderr.take().context("stderr")?).lines();
        let addr = loop {
            let line = lines.next_line().await?.context("tarn serve exited before listening")?;
            if let Some(rest) = line.split("on http://").nth(1) {
                break rest.split_whitespace().next().context("address")?.to_string();
            }
        };
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let pid = child.id().context("pid")?;
        Ok(Server { child, addr, pid })
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn rows(&self, client: &reqwest::Client, table: &str) -> anyhow::Result<u64> {
        let v: Value =
            json(client.get(self.url(&format!("/v1/tables/{table}"))).send().await?).await?;
        Ok(v["stats"]["rows"].as_u64().unwrap_or(0))
    }

    async fn stop(mut self) -> anyhow::Result<()> {
        std::process::Command::new("kill").args(["-TERM", &self.pid.to_string()]).status()?;
        self.child.wait().await?;
        Ok(())
    }
}

/// The release `tarn` binary beside this one; built first when missing.
pub(crate) fn tarn_binary() -> anyhow::Result<PathBuf> {
    let dir = std::env::current_exe()?.parent().context("exe dir")?.to_path_buf();
    let binary = dir.join("tarn");
    if !binary.exists() {
        println!("building the release tarn binary first");
        let status = std::process::Command::new("cargo")
            .args(["build", "--release", "--bin", "tarn"])
            .status()?;
        if !status.success() {
            bail!("cargo build --release --bin tarn failed");
        }
    }
    Ok(binary)
}

struct Bulk {
    acked: u64,
    acked_per_sec: f64,
    committed_per_sec: f64,
    commits: u64,
    rows_per_commit: f64,
}

async fn bulk(
    client: &reqwest::Client,
    server: &Server,
    bodies: &Arc<Vec<Bytes>>,
    options: &Options,
) -> anyhow::Result<Bulk> {
    // Create the table first, so the measured run is steady state.
    let warmup = client
        .post(server.url("/v1/ingest/events?wait=commit"))
        .header("content-type", "application/x-ndjson")
        .body(bodies[0].clone())
        .send()
        .await?;
    if !warmup.status().is_success() {
        bail!("warm-up failed: {}", warmup.text().await?);
    }
    let base_rows = server.rows(client, "events").await?;
    let base_version = version(client, server).await?;
    let acked = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(options.seconds);
    let tasks: Vec<_> = (0..options.connections)
        .map(|c| {
            let (client, bodies, acked) = (client.clone(), bodies.clone(), acked.clone());
            let url = server.url("/v1/ingest/events");
            tokio::spawn(async move {
                let mut n = c;
                while Instant::now() < deadline {
                    let body = bodies[n % bodies.len()].clone();
                    n += 7; // connections walk the bodies in different orders
                    let response = client
                        .post(&url)
                        .header("content-type", "application/x-ndjson")
                        .body(body)
                        .send()
                        .await;
                    match response {
                        Ok(r) if r.status().as_u16() == 202 => {
                            acked.fetch_add(EVENTS_PER_BODY as u64, Ordering::Relaxed);
                        }
                        Ok(r) if r.status().as_u16() == 503 => {
                            tokio::time::sleep(Duration::from_millis(20)).await
                        }
                        Ok(r) => panic!("unexpected {}", r.status()),
                        Err(e) => panic!("{e}"),
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await?;
    }
    let ack_elapsed = started.elapsed().as_secs_f64();
    let acked = acked.load(Ordering::Relaxed);
    loop {
        if server.rows(client, "events").await? >= base_rows + acked {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let commit_elapsed = started.elapsed().as_secs_f64();
    let commits = version(client, server).await?.saturating_sub(base_version).max(1);
    Ok(Bulk {
        acked,
        acked_per_sec: acked as f64 / ack_elapsed,
        committed_per_sec: acked as f64 / commit_elapsed,
        commits,
        rows_per_commit: acked as f64 / commits as f64,
    })
}

async fn version(client: &reqwest::Client, server: &Server) -> anyhow::Result<u64> {
    let v: Value = json(client.get(server.url("/v1/tables/events")).send().await?).await?;
    Ok(v["stats"]["version"].as_u64().unwrap_or(0))
}

struct Single {
    per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
}

async fn single(
    client: &reqwest::Client,
    server: &Server,
    options: &Options,
) -> anyhow::Result<Single> {
    let deadline = Instant::now() + Duration::from_secs(options.seconds.min(10));
    let started = Instant::now();
    let tasks: Vec<_> = (0..options.single_connections)
        .map(|c| {
            let client = client.clone();
            let url = server.url("/v1/ingest/clicks");
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let body = format!(
                        "{{\"event_id\":\"c{c}-{n}\",\"event_type\":\"product_view\",\"sku\":\"SKU-{}\",\"price\":19.99}}",
                        n % 20_000
                    );
                    n += 1;
                    let sent = Instant::now();
                    let r = client.post(&url).header("content-type", "application/json").body(body).send().await;
                    match r {
                        Ok(r) if r.status().is_success() => latencies.push(sent.elapsed().as_micros() as u32),
                        Ok(r) if r.status().as_u16() == 503 => {}
                        Ok(r) => panic!("unexpected {}", r.status()),
                        Err(e) => panic!("{e}"),
                    }
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await?);
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)] as f64 / 1000.0
    };
    Ok(Single { per_sec: latencies.len() as f64 / elapsed, p50_ms: pct(0.50), p99_ms: pct(0.99) })
}

/// (p50, p99) in ms from the 202 to the record answering a SQL lookup.
async fn freshness(
    client: &reqwest::Client,
    server: &Server,
    samples: usize,
) -> anyhow::Result<(f64, f64)> {
    let mut times = Vec::with_capacity(samples);
    for i in 0..samples {
        let r = client
            .post(server.url("/v1/ingest/fresh"))
            .header("content-type", "application/json")
            .body(format!("{{\"probe\": {i}}}"))
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("freshness probe failed: {}", r.text().await?);
        }
        let acked = Instant::now();
        let sql = format!("{{\"sql\": \"SELECT count(*) FROM fresh WHERE probe = {i}\"}}");
        loop {
            let v: Value =
                json(client.post(server.url("/v1/sql")).body(sql.clone()).send().await?).await?;
            if v["rows"][0][0].as_u64() == Some(1) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        times.push(acked.elapsed().as_secs_f64() * 1000.0);
        // Spread the probes over the flush cycle.
        tokio::time::sleep(Duration::from_millis(37 * (i as u64 % 7))).await;
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| times[((times.len() as f64 * p) as usize).min(times.len() - 1)];
    Ok((pct(0.5), pct(0.99)))
}

/// Decode the same bodies in-process (in parallel on every core) and write them with the
/// deltalake writer in commits of `rows_per_commit`, decoding the next commit while the
/// current one is written: events/s.
async fn physical_limit(
    work: &Path,
    bodies: &Arc<Vec<Bytes>>,
    events: u64,
    rows_per_commit: f64,
) -> anyhow::Result<f64> {
    use tarn_ingest::{decode, infer_schema, Format};
    let lake = tarn_lake::Lake::open(&work.join("limit").display().to_string(), Default::default())
        .await?;
    let schema = Arc::new(infer_schema(&bodies[0], Format::Ndjson)?);
    let mut table = lake.create_table("default/events", &schema, &[]).await?;
    let bodies_per_commit = ((rows_per_commit / EVENTS_PER_BODY as f64).round() as usize).max(1);
    let total_bodies = (events as usize / EVENTS_PER_BODY).max(bodies_per_commit);
    let started = Instant::now();
    let (sender, mut receiver) = tokio::sync::mpsc::channel(1);
    let decoder = {
        let (bodies, schema) = (bodies.clone(), schema.clone());
        tokio::spawn(async move {
            let mut done = 0;
            while done < total_bodies {
                let n = bodies_per_commit.min(total_bodies - done);
                let decoded = futures::future::join_all((done..done + n).map(|i| {
                    let body = bodies[i % bodies.len()].clone();
                    let schema = schema.clone();
                    tokio::task::spawn_blocking(move || decode(&body, Format::Ndjson, schema))
                }))
                .await;
                let mut batches = Vec::new();
                for d in decoded {
                    batches.extend(d.expect("decode task").expect("decode"));
                }
                if sender.send(batches).await.is_err() {
                    return;
                }
                done += n;
            }
        })
    };
    while let Some(batches) = receiver.recv().await {
        table = table.append(batches).await?;
    }
    decoder.await?;
    Ok((total_bodies * EVENTS_PER_BODY) as f64 / started.elapsed().as_secs_f64())
}
