//! Runs are data: every attempt of every job is a row of the Delta table `system.job_runs`,
//! in the lake beside the tables it wrote, queryable with SQL like any other.
//!
//! | column | what |
//! |---|---|
//! | `job` | the job's name |
//! | `run_id` | the run: its occurrence (`20261201T070000Z`) or `m-…` for a run started by hand |
//! | `attempt` | 1, 2, … |
//! | `scheduled_for` | the occurrence's instant (for a run by hand: when it was asked for) |
//! | `started_at`, `finished_at` | the attempt's |
//! | `state` | `succeeded`, `failed`, `timed_out`, or `abandoned` (its server stopped answering) |
//! | `rows` | rows written, when known |
//! | `output` | the table and the version written (`reports.x@v12`), or the export's location |
//! | `error` | why it failed |
//! | `server` | the node id of the server that ran it |
//! | `trigger` | `schedule`, `catch_up` or `manual` |

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use chrono::{DateTime, TimeZone, Utc};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use tarn_catalog::{Catalog, TableName};
use tarn_ingest::maintenance::Maintenance;
use tarn_query::QueryEngine;

use crate::{Error, Result};

/// The table's name.
pub const JOB_RUNS: &str = "system.job_runs";

/// The owner recorded for `system.job_runs`.
const OWNER: &str = "tarn:jobs";

/// One attempt of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The job.
    pub job: String,
    /// The run.
    pub run_id: String,
    /// The attempt, from 1.
    pub attempt: u32,
    /// The occurrence's instant.
    pub scheduled_for: DateTime<Utc>,
    /// When the attempt started.
    pub started_at: DateTime<Utc>,
    /// When it finished (none while it runs).
    pub finished_at: Option<DateTime<Utc>>,
    /// `running`, `succeeded`, `failed`, `timed_out` or `abandoned`.
    pub state: String,
    /// Rows written, when known.
    pub rows: Option<u64>,
    /// What it wrote: `table@vN` or an export location.
    pub output: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// The server that ran it.
    pub server: String,
    /// `schedule`, `catch_up` or `manual`.
    pub trigger: String,
}

/// The run id of a scheduled occurrence: its instant, `20261201T070000Z`.
pub fn run_id_for(occurrence: DateTime<Utc>) -> String {
    occurrence.format("%Y%m%dT%H%M%SZ").to_string()
}

/// A new run id for a run started by hand.
pub fn manual_run_id() -> String {
    format!("m-{}", &uuid::Uuid::new_v4().simple().to_string()[..16])
}

/// Checks a run id from a request path.
pub fn check_run_id(run_id: &str) -> bool {
    !run_id.is_empty()
        && run_id.len() <= 64
        && run_id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// The columns of `system.job_runs`.
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("job", DataType::Utf8, false),
        Field::new("run_id", DataType::Utf8, false),
        Field::new("attempt", DataType::Int32, false),
        Field::new("scheduled_for", timestamp(), false),
        Field::new("started_at", timestamp(), false),
        Field::new("finished_at", timestamp(), true),
        Field::new("state", DataType::Utf8, false),
        Field::new("rows", DataType::Int64, true),
        Field::new("output", DataType::Utf8, true),
        Field::new("error", DataType::Utf8, true),
        Field::new("server", DataType::Utf8, false),
        Field::new("trigger", DataType::Utf8, false),
    ]))
}

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

impl RunRecord {
    fn batch(&self) -> Result<RecordBatch> {
        let text = |v: &str| Arc::new(StringArray::from(vec![v])) as ArrayRef;
        let opt_text =
            |v: &Option<String>| Arc::new(StringArray::from(vec![v.clone()])) as ArrayRef;
        let ts = |v: Option<DateTime<Utc>>| {
            Arc::new(TimestampMicrosecondArray::from(vec![v.map(micros)]).with_timezone("UTC"))
                as ArrayRef
        };
        let columns = vec![
            text(&self.job),
            text(&self.run_id),
            Arc::new(Int32Array::from(vec![self.attempt as i32])) as ArrayRef,
            ts(Some(self.scheduled_for)),
            ts(Some(self.started_at)),
            ts(self.finished_at),
            text(&self.state),
            Arc::new(Int64Array::from(vec![self.rows.map(|r| r as i64)])) as ArrayRef,
            opt_text(&self.output),
            opt_text(&self.error),
            text(&self.server),
            text(&self.trigger),
        ];
        RecordBatch::try_new(schema(), columns).map_err(Error::Encode)
    }

    fn from_batch(batch: &RecordBatch) -> Result<Vec<RunRecord>> {
        // Queries answer strings as views; the table's own types make the reading simple.
        let columns = schema()
            .fields()
            .iter()
            .map(|f| {
                let column = batch.column_by_name(f.name()).ok_or_else(|| {
                    Error::Document(format!("system.job_runs has no column {}", f.name()))
                })?;
                arrow::compute::cast(column, f.data_type()).map_err(Error::Encode)
            })
            .collect::<Result<Vec<_>>>()?;
        let batch = &RecordBatch::try_new(schema(), columns).map_err(Error::Encode)?;
        let bad = |what: &str| {
            Error::Document(format!("system.job_runs: column {what} is not as Tarn writes it"))
        };
        let text = |name: &str| -> Result<&StringArray> {
            batch
                .column_by_name(name)
                .and_then(|c| c.as_any().downcast_ref::<StringArray>())
                .ok_or_else(|| bad(name))
        };
        let ts = |name: &str| -> Result<&TimestampMicrosecondArray> {
            batch
                .column_by_name(name)
                .and_then(|c| c.as_any().downcast_ref::<TimestampMicrosecondArray>())
                .ok_or_else(|| bad(name))
        };
        let (job, run_id, state, output, error, server, trigger) = (
            text("job")?,
            text("run_id")?,
            text("state")?,
            text("output")?,
            text("error")?,
            text("server")?,
            text("trigger")?,
        );
        let (scheduled, started, finished) =
            (ts("scheduled_for")?, ts("started_at")?, ts("finished_at")?);
        let attempt = batch
            .column_by_name("attempt")
            .and_then(|c| c.as_any().downcast_ref::<Int32Array>())
            .ok_or_else(|| bad("attempt"))?;
        let rows = batch
            .column_by_name("rows")
            .and_then(|c| c.as_any().downcast_ref::<Int64Array>())
            .ok_or_else(|| bad("rows"))?;
        let time = |a: &TimestampMicrosecondArray, i: usize| {
            (!a.is_null(i)).then(|| Utc.timestamp_micros(a.value(i)).single()).flatten()
        };
        let opt = |a: &StringArray, i: usize| (!a.is_null(i)).then(|| a.value(i).to_string());
        (0..batch.num_rows())
            .map(|i| {
                Ok(RunRecord {
                    job: job.value(i).to_string(),
                    run_id: run_id.value(i).to_string(),
                    attempt: attempt.value(i).max(0) as u32,
                    scheduled_for: time(scheduled, i).ok_or_else(|| bad("scheduled_for"))?,
                    started_at: time(started, i).ok_or_else(|| bad("started_at"))?,
                    finished_at: time(finished, i),
                    state: state.value(i).to_string(),
                    rows: (!rows.is_null(i)).then(|| rows.value(i).max(0) as u64),
                    output: opt(output, i),
                    error: opt(error, i),
                    server: server.value(i).to_string(),
                    trigger: trigger.value(i).to_string(),
                })
            })
            .collect()
    }
}

/// Writes and reads `system.job_runs`.
pub struct RunLog {
    catalog: Arc<Catalog>,
    name: TableName,
    maintenance: Option<Arc<Maintenance>>,
}

impl RunLog {
    /// The run log of the lake behind `catalog`; `maintenance` compacts its one-row commits.
    pub fn new(catalog: Arc<Catalog>, maintenance: Option<Arc<Maintenance>>) -> Self {
        let name = TableName::parse(JOB_RUNS).expect("system.job_runs is a valid name");
        RunLog { catalog, name, maintenance }
    }

    /// Appends one attempt's row (one Delta commit; concurrent servers' commits retry on the
    /// next version).
    pub async fn record(&self, record: &RunRecord) -> Result<()> {
        let table = match self.catalog.open(&self.name).await {
            Ok((_, table)) => table,
            Err(tarn_catalog::Error::TableNotFound { .. }) => {
                match self.catalog.create_owned(&self.name, &schema(), OWNER).await {
                    Ok((_, table)) => table,
                    Err(tarn_catalog::Error::TableExists { .. }) => {
                        self.catalog.open(&self.name).await?.1
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Err(e) => return Err(e.into()),
        };
        let table = table.append(vec![record.batch()?]).await?;
        self.catalog.remember(&self.name, &table);
        if let Some(maintenance) = &self.maintenance {
            maintenance.after_commit(&self.name, &table);
        }
        Ok(())
    }

    /// The attempts of `job` (of one run, with `run_id`), newest first, at most `limit`.
    pub async fn list(
        &self,
        engine: &QueryEngine,
        job: &str,
        run_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RunRecord>> {
        match self.catalog.definition(&self.name).await {
            Ok(_) => {}
            Err(tarn_catalog::Error::TableNotFound { .. }) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        }
        let literal = |v: &str| format!("'{}'", v.replace('\'', "''"));
        let mut sql = format!("SELECT * FROM system.job_runs WHERE job = {}", literal(job));
        if let Some(run_id) = run_id {
            sql.push_str(&format!(" AND run_id = {}", literal(run_id)));
        }
        sql.push_str(&format!(" ORDER BY started_at DESC, attempt DESC LIMIT {limit}"));
        let batches: Vec<RecordBatch> = engine
            .execute(&sql)
            .await?
            .try_collect()
            .await
            .map_err(|e| Error::Query(tarn_query::Error::from(e)))?;
        let mut records = Vec::new();
        for batch in &batches {
            records.extend(RunRecord::from_batch(batch)?);
        }
        Ok(records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_through_its_batch() {
        let at = Utc.with_ymd_and_hms(2026, 12, 1, 7, 0, 0).unwrap();
        let record = RunRecord {
            job: "daily".into(),
            run_id: run_id_for(at),
            attempt: 2,
            scheduled_for: at,
            started_at: at,
            finished_at: None,
            state: "failed".into(),
            rows: Some(3),
            output: None,
            error: Some("it broke".into()),
            server: "n1".into(),
            trigger: "schedule".into(),
        };
        assert_eq!(record.run_id, "20261201T070000Z");
        let batch = record.batch().unwrap();
        assert_eq!(RunRecord::from_batch(&batch).unwrap(), vec![record]);
    }

    #[test]
    fn run_ids() {
        assert!(check_run_id("20261201T070000Z"));
        assert!(check_run_id(&manual_run_id()));
        assert!(!check_run_id("../x"));
        assert!(!check_run_id(""));
    }
}
