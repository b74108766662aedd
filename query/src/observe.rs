//! Every query counted and logged once, however it ends: [`QueryRecord`].
//!
//! | metric | labels | |
//! |---|---|---|
//! | `tarn_queries_total` | `interface` (`sql`, `async`, `pg`), `outcome` | queries that ended |
//! | `tarn_query_duration_seconds` | `interface` | from admission to the end |
//! | `tarn_query_scanned_bytes_total` | `interface` | bytes read from Parquet files (not yet counted for `pg`) |
//! | `tarn_query_spilled_bytes_total` | `interface` | bytes spilled to disk |
//!
//! Running and queued queries are gauges the metrics endpoint reads from
//! [`crate::Admission`] when scraped.

use std::sync::Arc;
use std::time::Instant;

use datafusion::physical_plan::ExecutionPlan;

use crate::PlannedQuery;

/// How a query ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Its whole result was produced.
    Succeeded,
    /// An error stopped it (bad SQL included).
    Failed,
    /// It ran out of time.
    TimedOut,
    /// Its client went away, or cancelled it.
    Cancelled,
}

impl Outcome {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::TimedOut => "timed_out",
            Outcome::Cancelled => "cancelled",
        }
    }

    /// The outcome of a query stopped by `error`.
    pub fn of(error: &crate::Error) -> Self {
        match tarn_lake::Classify::kind(error) {
            tarn_lake::ErrorKind::Timeout => Outcome::TimedOut,
            _ => Outcome::Failed,
        }
    }
}

/// One query from admission to its end: counted and logged when [`QueryRecord::finish`]ed,
/// or as [`Outcome::Cancelled`] when dropped unfinished (its client went away).
pub struct QueryRecord {
    interface: &'static str,
    started: Instant,
    plan: Option<Arc<dyn ExecutionPlan>>,
    rows: u64,
    finished: bool,
}

impl QueryRecord {
    /// A query of `interface` (`sql`, `async`, `pg`) starts now.
    pub fn start(interface: &'static str) -> Self {
        QueryRecord { interface, started: Instant::now(), plan: None, rows: 0, finished: false }
    }

    /// The query was planned: its scans' metrics tell the bytes read at the end.
    pub fn planned(&mut self, planned: &PlannedQuery) {
        self.plan = Some(planned.plan.clone());
    }

    /// `rows` more rows of the result were produced.
    pub fn rows(&mut self, rows: u64) {
        self.rows += rows;
    }

    /// The query ended with `outcome`.
    pub fn finish(mut self, outcome: Outcome) {
        self.record(outcome);
    }

    fn record(&mut self, outcome: Outcome) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        let interface = self.interface;
        let seconds = self.started.elapsed().as_secs_f64();
        let (scanned, spilled) = match &self.plan {
            Some(plan) => (
                crate::engine::metric_total(plan.as_ref(), |m| {
                    m.sum_by_name("bytes_scanned").map(|v| v.as_usize())
                }),
                crate::engine::metric_total(plan.as_ref(), |m| m.spilled_bytes()),
            ),
            None => (0, 0),
        };
        metrics::counter!("tarn_queries_total", "interface" => interface, "outcome" => outcome.as_str())
            .increment(1);
        metrics::histogram!("tarn_query_duration_seconds", "interface" => interface)
            .record(seconds);
        metrics::counter!("tarn_query_scanned_bytes_total", "interface" => interface)
            .increment(scanned);
        metrics::counter!("tarn_query_spilled_bytes_total", "interface" => interface)
            .increment(spilled);
        tracing::info!(
            interface,
            outcome = outcome.as_str(),
            rows = self.rows,
            ms = (seconds * 1000.0) as u64,
            bytes_scanned = scanned,
            spilled_bytes = spilled,
            "query ended"
        );
    }
}

impl Drop for QueryRecord {
    fn drop(&mut self) {
        self.record(Outcome::Cancelled);
    }
}
