//! `tarn-bench tpch`: the 22 TPC-H queries through `POST /v1/sql`, against DuckDB reading the
//! very same Parquet files.
//!
//! 1. Generates the 8 TPC-H tables at the scale factor asked (`--scale`, default 1) with
//!    `tpchgen-arrow`, and loads them as Delta tables through Tarn's lake and catalog, in a
//!    temp dir: each table is created in the catalog, then appended in commits of up to
//!    [`ROWS_PER_COMMIT`] rows, the next chunk being generated (on a thread of its own) while
//!    the current one is written. Memory stays bounded by a few chunks whatever the scale.
//! 2. Starts a release `tarn serve` on that lake, and DuckDB (`bench/tpch_duckdb.py`, with
//!    the Python of `TARN_BENCH_PYTHON`, by default the test virtualenv's, which has `duckdb`)
//!    with one view per table over exactly the live files its Delta log lists.
//! 3. Runs each query of `bench/queries/tpch` (the same text for both engines) once on each
//!    engine to warm up, then `--runs` (default 3) timed runs, alternating the engines run by
//!    run so that both see the same background load. Tarn gets `POST /v1/sql` asking for an
//!    Arrow IPC stream, timed from the request to having read the whole body; DuckDB is timed
//!    in Python around executing the query and fetching its whole result as an Arrow table.
//! 4. Prints a Markdown table: per query the medians of both engines, their ratio and the
//!    rows each returned (flagged when they differ), with totals, the load time, the data size
//!    and each process's peak RSS. Figures, not assertions.
//!
//! With `--compare-deltalake`, a second server reads the same tables with deltalake's table
//! provider (`--delta-reader deltalake`, the reader before Tarn's own scan), timed in the same
//! alternation, and the report gets its column.
//!
//! With `--workers N`, the second server plans on `N` release `tarn worker`s instead (each
//! pinned to a core where `taskset` exists), to compare a cluster with one node.
//!
//! With `--compare-binary PATH`, the second server is another build of `tarn` (another
//! profile, another commit), to compare builds in the same alternation.
//!
//! With `--lake DIR`, the generated lake is kept in `DIR` and reused by later runs at the
//! same scale (generation is skipped), which is handy when looking into single queries.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use arrow::array::RecordBatch;
use serde_json::{json, Value};
use tarn_catalog::{Catalog, TableName};

use crate::tpch_data::{self, TABLES};

/// Rows per Delta commit (and so per Parquet file) when loading: large enough for files of
/// tens of MB (lineitem: ~45 MB), small enough that a chunk of lineitem in Arrow stays a few
/// hundred MB.
const ROWS_PER_COMMIT: usize = 1_000_000;

/// Rows per batch the generator produces.
const GENERATOR_BATCH_ROWS: usize = 65_536;

/// The query texts, the same for both engines.
const QUERIES: [(&str, &str); 22] = [
    ("q1", include_str!("../queries/tpch/q1.sql")),
    ("q2", include_str!("../queries/tpch/q2.sql")),
    ("q3", include_str!("../queries/tpch/q3.sql")),
    ("q4", include_str!("../queries/tpch/q4.sql")),
    ("q5", include_str!("../queries/tpch/q5.sql")),
    ("q6", include_str!("../queries/tpch/q6.sql")),
    ("q7", include_str!("../queries/tpch/q7.sql")),
    ("q8", include_str!("../queries/tpch/q8.sql")),
    ("q9", include_str!("../queries/tpch/q9.sql")),
    ("q10", include_str!("../queries/tpch/q10.sql")),
    ("q11", include_str!("../queries/tpch/q11.sql")),
    ("q12", include_str!("../queries/tpch/q12.sql")),
    ("q13", include_str!("../queries/tpch/q13.sql")),
    ("q14", include_str!("../queries/tpch/q14.sql")),
    ("q15", include_str!("../queries/tpch/q15.sql")),
    ("q16", include_str!("../queries/tpch/q16.sql")),
    ("q17", include_str!("../queries/tpch/q17.sql")),
    ("q18", include_str!("../queries/tpch/q18.sql")),
    ("q19", include_str!("../queries/tpch/q19.sql")),
    ("q20", include_str!("../queries/tpch/q20.sql")),
    ("q21", include_str!("../queries/tpch/q21.sql")),
    ("q22", include_str!("../queries/tpch/q22.sql")),
];

/// DuckDB's side of the benchmark.
const DUCKDB_SCRIPT: &str = include_str!("../tpch_duckdb.py");

/// Written into a kept lake (`--lake`) once every table is loaded, with the scale factor.
const COMPLETE_MARKER: &str = "tpch-complete";

struct Options {
    scale: f64,
    runs: usize,
    lake: Option<PathBuf>,
    queries: Vec<String>,
    /// Also run a second server reading the tables with deltalake's provider
    /// (`--delta-reader deltalake`), the reader before Tarn's own scan.
    compare_deltalake: bool,
    /// Also run a second server whose queries run on this many `tarn worker`s (`--workers N`).
    workers: usize,
    /// Also run a second server from this `tarn` binary (`--compare-binary PATH`).
    binary: Option<PathBuf>,
}

impl Options {
    /// What the second server's column is called, if there is one.
    fn second(&self) -> Option<String> {
        if self.workers > 0 {
            Some(format!("{} workers", self.workers))
        } else if let Some(binary) = &self.binary {
            Some(binary.display().to_string())
        } else if self.compare_deltalake {
            Some("deltalake provider".into())
        } else {
            None
        }
    }
}

/// The cluster secret of the benchmark's workers.
const BENCH_SECRET: &str = "tarn-bench-cluster-secret";

/// `n` release `tarn worker`s on the lake at `lake`, each pinned to a core of its own where
/// `taskset` exists (round robin over the cores); their URLs.
async fn start_workers(
    lake: &Path,
    n: usize,
) -> anyhow::Result<(Vec<tokio::process::Child>, Vec<String>)> {
    let cores = std::thread::available_parallelism().map(|c| c.get()).unwrap_or(1);
    let pin = std::process::Command::new("taskset").arg("-V").output().is_ok();
    let (mut children, mut urls) = (Vec::new(), Vec::new());
    for i in 0..n {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut command = if pin {
            let mut c = tokio::process::Command::new("taskset");
            c.args(["-c", &(i % cores).to_string()]).arg(crate::tarn_binary()?);
            c
        } else {
            tokio::process::Command::new(crate::tarn_binary()?)
        };
        let child = command
            .args(["worker", "--listen", &format!("127.0.0.1:{port}"), "--lake"])
            .arg(lake)
            .env("TARN_CLUSTER_SECRET", BENCH_SECRET)
            .env("RUST_LOG", "warn")
            .kill_on_drop(true)
            .spawn()
            .context("cannot start tarn worker")?;
        children.push(child);
        urls.push(format!("http://127.0.0.1:{port}"));
    }
    for url in &urls {
        let address = url.trim_start_matches("http://").to_string();
        let started = Instant::now();
        while tokio::net::TcpStream::connect(&address).await.is_err() {
            if started.elapsed() > Duration::from_secs(30) {
                bail!("worker {url} did not start listening");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok((children, urls))
}

/// One query's outcome on one engine: the timed runs in ms and the rows of the last one.
enum Outcome {
    Done { ms: Vec<f64>, rows: u64 },
    Failed(String),
}

impl Outcome {
    /// Adds a run's result (its time only when `timed`); the first error ends the tally.
    fn record(&mut self, result: anyhow::Result<(f64, u64)>, timed: bool) {
        let Outcome::Done { ms, rows } = self else { return };
        match result {
            Ok((elapsed, n)) => {
                *rows = n;
                if timed {
                    ms.push(elapsed);
                }
            }
            Err(e) => *self = Outcome::Failed(format!("{e:#}")),
        }
    }

    fn median(&self) -> Option<f64> {
        match self {
            Outcome::Done { ms, .. } => Some(median(ms)),
            Outcome::Failed(_) => None,
        }
    }

    fn rows(&self) -> Option<u64> {
        match self {
            Outcome::Done { rows, .. } => Some(*rows),
            Outcome::Failed(_) => None,
        }
    }
}

/// What loading the tables took.
struct Loaded {
    /// Seconds to generate and load, or `None` when a kept lake was reused.
    seconds: Option<f64>,
    /// Peak RSS of this process (generator and writer) in MiB, when it loaded.
    peak_rss_mib: Option<f64>,
    rows: u64,
    files: usize,
    bytes: u64,
    /// Each table's live data files, as local paths, from its Delta log.
    files_by_table: Vec<(String, Vec<String>)>,
}

pub async fn run(args: &[String]) -> anyhow::Result<()> {
    let options = parse(args)?;
    let work = tempfile::tempdir()?;
    let lake_dir = options.lake.clone().unwrap_or_else(|| work.path().join("lake"));
    let loaded = load(&lake_dir, options.scale).await?;
    let queries: Vec<(&str, &str)> = QUERIES
        .iter()
        .copied()
        .filter(|(name, _)| options.queries.is_empty() || options.queries.iter().any(|q| q == name))
        .collect();

    let server = crate::Server::start_on(&lake_dir, &work.path().join("wal")).await?;
    let (_workers, urls) = start_workers(&lake_dir, options.workers).await?;
    let second_env = if options.workers > 0 {
        vec![("TARN_WORKERS", urls.join(",")), ("TARN_CLUSTER_SECRET", BENCH_SECRET.to_string())]
    } else if options.binary.is_some() {
        Vec::new()
    } else {
        vec![("TARN_DELTA_READER", "deltalake".to_string())]
    };
    let before = match options.second() {
        Some(_) => Some(
            crate::Server::start_binary(
                options.binary.clone(),
                lake_dir.as_os_str(),
                &work.path().join("wal-second"),
                &second_env,
            )
            .await?,
        ),
        None => None,
    };
    let client = reqwest::Client::new();
    let mut duckdb = DuckDb::start(work.path(), &loaded).await?;
    let (mut tarn, mut duck, mut deltalake) = (Vec::new(), Vec::new(), Vec::new());
    for (name, sql) in &queries {
        let mut t = Outcome::Done { ms: Vec::new(), rows: 0 };
        let mut d = Outcome::Done { ms: Vec::new(), rows: 0 };
        let mut b = Outcome::Done { ms: Vec::new(), rows: 0 };
        // Run 0 is each engine's warm-up.
        for run in 0..=options.runs {
            t.record(tarn_once(&client, &server, sql).await, run > 0);
            if let Some(before) = &before {
                b.record(tarn_once(&client, before, sql).await, run > 0);
            }
            d.record(duckdb.once(sql).await, run > 0);
        }
        let show = |o: &Outcome| match o {
            Outcome::Done { ms, rows } => format!("{:.1} ms, {rows} rows", median(ms)),
            Outcome::Failed(e) => format!("error: {e}"),
        };
        match &before {
            Some(_) => println!(
                "{name}: tarn {}; tarn with {} {}; duckdb {}",
                show(&t),
                options.second().unwrap_or_default(),
                show(&b),
                show(&d)
            ),
            None => println!("{name}: tarn {}; duckdb {}", show(&t), show(&d)),
        }
        tarn.push(t);
        duck.push(d);
        deltalake.push(b);
    }
    let point = point_queries(&client, &server, before.as_ref().zip(options.second())).await?;
    let server_rss = crate::status_mib(server.pid, "VmHWM");
    server.stop().await?;
    if let Some(before) = before {
        before.stop().await?;
    }
    let duckdb_rss = duckdb.finish().await?;

    let engines =
        Engines { server_rss, duckdb_rss, version: duckdb.version, threads: duckdb.threads };
    let before = options.second().is_some().then_some(deltalake.as_slice());
    print_report(&options, &loaded, &queries, &tarn, &duck, before, &engines);
    println!();
    println!("{point}");
    Ok(())
}

/// Short queries whose time is mostly planning and file selection, each timed
/// [`POINT_RUNS`] times after a warm-up (alternating the servers); a Markdown table of p50s.
const POINT_QUERIES: [(&str, &str); 4] = [
    ("`count(*)` of lineitem (6M rows at SF1)", "SELECT count(*) FROM lineitem"),
    (
        "orders by `o_orderkey` (1.5M rows, in key order)",
        "SELECT * FROM orders WHERE o_orderkey = 3000001",
    ),
    ("lineitem by `l_orderkey`", "SELECT * FROM lineitem WHERE l_orderkey = 3000001"),
    (
        "lineitem of one ship date",
        "SELECT count(*), sum(l_extendedprice) FROM lineitem WHERE l_shipdate = DATE '1995-06-17'",
    ),
];

const POINT_RUNS: usize = 30;

async fn point_queries(
    client: &reqwest::Client,
    server: &crate::Server,
    before: Option<(&crate::Server, String)>,
) -> anyhow::Result<String> {
    let mut report = match &before {
        Some((_, label)) => {
            format!("| point query | Tarn p50 ms | {label} p50 ms | rows |\n|---|---:|---:|---:|\n")
        }
        None => "| point query | Tarn p50 ms | rows |\n|---|---:|---:|\n".to_string(),
    };
    for (name, sql) in POINT_QUERIES {
        let (mut ours, mut theirs, mut rows) = (Vec::new(), Vec::new(), 0);
        for run in 0..=POINT_RUNS {
            let (ms, n) = tarn_once(client, server, sql).await?;
            rows = n;
            if let Some((before, _)) = &before {
                let (b, _) = tarn_once(client, before, sql).await?;
                if run > 0 {
                    theirs.push(b);
                }
            }
            if run > 0 {
                ours.push(ms);
            }
        }
        let line = match before {
            Some(_) => {
                format!("| {name} | {:.1} | {:.1} | {rows} |\n", median(&ours), median(&theirs))
            }
            None => format!("| {name} | {:.1} | {rows} |\n", median(&ours)),
        };
        print!("{line}");
        report.push_str(&line);
    }
    Ok(report)
}

fn parse(args: &[String]) -> anyhow::Result<Options> {
    let mut options = Options {
        scale: 1.0,
        runs: 3,
        lake: None,
        queries: Vec::new(),
        compare_deltalake: false,
        workers: 0,
        binary: None,
    };
    let mut i = 0;
    while i < args.len() {
        if args[i] == "--compare-deltalake" {
            options.compare_deltalake = true;
            i += 1;
            continue;
        }
        let value = args.get(i + 1).with_context(|| format!("{} needs a value", args[i]))?;
        match args[i].as_str() {
            "--scale" => options.scale = value.parse()?,
            "--runs" => options.runs = value.parse()?,
            "--lake" => options.lake = Some(PathBuf::from(value)),
            "--queries" => options.queries = value.split(',').map(str::to_string).collect(),
            "--workers" => options.workers = value.parse()?,
            "--compare-binary" => options.binary = Some(PathBuf::from(value)),
            other => bail!("unknown option {other}"),
        }
        i += 2;
    }
    if options.runs == 0 || options.scale <= 0.0 {
        bail!("--runs and --scale must be positive");
    }
    Ok(options)
}

/// Generates and loads the tables into the lake at `dir`, or reuses them when a complete
/// load at this scale is there already; lists each table's files.
async fn load(dir: &Path, scale: f64) -> anyhow::Result<Loaded> {
    let marker = dir.join(COMPLETE_MARKER);
    let reuse = match std::fs::read_to_string(&marker) {
        Ok(text) if text.trim().parse::<f64>().ok() == Some(scale) => true,
        Ok(text) => bail!("{} holds TPC-H at scale {}, not {scale}", dir.display(), text.trim()),
        Err(_) if dir.exists() && std::fs::read_dir(dir)?.next().is_some() => {
            bail!("{} is not empty and holds no complete TPC-H load", dir.display())
        }
        Err(_) => false,
    };
    std::fs::create_dir_all(dir)?;
    let lake = tarn_lake::Lake::open(&dir.display().to_string(), Default::default()).await?;
    let catalog = Catalog::new(Arc::new(lake));
    let mut seconds = None;
    let mut peak_rss_mib = None;
    if reuse {
        println!("reusing the TPC-H tables (scale {scale}) in {}", dir.display());
    } else {
        println!("generating TPC-H at scale {scale} into Delta tables");
        let started = Instant::now();
        for table in TABLES {
            load_table(&catalog, table, scale).await?;
        }
        seconds = Some(started.elapsed().as_secs_f64());
        peak_rss_mib = Some(crate::status_mib(std::process::id(), "VmHWM"));
        std::fs::write(&marker, scale.to_string())?;
    }
    let mut loaded =
        Loaded { seconds, peak_rss_mib, rows: 0, files: 0, bytes: 0, files_by_table: Vec::new() };
    for table in TABLES {
        let (_, lake_table) = catalog.open(&TableName::new("default", table)?).await?;
        let stats = lake_table.stats();
        loaded.rows += stats.rows.unwrap_or(0);
        loaded.files += stats.files;
        loaded.bytes += stats.bytes;
        let files = lake_table
            .delta()
            .get_file_uris()?
            .map(|uri| local_path(&uri))
            .collect::<anyhow::Result<Vec<_>>>()?;
        loaded.files_by_table.push((table.to_string(), files));
    }
    Ok(loaded)
}

/// A `file://` URI (or a plain path) of the Delta log as a local path for DuckDB.
fn local_path(uri: &str) -> anyhow::Result<String> {
    if !uri.contains("://") {
        return Ok(uri.to_string());
    }
    let url = url::Url::parse(uri)?;
    let path = url.to_file_path().map_err(|_| anyhow::anyhow!("not a local file: {uri}"))?;
    Ok(path.display().to_string())
}

/// Creates `table` in the catalog and appends its generated rows in commits of
/// [`ROWS_PER_COMMIT`]; the generator runs on a thread of its own, one chunk ahead.
async fn load_table(catalog: &Catalog, table: &str, scale: f64) -> anyhow::Result<()> {
    let started = Instant::now();
    let (schema, mut batches) = tpch_data::generator(table, scale, GENERATOR_BATCH_ROWS);
    // tpchgen-arrow makes strings Utf8View; the tables store them as plain strings, the type
    // Tarn's own writers give them.
    let schema = tpch_data::plain_strings(&schema);
    let (_, mut lake_table) =
        catalog.create(&TableName::new("default", table)?, &schema, &[], "tarn-bench").await?;
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<Vec<RecordBatch>>(1);
    let generator_schema = schema.clone();
    let generating = tokio::task::spawn_blocking(move || -> anyhow::Result<f64> {
        let mut busy = Duration::ZERO;
        let mut chunk = Vec::new();
        let mut rows = 0;
        loop {
            let started = Instant::now();
            let batch = batches.next().transpose()?;
            let batch = batch.map(|b| tpch_data::cast_strings(b, &generator_schema)).transpose()?;
            busy += started.elapsed();
            let Some(batch) = batch else { break };
            rows += batch.num_rows();
            chunk.push(batch);
            if rows >= ROWS_PER_COMMIT {
                if sender.blocking_send(std::mem::take(&mut chunk)).is_err() {
                    return Ok(busy.as_secs_f64());
                }
                rows = 0;
            }
        }
        if !chunk.is_empty() {
            let _ = sender.blocking_send(chunk);
        }
        Ok(busy.as_secs_f64())
    });
    let mut commits = 0;
    while let Some(chunk) = receiver.recv().await {
        // One batch per commit: deltalake's writer may interleave the batches of a commit
        // (it writes them from parallel streams), which would scatter the generator's key
        // order over the file; a single batch keeps it, as TPC-H data usually comes.
        let chunk = vec![arrow::compute::concat_batches(&schema, &chunk)?];
        lake_table = lake_table.append(chunk).await?;
        commits += 1;
    }
    let generating_seconds = generating.await??;
    let stats = lake_table.stats();
    println!(
        "  {table}: {} rows, {commits} commits, {} files, {:.1} MB in {:.1} s (generating {:.1} s of it, beside the writer)",
        stats.rows.unwrap_or(0),
        stats.files,
        stats.bytes as f64 / 1e6,
        started.elapsed().as_secs_f64(),
        generating_seconds
    );
    Ok(())
}

/// Runs `sql` once through `POST /v1/sql` (Arrow IPC stream): ms from sending the request to
/// having read the whole body, and the rows in it.
async fn tarn_once(
    client: &reqwest::Client,
    server: &crate::Server,
    sql: &str,
) -> anyhow::Result<(f64, u64)> {
    let started = Instant::now();
    let body = post_sql(client, server, sql).await?;
    let elapsed = started.elapsed().as_secs_f64() * 1000.0;
    let rows = count_rows(body).context("bad Arrow stream")?;
    Ok((elapsed, rows))
}

/// The whole body of a successful `POST /v1/sql` asking for an Arrow IPC stream.
async fn post_sql(
    client: &reqwest::Client,
    server: &crate::Server,
    sql: &str,
) -> anyhow::Result<bytes::Bytes> {
    let response = client
        .post(server.url("/v1/sql"))
        .header("content-type", "text/plain")
        .header("accept", "application/vnd.apache.arrow.stream")
        .body(sql.to_string())
        .send()
        .await?;
    let status = response.status();
    // An error after the first batch shows as a body cut short (an error here or in decoding).
    let body = response.bytes().await.context("reading the body")?;
    if !status.is_success() {
        bail!("HTTP {status}: {}", String::from_utf8_lossy(&body));
    }
    Ok(body)
}

fn count_rows(body: bytes::Bytes) -> anyhow::Result<u64> {
    let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(body), None)?;
    let mut rows = 0;
    for batch in reader {
        rows += batch?.num_rows() as u64;
    }
    Ok(rows)
}

/// The DuckDB script, running, with a view per table.
struct DuckDb {
    child: tokio::process::Child,
    stdin: Option<tokio::process::ChildStdin>,
    stdout: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    version: String,
    threads: String,
}

impl DuckDb {
    /// Starts `bench/tpch_duckdb.py` over the tables' files.
    async fn start(work: &Path, loaded: &Loaded) -> anyhow::Result<Self> {
        use tokio::io::AsyncBufReadExt;
        let python = match std::env::var("TARN_BENCH_PYTHON") {
            Ok(python) => PathBuf::from(python),
            Err(_) => {
                let home = std::env::var("HOME").context("HOME (or set TARN_BENCH_PYTHON)")?;
                Path::new(&home).join(".cache/tarn/venv/bin/python")
            }
        };
        let script = work.join("tpch_duckdb.py");
        std::fs::write(&script, DUCKDB_SCRIPT)?;
        let tables: serde_json::Map<String, Value> =
            loaded.files_by_table.iter().map(|(t, files)| (t.clone(), json!(files))).collect();
        let tables_path = work.join("tpch_tables.json");
        std::fs::write(&tables_path, serde_json::to_vec(&tables)?)?;
        let mut child = tokio::process::Command::new(&python)
            .arg(&script)
            .arg(&tables_path)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| {
                format!(
                    "cannot run {} (set TARN_BENCH_PYTHON to a Python with duckdb; scripts/test \
                     creates the default virtualenv)",
                    python.display()
                )
            })?;
        let stdin = child.stdin.take();
        let mut stdout = tokio::io::BufReader::new(child.stdout.take().context("stdout")?).lines();
        let hello = stdout.next_line().await?.context("the DuckDB script exited at start")?;
        let hello: Value = serde_json::from_str(&hello)?;
        Ok(DuckDb {
            child,
            stdin,
            stdout,
            version: hello["version"].as_str().unwrap_or("?").to_string(),
            threads: hello["threads"].to_string(),
        })
    }

    /// Runs `sql` once: ms (measured in Python) and rows.
    async fn once(&mut self, sql: &str) -> anyhow::Result<(f64, u64)> {
        use tokio::io::AsyncWriteExt;
        let stdin = self.stdin.as_mut().context("finished")?;
        stdin.write_all(format!("{}\n", json!({ "sql": sql })).as_bytes()).await?;
        stdin.flush().await?;
        let line = self.stdout.next_line().await?.context("the DuckDB script exited")?;
        let reply: Value = serde_json::from_str(&line)?;
        if let Some(e) = reply["error"].as_str() {
            bail!("{e}");
        }
        Ok((reply["ms"].as_f64().context("ms")?, reply["rows"].as_u64().context("rows")?))
    }

    /// Ends the script; its peak RSS in MiB.
    async fn finish(&mut self) -> anyhow::Result<f64> {
        drop(self.stdin.take());
        let line = self.stdout.next_line().await?.context("the DuckDB script exited")?;
        self.child.wait().await?;
        let report: Value = serde_json::from_str(&line)?;
        Ok(report["peak_rss_mib"].as_f64().unwrap_or(0.0))
    }
}

/// About the engines, for the report.
struct Engines {
    server_rss: f64,
    duckdb_rss: f64,
    version: String,
    threads: String,
}

pub(crate) fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let n = sorted.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

fn print_report(
    options: &Options,
    loaded: &Loaded,
    queries: &[(&str, &str)],
    tarn: &[Outcome],
    duckdb: &[Outcome],
    deltalake: Option<&[Outcome]>,
    engines: &Engines,
) {
    println!();
    println!(
        "TPC-H SF{}: median of {} runs after a warm-up; Tarn through POST /v1/sql (Arrow stream), \
         DuckDB {} ({} threads) over the same Parquet files; engines alternating run by run",
        options.scale, options.runs, engines.version, engines.threads
    );
    println!();
    match deltalake {
        Some(_) => {
            println!(
                "| query | Tarn ms | DuckDB ms | Tarn / DuckDB | rows | {} ms | its / DuckDB | |",
                options.second().unwrap_or_default()
            );
            println!("|---|---:|---:|---:|---:|---:|---:|---|");
        }
        None => {
            println!("| query | Tarn ms | DuckDB ms | Tarn / DuckDB | rows | |");
            println!("|---|---:|---:|---:|---:|---|");
        }
    }
    let (mut tarn_total, mut duckdb_total, mut before_total) = (0.0, 0.0, 0.0);
    let mut complete = true;
    for (i, (name, _)) in queries.iter().enumerate() {
        let (t, d) = (&tarn[i], &duckdb[i]);
        let cell = |m: Option<f64>| m.map(|m| format!("{m:.1}")).unwrap_or("error".into());
        let ratio = match (t.median(), d.median()) {
            (Some(t), Some(d)) => {
                tarn_total += t;
                duckdb_total += d;
                format!("{:.2}", t / d)
            }
            _ => {
                complete = false;
                "–".into()
            }
        };
        let (rows, note) = match (t.rows(), d.rows()) {
            (Some(a), Some(b)) if a == b => (a.to_string(), String::new()),
            (Some(a), Some(b)) => (format!("{a} / {b}"), "rows differ (Tarn / DuckDB)".into()),
            (Some(a), None) => (a.to_string(), failure("DuckDB", d)),
            (None, Some(b)) => (b.to_string(), failure("Tarn", t)),
            (None, None) => {
                ("–".into(), format!("{}; {}", failure("Tarn", t), failure("DuckDB", d)))
            }
        };
        let before = match deltalake.map(|b| &b[i]) {
            Some(b) => {
                let differ = matches!((b.rows(), t.rows()), (Some(x), Some(y)) if x != y);
                let b_note = if differ {
                    format!(" rows differ ({})", options.second().unwrap_or_default())
                } else {
                    String::new()
                };
                let ratio = match (b.median(), d.median()) {
                    (Some(b), Some(d)) => {
                        before_total += b;
                        format!("{:.2}", b / d)
                    }
                    _ => "–".into(),
                };
                format!(" {} | {ratio} |{b_note}", cell(b.median()))
            }
            None => String::new(),
        };
        println!(
            "| {name} | {} | {} | {ratio} | {rows} |{before} {note} |",
            cell(t.median()),
            cell(d.median())
        );
    }
    let before = match deltalake {
        Some(_) => format!(" **{before_total:.1}** | **{:.2}** |", before_total / duckdb_total),
        None => String::new(),
    };
    println!(
        "| **total** (sum of medians{}) | **{tarn_total:.1}** | **{duckdb_total:.1}** | **{:.2}** | |{before} |",
        if complete { "" } else { ", queries both ran" },
        tarn_total / duckdb_total
    );
    println!();
    println!("| measure | result |");
    println!("|---|---|");
    match loaded.seconds {
        Some(s) => println!(
            "| generate + load through the catalog | {s:.1} s ({:.0} rows/s), peak RSS {:.0} MiB |",
            loaded.rows as f64 / s,
            loaded.peak_rss_mib.unwrap_or(0.0)
        ),
        None => println!("| generate + load | reused a kept lake |"),
    }
    println!(
        "| data | {} rows in 8 tables, {} Parquet files, {:.1} MB |",
        loaded.rows,
        loaded.files,
        loaded.bytes as f64 / 1e6
    );
    println!(
        "| peak RSS during the queries | tarn serve {:.0} MiB, DuckDB (Python) {:.0} MiB |",
        engines.server_rss, engines.duckdb_rss
    );
}

fn failure(engine: &str, outcome: &Outcome) -> String {
    match outcome {
        Outcome::Failed(e) => {
            let e: String = e.chars().take(200).collect();
            format!("{engine} failed: {}", e.replace('|', "\\|").replace('\n', " "))
        }
        Outcome::Done { .. } => String::new(),
    }
}
