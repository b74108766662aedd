//! `tarn-bench load`: how fast `tarn load` takes a large CSV file, and in how much memory.
//!
//! Writes a CSV file of customer orders (at least 1 GB: 10M rows by default, ~110 bytes each)
//! into a temp dir, declares a table for it (typed columns, a rule, a derived column), and runs
//! the release `tarn load` on it as a child process, sampling its memory. Prints rows, bytes,
//! seconds, rows/s, MB/s and peak RSS. Figures, not assertions.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

const DEFINITION: &str = r#"
[[tables]]
name = "orders"
columns = [
  { name = "order_id", type = "int64", nullable = false },
  { name = "customer", type = "string" },
  { name = "email", type = "string" },
  { name = "country", type = "string" },
  { name = "amount", type = "decimal(10,2)" },
  { name = "ordered_at", type = "timestamp" },
  { name = "express", type = "boolean" },
]
derived = [{ name = "order_date", expr = "CAST(ordered_at AS DATE)" }]
rules = [{ name = "positive", check = "amount >= 0" }]
"#;

pub async fn run(args: &[String]) -> anyhow::Result<()> {
    let mut rows: u64 = 10_000_000;
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--rows" => rows = args.get(i + 1).context("--rows N")?.parse()?,
            other => bail!("unknown option {other}"),
        }
        i += 2;
    }
    let work = tempfile::tempdir()?;
    let csv = work.path().join("orders.csv");
    let started = Instant::now();
    let bytes = write_csv(&csv, rows)?;
    println!(
        "wrote {} ({rows} rows, {:.2} GB) in {:.1} s",
        csv.display(),
        bytes as f64 / 1e9,
        started.elapsed().as_secs_f64()
    );
    let config = work.path().join("tarn.toml");
    std::fs::write(&config, DEFINITION)?;
    let lake = work.path().join("lake");

    let binary = crate::tarn_binary()?;
    let started = Instant::now();
    let mut child = tokio::process::Command::new(&binary)
        .args(["load", "--quiet", "--table", "orders", "--lake"])
        .arg(&lake)
        .arg("--config")
        .arg(&config)
        .arg(&csv)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    let pid = child.id().context("pid")?;
    let (mut peak_rss, mut peak_anon) = (0f64, 0f64);
    let status = loop {
        tokio::select! {
            status = child.wait() => break status?,
            _ = tokio::time::sleep(Duration::from_millis(20)) => {
                peak_rss = peak_rss.max(crate::status_mib(pid, "VmRSS"));
                peak_anon = peak_anon.max(crate::status_mib(pid, "RssAnon"));
            }
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    let mut output = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        use tokio::io::AsyncReadExt;
        stdout.read_to_string(&mut output).await?;
    }
    if !status.success() {
        bail!("tarn load failed: {output}");
    }
    print!("{output}");
    println!();
    println!("| measure | result |");
    println!("|---|---|");
    println!(
        "| file | {:.2} GB CSV, {rows} rows, 7 declared columns + 1 derived, 1 rule |",
        bytes as f64 / 1e9
    );
    println!("| `tarn load` wall time | {seconds:.1} s |");
    println!(
        "| throughput | {:.0} rows/s, {:.0} MB/s |",
        rows as f64 / seconds,
        bytes as f64 / 1e6 / seconds
    );
    println!("| peak RSS (sampled every 20 ms) | {peak_rss:.0} MiB (heap and stacks {peak_anon:.0} MiB) |");
    Ok(())
}

/// Writes `rows` orders; one in 1,000 has a negative amount (rejected by the rule).
fn write_csv(path: &std::path::Path, rows: u64) -> anyhow::Result<u64> {
    const COUNTRIES: [&str; 8] = ["NL", "DE", "FR", "GB", "US", "SE", "ES", "IT"];
    const NAMES: [&str; 8] = [
        "Ada Lovelace",
        "Grace Hopper",
        "Alan Turing",
        "Edsger Dijkstra",
        "Barbara Liskov",
        "Donald Knuth",
        "Frances Allen",
        "Niklaus Wirth",
    ];
    let file = std::fs::File::create(path)?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    writeln!(out, "order_id,customer,email,country,amount,ordered_at,express")?;
    for i in 0..rows {
        let name = NAMES[(i % 8) as usize];
        let sign = if i % 1000 == 999 { "-" } else { "" };
        writeln!(
            out,
            "{i},{name},customer{}@example-shop.com,{},{sign}{}.{:02},2026-{:02}-{:02}T{:02}:{:02}:{:02}Z,{}",
            i % 100_000,
            COUNTRIES[(i % 8) as usize],
            (i * 7919) % 5000,
            i % 100,
            1 + (i / 2_678_400) % 12,
            1 + (i / 86_400) % 28,
            (i / 3600) % 24,
            (i / 60) % 60,
            i % 60,
            if i % 3 == 0 { "true" } else { "false" }
        )?;
    }
    out.flush()?;
    Ok(std::fs::metadata(path)?.len())
}
