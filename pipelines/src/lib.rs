//! Tarn's pipelines: scheduled SQL jobs, notifications and alarms.
//!
//! `tarn-pipelines` is the other half of a pipeline around the lake, the part people build
//! with cron, Airflow, Spark and CloudWatch next to a warehouse:
//!
//! * **jobs** ([`Jobs`]): a query on a [`schedule`] (cron in a time zone, `@daily`,
//!   `every 30s`) whose result is written into a table — appended, replacing it in one
//!   commit, or merged by key — or exported as Parquet / CSV / NDJSON files with a `_SUCCESS`
//!   marker ([`output`]); retried with backoff, stopped at its timeout, and announced by
//!   webhook and e-mail ([`notify`]) when it fails (or succeeds, when asked);
//! * **runs are data**: every attempt is a row of `system.job_runs` ([`runs`]);
//! * **exactly once across servers**: every server of a lake schedules every job, and a lease
//!   taken with a conditional put per occurrence ([`store`]) makes one of them run it; a write
//!   into a table carries a Delta `txn` naming job and run, so a retried run never writes
//!   twice;
//! * **alarms** ([`alerts`]): failures nobody watches — a dropped file that failed, rejected
//!   rows above a threshold, ingest refusing writes, maintenance failing — sent on the same
//!   channels, rate-limited.
//!
//! It sits above ingest and query: queries run through `tarn-query`'s engine (read-only, the
//! same limits as every query), tables are written through `tarn-lake`, and the catalog
//! knows the tables jobs create (kept for their job: ingest refuses to write them). It knows
//! no HTTP: `tarn-http` serves `/v1/jobs`.
//!
//! ```no_run
//! # async fn demo(jobs: std::sync::Arc<tarn_pipelines::Jobs>) -> Result<(), tarn_pipelines::Error> {
//! use tarn_pipelines::JobSpec;
//!
//! let spec = JobSpec::from_json(serde_json::json!({
//!     "schedule": "0 7 * * *",
//!     "timezone": "Europe/Oslo",
//!     "sql": "SELECT country, count(*) AS leads FROM leads GROUP BY country",
//!     "into": {"table": "reports.leads_by_country", "mode": "replace"},
//!     "retries": {"attempts": 3, "backoff": "30s"},
//! }))?;
//! jobs.put("leads_by_country", spec).await?;
//! let outcome = jobs.run_and_wait("leads_by_country").await?;
//! println!("{} rows", outcome.rows.unwrap_or(0));
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub mod alerts;
mod error;
mod jobs;
pub mod notify;
pub mod output;
pub mod runs;
pub mod schedule;
pub mod spec;
pub mod store;
#[cfg(feature = "test-util")]
pub mod test_util;

pub use alerts::{AlertRule, Alerts, AlertsConfig};
pub use error::{Error, Result};
pub use jobs::{JobInfo, Jobs, JobsConfig, RunOutcome, RunStarted, RunView};
pub use notify::{Notifier, RetryPolicy, SmtpConfig};
pub use runs::{RunRecord, JOB_RUNS};
pub use spec::{Job, JobSpec};
