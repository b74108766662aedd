//! What ingest did since the process started, per table: records taken, rows rejected, bytes
//! received, commits and the last one. Kept here for `GET /v1/ingest` (and the console), and
//! recorded at the same place into the `metrics` facade for `GET /metrics`:
//!
//! | metric | labels | |
//! |---|---|---|
//! | `tarn_ingest_records_total` | `table` | records taken (durable, acknowledged) |
//! | `tarn_ingest_rejected_rows_total` | `table` | rows the contract sent to `_rejected` |
//! | `tarn_ingest_bytes_total` | `table` | bytes of the request bodies and files taken |
//! | `tarn_commits_total` | `table` | Delta commits of ingested records |
//! | `tarn_commit_duration_seconds` | `table` | from the flush's start to its commit, retries included |
//! | `tarn_commit_failures_total` | `table` | commit attempts that failed (and were retried) |
//! | `tarn_ingest_duplicates_dropped_total` | `table` | rows left out at commit: another writer committed their unique key first |

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tarn_catalog::TableName;

/// The latest commit of a table's ingested records.
#[derive(Debug, Clone, Serialize)]
pub struct LastCommit {
    /// The Delta version.
    pub version: u64,
    /// When it was made.
    pub at: DateTime<Utc>,
    /// Rows it committed.
    pub rows: u64,
}

/// One table's figures since the process started.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TableStats {
    /// Records taken.
    pub records: u64,
    /// Rows rejected by the contract.
    pub rejected: u64,
    /// Bytes of bodies and files taken.
    pub bytes: u64,
    /// Commits made.
    pub commits: u64,
    /// Rows left out at commit because another writer committed their unique key first
    /// (acknowledged, then found to be duplicates; see `tarn_ingest::unique`).
    pub duplicates_dropped: u64,
    /// The latest commit, if any.
    pub last_commit: Option<LastCommit>,
}

/// The figures of every table ingest wrote to.
#[derive(Debug, Default)]
pub struct IngestStats {
    tables: Mutex<BTreeMap<TableName, TableStats>>,
}

impl IngestStats {
    /// `records` taken into `table` (and `rejected` rows sent aside) from `bytes` of input.
    pub fn received(&self, table: &TableName, records: u64, rejected: u64, bytes: u64) {
        let label = table.to_string();
        metrics::counter!("tarn_ingest_records_total", "table" => label.clone()).increment(records);
        metrics::counter!("tarn_ingest_rejected_rows_total", "table" => label.clone())
            .increment(rejected);
        metrics::counter!("tarn_ingest_bytes_total", "table" => label).increment(bytes);
        let mut tables = self.tables.lock().expect("ingest stats");
        let stats = tables.entry(table.clone()).or_default();
        stats.records += records;
        stats.rejected += rejected;
        stats.bytes += bytes;
    }

    /// `table`'s records were committed as `version` (`rows` of them), `took` after the flush
    /// started.
    pub fn committed(&self, table: &TableName, version: u64, rows: u64, took: Duration) {
        let label = table.to_string();
        metrics::counter!("tarn_commits_total", "table" => label.clone()).increment(1);
        metrics::histogram!("tarn_commit_duration_seconds", "table" => label).record(took);
        let mut tables = self.tables.lock().expect("ingest stats");
        let stats = tables.entry(table.clone()).or_default();
        stats.commits += 1;
        stats.last_commit = Some(LastCommit { version, at: Utc::now(), rows });
    }

    /// `rows` acknowledged for `table` were left out at commit: another writer committed
    /// their unique key first.
    pub fn dropped(&self, table: &TableName, rows: u64) {
        metrics::counter!("tarn_ingest_duplicates_dropped_total", "table" => table.to_string())
            .increment(rows);
        let mut tables = self.tables.lock().expect("ingest stats");
        tables.entry(table.clone()).or_default().duplicates_dropped += rows;
    }

    /// A commit attempt of `table` failed (it is retried).
    pub fn commit_failed(&self, table: &TableName) {
        metrics::counter!("tarn_commit_failures_total", "table" => table.to_string()).increment(1);
    }

    /// Every table's figures, by name.
    pub fn snapshot(&self) -> Vec<(TableName, TableStats)> {
        let tables = self.tables.lock().expect("ingest stats");
        tables.iter().map(|(name, stats)| (name.clone(), stats.clone())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_add_up_per_table() {
        let stats = IngestStats::default();
        let events = TableName::parse("web.events").unwrap();
        let leads = TableName::parse("leads").unwrap();
        stats.received(&events, 10, 2, 1000);
        stats.received(&events, 5, 0, 400);
        stats.received(&leads, 1, 1, 90);
        stats.committed(&events, 3, 15, Duration::from_millis(20));
        stats.dropped(&leads, 2);
        let snapshot = stats.snapshot();
        let names: Vec<String> = snapshot.iter().map(|(n, _)| n.to_string()).collect();
        assert_eq!(names, ["default.leads", "web.events"]);
        let events = &snapshot[1].1;
        assert_eq!(
            (events.records, events.rejected, events.bytes, events.commits),
            (15, 2, 1400, 1)
        );
        let last = events.last_commit.as_ref().unwrap();
        assert_eq!((last.version, last.rows), (3, 15));
        assert!(snapshot[0].1.last_commit.is_none());
        assert_eq!((snapshot[0].1.duplicates_dropped, events.duplicates_dropped), (2, 0));
    }
}
