//! `tarn-bench layout`: what `cluster_by` buys a date-filtered query over ingested events.
//!
//! Starts a release `tarn serve` on a fresh lake and declares two tables of the same e-commerce
//! events, `events_plain` and `events_clustered` (`cluster_by = ["ts"]`). The same events
//! (`--events`, default 2,000,000), whose times are spread at random over 30 days (a backfill,
//! or clients that send late), are posted to both as NDJSON bodies of 10,000 events, and
//! committed by the server's usual flushes. Then one day's events are counted and summed on
//! each table, [`RUNS`] times after a warm-up, alternating the tables; and `EXPLAIN ANALYZE` of
//! the same query shows what the Parquet scan skipped. Then `tarn optimize` compacts both
//! tables (the clustered one sorted by `ts`) and the query is timed again. Prints a Markdown
//! table. Figures, not assertions.

use std::time::Instant;

use anyhow::{bail, Context};
use serde_json::{json, Value};

const RUNS: usize = 20;
const EVENTS_PER_BODY: usize = 10_000;
/// 2026-11-01T00:00:00Z in seconds.
const START: i64 = 1_793_491_200;
const DAYS: i64 = 30;

const QUERY: &str = "SELECT count(*), sum(price) FROM {table} \
     WHERE ts >= TIMESTAMP '2026-11-10T00:00:00Z' AND ts < TIMESTAMP '2026-11-11T00:00:00Z'";

pub async fn run(args: &[String]) -> anyhow::Result<()> {
    let mut events: usize = 2_000_000;
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--events" => events = args.get(i + 1).context("--events N")?.parse()?,
            other => bail!("unknown option {other}"),
        }
        i += 2;
    }
    let work = tempfile::tempdir()?;
    let server = crate::Server::start(work.path()).await?;
    let client = reqwest::Client::new();
    for (table, cluster_by) in [("events_plain", json!([])), ("events_clustered", json!(["ts"]))] {
        let definition = json!({
            "columns": [
                {"name": "event_id", "type": "int64"},
                {"name": "user_id", "type": "int64"},
                {"name": "ts", "type": "timestamp"},
                {"name": "page", "type": "string"},
                {"name": "price", "type": "float64"}
            ],
            "cluster_by": cluster_by
        });
        let response = client
            .put(server.url(&format!("/v1/tables/{table}")))
            .header("content-type", "application/json")
            .body(definition.to_string())
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("defining {table}: {}", response.text().await?);
        }
    }

    let started = Instant::now();
    let mut rng: u64 = 0x2545_f491_4f6c_dd1d;
    let mut sent = 0;
    while sent < events {
        let n = EVENTS_PER_BODY.min(events - sent);
        let mut body = String::with_capacity(n * 110);
        for k in 0..n {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let ts = START + (rng % (DAYS as u64 * 86_400)) as i64;
            let id = sent + k;
            body.push_str(&format!(
                "{{\"event_id\": {id}, \"user_id\": {}, \"ts\": {ts}, \"page\": \"/p/{}\", \"price\": {}.5}}\n",
                rng % 100_000,
                rng % 500,
                rng % 200
            ));
        }
        for table in ["events_plain", "events_clustered"] {
            let wait = if sent + n >= events { "?wait=commit" } else { "" };
            let response = client
                .post(server.url(&format!("/v1/ingest/{table}{wait}")))
                .header("content-type", "application/x-ndjson")
                .body(body.clone())
                .send()
                .await?;
            if !response.status().is_success() {
                bail!("ingest into {table}: {}", response.text().await?);
            }
        }
        sent += n;
    }
    println!(
        "ingested {events} events into each table in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let mut report = String::from(
        "| table | files | p50 ms | rows in the day | bytes scanned | row groups matched | page index rows pruned / matched |\n|---|---:|---:|---:|---:|---|---|\n",
    );
    let tables = ["events_plain", "events_clustered"];
    measure(&client, &server, &tables, "", &mut report).await?;
    // Then `tarn optimize` compacts each table's small files (sorted by `cluster_by` where
    // the table declares it), beside the running server, and the query runs again.
    for table in tables {
        let started = Instant::now();
        let output = tokio::process::Command::new(crate::tarn_binary()?)
            .args(["optimize", "--lake"])
            .arg(work.path().join("lake"))
            .arg(table)
            .output()
            .await?;
        if !output.status.success() {
            bail!("tarn optimize {table}: {}", String::from_utf8_lossy(&output.stderr));
        }
        println!(
            "tarn optimize {table}: {:.1} s: {}",
            started.elapsed().as_secs_f64(),
            String::from_utf8_lossy(&output.stdout).trim()
        );
    }
    measure(&client, &server, &tables, ", compacted", &mut report).await?;
    server.stop().await?;
    println!();
    println!("one day of {DAYS} (`{QUERY}`), median of {RUNS} runs after a warm-up:");
    println!();
    print!("{report}");
    Ok(())
}

/// Times [`QUERY`] on `tables` ([`RUNS`] times after a warm-up, alternating) and adds a row
/// per table to `report`, its name followed by `label`.
async fn measure(
    client: &reqwest::Client,
    server: &crate::Server,
    tables: &[&str],
    label: &str,
    report: &mut String,
) -> anyhow::Result<()> {
    let mut times = vec![Vec::new(); tables.len()];
    for run in 0..=RUNS {
        for (t, table) in tables.iter().enumerate() {
            let started = Instant::now();
            sql(client, server, &QUERY.replace("{table}", table)).await?;
            if run > 0 {
                times[t].push(started.elapsed().as_secs_f64() * 1000.0);
            }
        }
    }
    for (t, table) in tables.iter().enumerate() {
        let answer = sql(client, server, &QUERY.replace("{table}", table)).await?;
        let explain =
            sql(client, server, &format!("EXPLAIN ANALYZE {}", QUERY.replace("{table}", table)))
                .await?;
        let plan = explain["rows"].to_string();
        let info: Value =
            crate::json(client.get(server.url(&format!("/v1/tables/{table}"))).send().await?)
                .await?;
        report.push_str(&format!(
            "| `{table}`{label} | {} | {:.1} | {} | {} | {} | {} / {} |\n",
            info["stats"]["files"],
            crate::tpch::median(&times[t]),
            answer["rows"][0][0],
            metric(&plan, "bytes_scanned"),
            metric(&plan, "row_groups_pruned_statistics"),
            metric(&plan, "page_index_rows_pruned"),
            metric(&plan, "page_index_rows_matched"),
        ));
    }
    Ok(())
}

/// The JSON answer of `POST /v1/sql`.
async fn sql(client: &reqwest::Client, server: &crate::Server, sql: &str) -> anyhow::Result<Value> {
    let response = client
        .post(server.url("/v1/sql"))
        .header("content-type", "application/json")
        .body(json!({ "sql": sql }).to_string())
        .send()
        .await?;
    if !response.status().is_success() {
        bail!("{sql}: {}", response.text().await?);
    }
    crate::json(response).await
}

/// A metric's value in an `EXPLAIN ANALYZE` text (`name=value`, up to the next `,` or `]`).
fn metric(plan: &str, name: &str) -> String {
    let Some(start) = plan.find(&format!("{name}=")) else { return "–".into() };
    let rest = &plan[start + name.len() + 1..];
    rest[..rest.find([',', ']']).unwrap_or(rest.len())].trim().to_string()
}
