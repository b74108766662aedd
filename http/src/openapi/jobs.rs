//! The schemas of scheduled jobs: mirrors of `tarn_pipelines`' types.

use utoipa::ToSchema;

/// A job's definition (`tarn_pipelines::JobSpec`), the body of `PUT /v1/jobs/{name}`.
/// Unknown fields are refused.
#[derive(ToSchema)]
pub struct JobSpec {
    /// When it runs: 5-field cron, `@hourly` / `@daily` / `@weekly`, or `every 30s`.
    pub schedule: String,
    /// The IANA zone the cron fields are read in (default UTC).
    #[schema(nullable = false)]
    pub timezone: Option<String>,
    /// The query; read-only, like every query Tarn runs.
    pub sql: String,
    /// Write the result into a table.
    #[schema(nullable = false)]
    pub into: Option<JobInto>,
    /// Write the result as files.
    #[schema(nullable = false)]
    pub export: Option<JobExport>,
    /// Attempts and backoff.
    #[schema(nullable = false)]
    pub retries: Option<JobRetries>,
    /// Longest one attempt may run (default `10m`).
    #[schema(nullable = false)]
    pub timeout: Option<String>,
    /// Who is told about runs.
    #[schema(nullable = false)]
    pub notify: Option<JobNotify>,
    /// Occurrences missed while no server ran: `latest` or `none`.
    #[schema(nullable = false)]
    pub catch_up: Option<String>,
}

/// A job's `into` (`tarn_pipelines::IntoSpec`): the table its result is written into.
#[derive(ToSchema)]
pub struct JobInto {
    /// `name` or `namespace.name`; created from the result's schema when missing.
    pub table: String,
    /// `append` (default), `replace` or `merge`.
    #[schema(nullable = false)]
    pub mode: Option<String>,
    /// For `merge`: the key columns (absent when none).
    #[schema(nullable = false)]
    pub key: Option<Vec<String>>,
}

/// A job's `export` (`tarn_pipelines::ExportSpec`): files written at a location.
#[derive(ToSchema)]
pub struct JobExport {
    /// A directory in the lake (`exports/{date}/`) or `s3://bucket/prefix/{date}/`, with the
    /// placeholders `{date}`, `{job}`, `{run_id}`.
    pub location: String,
    /// `parquet` (default), `csv` or `ndjson`.
    #[schema(nullable = false)]
    pub format: Option<String>,
}

/// A job's `retries` (`tarn_pipelines::RetrySpec`).
#[derive(ToSchema)]
pub struct JobRetries {
    /// Attempts in all (default 1: no retry).
    #[schema(nullable = false)]
    pub attempts: Option<u32>,
    /// Wait before the second attempt (default `30s`); doubles for each further one.
    #[schema(nullable = false)]
    pub backoff: Option<String>,
}

/// A job's `notify` (`tarn_pipelines::NotifySpec`).
#[derive(ToSchema)]
pub struct JobNotify {
    /// When: `failure` (default) and / or `success`.
    #[schema(nullable = false)]
    pub on: Option<Vec<String>>,
    /// A URL that gets a POST of the run's facts as JSON.
    #[schema(nullable = false)]
    pub webhook: Option<String>,
    /// Addresses that get an e-mail (needs `--smtp-url`).
    #[schema(nullable = false)]
    pub email: Option<Vec<String>>,
}

/// One attempt of a job's run (`tarn_pipelines::RunRecord`).
#[derive(ToSchema)]
pub struct RunRecord {
    /// The job.
    pub job: String,
    /// The run.
    pub run_id: String,
    /// The attempt's number, from 1.
    pub attempt: u32,
    /// The occurrence it runs for.
    #[schema(format = DateTime)]
    pub scheduled_for: String,
    /// When it started.
    #[schema(format = DateTime)]
    pub started_at: String,
    /// When it ended (null while it runs).
    #[schema(required = true, format = DateTime)]
    pub finished_at: Option<String>,
    /// `running`, `succeeded` or `failed`.
    pub state: String,
    /// Rows written, when known.
    #[schema(required = true)]
    pub rows: Option<u64>,
    /// What it wrote (a table version, files).
    #[schema(required = true)]
    pub output: Option<String>,
    /// Why it failed.
    #[schema(required = true)]
    pub error: Option<String>,
    /// The server that ran it.
    pub server: String,
    /// `schedule`, `catch_up` or `manual`.
    pub trigger: String,
}

/// A job as the API shows it (`tarn_pipelines::JobInfo`).
#[derive(ToSchema)]
pub struct JobInfo {
    /// The name.
    pub name: String,
    /// `config` or `api`.
    pub source: String,
    /// When the definition was last written.
    #[schema(format = DateTime)]
    pub updated_at: String,
    /// The definition, defaults written out.
    pub definition: JobSpec,
    /// The next scheduled occurrence.
    #[schema(required = true, format = DateTime)]
    pub next_run: Option<String>,
    /// The latest attempt recorded (`GET /v1/jobs/{name}` only).
    #[schema(nullable = false)]
    pub last_run: Option<RunRecord>,
}

/// `GET /v1/jobs`.
#[derive(ToSchema)]
pub struct JobList {
    /// Every job.
    pub jobs: Vec<JobInfo>,
}

/// A run started by hand (`tarn_pipelines::RunStarted`).
#[derive(ToSchema)]
pub struct RunStarted {
    /// The job.
    pub job: String,
    /// The run's id, for `GET /v1/jobs/{name}/runs/{run_id}`.
    pub run_id: String,
    /// `running`.
    pub state: String,
    /// When it was asked for.
    #[schema(format = DateTime)]
    pub scheduled_for: String,
}

/// A run and its attempts (`tarn_pipelines::RunView`).
#[derive(ToSchema)]
pub struct RunView {
    /// The job.
    pub job: String,
    /// The run.
    pub run_id: String,
    /// `running` until the run is over, then `succeeded` or `failed`.
    pub state: String,
    /// Its attempts, newest first.
    pub attempts: Vec<RunRecord>,
}

/// `GET /v1/jobs/{name}/runs`.
#[derive(ToSchema)]
pub struct RunList {
    /// The job's attempts, newest first.
    pub runs: Vec<RunRecord>,
}
