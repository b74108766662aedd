//! `GET /metrics`: the process's metrics in Prometheus' text format (scope `metrics`).
//!
//! The crates record into the `metrics` facade where things happen (ingest, commits and
//! maintenance in `tarn-ingest`, queries in `tarn-query`, job runs in `tarn-pipelines`); this
//! module installs the Prometheus recorder once per process, records every HTTP request
//! (by route template, method and status, with a latency histogram), and sets the gauges of
//! the present state (WAL depth, running and queued queries) at each scrape.
//!
//! Names follow Prometheus' conventions: counters end in `_total`, durations are
//! `_seconds` histograms, sizes `_bytes`.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::auth::{get, Need, Routes};
use crate::error::ErrorBody;
use crate::Services;

/// Histogram buckets of every `_seconds` metric: 1 ms to 5 min.
const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// How often histograms are folded when nobody scrapes (it bounds their memory).
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// The process's Prometheus recorder, installed on first use (one per process: the recorder
/// of the `metrics` facade is global).
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(SECONDS_BUCKETS)
            .expect("the buckets are not empty")
            .build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("another metrics recorder is installed; /metrics shows only gauges");
        }
        describe();
        let upkeep = handle.clone();
        let _ = std::thread::Builder::new().name("tarn-metrics".into()).spawn(move || loop {
            std::thread::sleep(UPKEEP_EVERY);
            upkeep.run_upkeep();
        });
        handle
    })
}

/// The help text of every metric Tarn records.
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        "tarn_http_requests_total",
        "HTTP requests answered, by route, method and status"
    );
    describe_histogram!(
        "tarn_http_request_duration_seconds",
        Unit::Seconds,
        "Time to answer an HTTP request (to its first byte), by route and method"
    );
    describe_counter!(
        "tarn_rate_limited_total",
        "Requests refused by a rate limit, by limit (requests, ingest_bytes) and interface (http, pg)"
    );
    describe_counter!(
        "tarn_ingest_records_total",
        "Records taken into a table (durable and acknowledged)"
    );
    describe_counter!(
        "tarn_ingest_rejected_rows_total",
        "Rows a table's contract sent to its _rejected table"
    );
    describe_counter!(
        "tarn_ingest_bytes_total",
        Unit::Bytes,
        "Bytes of request bodies and files taken into a table"
    );
    describe_counter!("tarn_commits_total", "Delta commits of ingested records, by table");
    describe_histogram!(
        "tarn_commit_duration_seconds",
        Unit::Seconds,
        "From a flush's start to its Delta commit, retries included"
    );
    describe_counter!("tarn_commit_failures_total", "Commit attempts that failed and were retried");
    describe_counter!(
        "tarn_ingest_duplicates_dropped_total",
        "Acknowledged rows left out at commit: another writer committed their unique key first"
    );
    describe_gauge!("tarn_wal_bytes", Unit::Bytes, "Bytes in the write-ahead log");
    describe_gauge!("tarn_wal_segments", "Segment files of the write-ahead log");
    describe_gauge!(
        "tarn_wal_oldest_uncommitted_age_seconds",
        Unit::Seconds,
        "How long the oldest durable record not yet committed has waited (0: none waits)"
    );
    describe_gauge!(
        "tarn_ingest_buffered_rows",
        "Rows durable in the log and buffered for their table's next commit"
    );
    describe_counter!(
        "tarn_maintenance_runs_total",
        "Maintenance steps done, by table and step (compact, checkpoint, vacuum)"
    );
    describe_histogram!(
        "tarn_maintenance_duration_seconds",
        Unit::Seconds,
        "Duration of a maintenance step"
    );
    describe_counter!("tarn_compaction_files_rewritten_total", "Small files compaction rewrote");
    describe_counter!("tarn_vacuum_files_deleted_total", "Unreferenced files vacuum deleted");
    describe_counter!(
        "tarn_maintenance_failures_total",
        "Maintenance runs that failed (retried after a later commit)"
    );
    describe_counter!(
        "tarn_queries_total",
        "Queries that ended, by interface (sql, async, pg) and outcome"
    );
    describe_histogram!(
        "tarn_query_duration_seconds",
        Unit::Seconds,
        "From a query's admission to its end"
    );
    describe_counter!(
        "tarn_query_scanned_bytes_total",
        Unit::Bytes,
        "Bytes queries read from Parquet files"
    );
    describe_counter!(
        "tarn_query_spilled_bytes_total",
        Unit::Bytes,
        "Bytes queries spilled to disk"
    );
    describe_gauge!("tarn_queries_running", "Queries running now");
    describe_gauge!("tarn_queries_queued", "Queries waiting for a slot now");
    describe_counter!("tarn_job_runs_total", "Scheduled job runs that ended, by job and state");
}

/// The metrics route, needing the `metrics` scope.
pub(crate) fn routes(routes: Routes<Services>) -> Routes<Services> {
    routes.route("/metrics", Need::Metrics, get(render))
}

/// Prometheus metrics
///
/// The process's metrics in Prometheus' text format: HTTP requests, ingest, commits,
/// maintenance, queries, job runs, the write-ahead log's depth.
///
/// Scope: `metrics`.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "operations",
    responses(
        (status = 200, description = "The metrics", body = String, content_type = "text/plain; version=0.0.4"),
        (status = 403, description = "The key lacks the `metrics` scope", body = ErrorBody),
    )
)]
async fn render(State(services): State<Services>) -> Response {
    let handle = handle();
    let status = services.ingestor.status();
    metrics::gauge!("tarn_wal_bytes").set(status.wal.bytes as f64);
    metrics::gauge!("tarn_wal_segments").set(status.wal.segments as f64);
    metrics::gauge!("tarn_wal_oldest_uncommitted_age_seconds")
        .set(status.wal.oldest_uncommitted_age_seconds.unwrap_or(0.0));
    for table in &status.tables {
        metrics::gauge!("tarn_ingest_buffered_rows", "table" => table.table.clone())
            .set(table.buffered as f64);
    }
    let admission = services.engine.admission();
    metrics::gauge!("tarn_queries_running").set(admission.running() as f64);
    metrics::gauge!("tarn_queries_queued").set(admission.queued() as f64);
    handle.run_upkeep();
    let body = handle.render();
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

/// Middleware: counts every request by its route template (`/v1/tables/{table}`, never the
/// path itself, so the labels stay few), method and status, and observes its latency.
pub(crate) async fn record(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = request.method().as_str().to_string();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("tarn_http_requests_total", "route" => route.clone(), "method" => method.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("tarn_http_request_duration_seconds", "route" => route, "method" => method)
        .record(started.elapsed());
    response
}
