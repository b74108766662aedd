//! The jobs of one server: their definitions, their schedules, and their runs.
//!
//! Every server sharing a lake runs the same scheduler over the same definitions (read from
//! the lake every [`JobsConfig::refresh`]); the leases of [`crate::store`] make each
//! occurrence run once. A run is one occurrence: up to `retries.attempts` attempts, each with
//! the job's timeout, the backoff doubling between them; each attempt is a row of
//! `system.job_runs`; after the last failed attempt (or on success, when asked) the job's
//! recipients are told, once, by the server that ran that attempt.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use tarn_catalog::Catalog;
use tarn_ingest::maintenance::Maintenance;
use tarn_lake::Classify;
use tarn_query::QueryEngine;
use tokio::sync::watch;
use tokio::task::AbortHandle;

use crate::notify::{Message, Notifier};
use crate::output::{self, RunRef, Written};
use crate::runs::{manual_run_id, run_id_for, RunLog, RunRecord};
use crate::schedule::format_duration;
use crate::spec::{check_name, CatchUp, Job, JobSpec, Output};
use crate::store::{Done, Ended, JobStore, Lease, StoredJob};
use crate::{Error, Result};

/// Settings of the scheduler.
#[derive(Debug, Clone)]
pub struct JobsConfig {
    /// Run scheduled occurrences on this server (a server with `false` still serves the jobs
    /// API and runs jobs asked for by hand).
    pub schedule: bool,
    /// How often the definitions are read again from the lake (other servers' changes).
    pub refresh: Duration,
    /// Added to a lease's time, so that a slow holder is not taken over at once.
    pub lease_grace: Duration,
    /// Run records (leases, outcomes under `_tarn/jobs/runs/`) older than this are deleted;
    /// the rows of `system.job_runs` stay.
    pub keep_run_records: Duration,
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig {
            schedule: true,
            refresh: Duration::from_secs(10),
            lease_grace: Duration::from_secs(30),
            keep_run_records: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// Attempts of one run whose servers may stop answering before the run fails: a query that
/// brings servers down is not tried on every server of the lake.
const MAX_ABANDONED: u32 = 3;

/// Longest wait between attempts, whatever the doubling says.
const MAX_BACKOFF: Duration = crate::spec::MAX_BACKOFF;

/// Occurrences of one job in flight on one server; past it, an occurrence is left to the other
/// servers (and logged), so a job slower than its schedule cannot pile up tasks.
const MAX_IN_FLIGHT: usize = 8;

/// How late a wake-up may be before the occurrences it slept through count as missed (a
/// suspended machine, a stalled process): they then follow `catch_up`, not all at once.
const LATE: Duration = Duration::from_secs(60);

/// How a run was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    Schedule,
    CatchUp,
    Manual,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::CatchUp => "catch_up",
            Trigger::Manual => "manual",
        }
    }
}

/// A job as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct JobInfo {
    /// The name.
    pub name: String,
    /// `config` or `api`.
    pub source: String,
    /// When the definition was last written.
    pub updated_at: DateTime<Utc>,
    /// The definition, defaults written out.
    pub definition: JobSpec,
    /// The next scheduled occurrence.
    pub next_run: Option<DateTime<Utc>>,
    /// The latest attempt recorded (`GET /v1/jobs/{name}` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_run: Option<RunRecord>,
}

/// A run started by hand, as `POST /v1/jobs/{name}/runs` answers it.
#[derive(Debug, Clone, Serialize)]
pub struct RunStarted {
    /// The job.
    pub job: String,
    /// The run's id, for `GET /v1/jobs/{name}/runs/{run_id}`.
    pub run_id: String,
    /// `running`.
    pub state: String,
    /// When it was asked for.
    pub scheduled_for: DateTime<Utc>,
}

/// A run as `GET /v1/jobs/{name}/runs/{run_id}` shows it.
#[derive(Debug, Clone, Serialize)]
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

/// The outcome of a whole run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunOutcome {
    /// The job.
    pub job: String,
    /// The run.
    pub run_id: String,
    /// `succeeded` or `failed`.
    pub state: String,
    /// Attempts made.
    pub attempts: u32,
    /// Rows written, when known.
    pub rows: Option<u64>,
    /// What was written.
    pub output: Option<String>,
    /// The last attempt's error.
    pub error: Option<String>,
}

struct Scheduled {
    stamp: String,
    task: AbortHandle,
}

/// The jobs service of one server.
pub struct Jobs {
    catalog: Arc<Catalog>,
    engine: Arc<QueryEngine>,
    notifier: Notifier,
    store: JobStore,
    runs: RunLog,
    node: String,
    config: JobsConfig,
    scheduled: Mutex<HashMap<String, Scheduled>>,
    /// Attempts running on this server, by (job, run id).
    running: Mutex<HashMap<(String, String), RunRecord>>,
    /// Notifications being delivered.
    deliveries: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Compaction, checkpoints and vacuum of the tables jobs write (and `system.job_runs`).
    maintenance: Option<Arc<Maintenance>>,
}

impl Jobs {
    /// The jobs service of the lake behind `catalog`, running queries on `engine`; `node`
    /// names this server in leases and run records; `maintenance` keeps the tables jobs write
    /// compacted, checkpointed and vacuumed (`None` for a one-off run).
    pub fn new(
        catalog: Arc<Catalog>,
        engine: Arc<QueryEngine>,
        notifier: Notifier,
        node: String,
        config: JobsConfig,
        maintenance: Option<Arc<Maintenance>>,
    ) -> Arc<Self> {
        let store = JobStore::new(catalog.lake().store().clone());
        let runs = RunLog::new(catalog.clone(), maintenance.clone());
        Arc::new(Jobs {
            catalog,
            engine,
            notifier,
            store,
            runs,
            node,
            config,
            scheduled: Mutex::new(HashMap::new()),
            running: Mutex::new(HashMap::new()),
            deliveries: Mutex::new(Vec::new()),
            maintenance,
        })
    }

    /// The notifier jobs (and alarms) send with.
    pub fn notifier(&self) -> &Notifier {
        &self.notifier
    }

    /// Compiles a spec and checks what can only be checked here (e-mail needs SMTP): for jobs
    /// being declared. Stored jobs are compiled without it: a server without SMTP still runs
    /// them, and says in its log that their e-mail could not be sent.
    fn compile(&self, name: &str, spec: &JobSpec) -> Result<Job> {
        let job = spec.compile(name)?;
        self.notifier.check(&job.recipients)?;
        Ok(job)
    }

    /// Checks jobs as this server would run them (their query's shape, and that e-mail has an
    /// SMTP server): a server refuses to start with a job it could not run.
    pub fn check(&self, jobs: &[(String, JobSpec)]) -> Result<()> {
        for (name, spec) in jobs {
            self.declare(name, spec).map_err(|e| {
                Error::InvalidJob(format!("job '{name}' in the configuration: {e}"))
            })?;
        }
        Ok(())
    }

    /// Compiles a job being declared: its spec, its recipients, and its SQL (one statement that
    /// parses and only reads; its tables may not exist yet).
    fn declare(&self, name: &str, spec: &JobSpec) -> Result<Job> {
        let job = self.compile(name, spec)?;
        self.engine.check_sql(&spec.sql).map_err(|e| Error::InvalidJob(format!("sql: {e}")))?;
        Ok(job)
    }

    /// Stores the jobs of `tarn.toml` (those whose definition changed).
    pub async fn apply_config(&self, jobs: &[(String, JobSpec)]) -> Result<()> {
        for (name, spec) in jobs {
            let job = spec.compile(name).map_err(|e| {
                Error::InvalidJob(format!("job '{name}' in the configuration: {e}"))
            })?;
            let current = self.store.definition(&job.name).await?;
            if current.as_ref().is_some_and(|c| c.spec == *spec && c.source == "config") {
                continue;
            }
            let stored = StoredJob {
                name: job.name.clone(),
                spec: spec.clone(),
                source: "config".into(),
                updated_at: Utc::now(),
            };
            self.store.put_definition(&stored).await?;
            tracing::info!(job = %job.name, "applied the job's definition from the configuration");
        }
        Ok(())
    }

    /// Starts scheduling: reads the definitions now and every [`JobsConfig::refresh`], until
    /// `stop` says so.
    pub fn start(self: &Arc<Self>, mut stop: watch::Receiver<bool>) {
        let jobs = self.clone();
        tokio::spawn(async move {
            let mut pruned = std::time::Instant::now() - Duration::from_secs(3600);
            loop {
                if let Err(e) = jobs.sync().await {
                    tracing::warn!(error = %e, "cannot read the job definitions; trying again later");
                }
                if pruned.elapsed() >= Duration::from_secs(3600) {
                    jobs.prune().await;
                    pruned = std::time::Instant::now();
                }
                tokio::select! {
                    _ = tokio::time::sleep(jobs.config.refresh) => {}
                    _ = stop.changed() => break,
                }
                if *stop.borrow() {
                    break;
                }
            }
            for (_, scheduled) in jobs.scheduled.lock().expect("scheduled lock").drain() {
                scheduled.task.abort();
            }
        });
    }

    /// Brings the schedule in line with the stored definitions.
    async fn sync(self: &Arc<Self>) -> Result<()> {
        let definitions = self.store.definitions().await?;
        let mut scheduled = self.scheduled.lock().expect("scheduled lock");
        scheduled.retain(|name, s| {
            let keep = definitions.get(name).is_some_and(|(_, stamp)| *stamp == s.stamp);
            if !keep {
                s.task.abort();
            }
            keep
        });
        for (name, (stored, stamp)) in definitions {
            if scheduled.contains_key(&name) {
                continue;
            }
            let job = match stored.spec.compile(&name) {
                Ok(job) => Arc::new(job),
                Err(e) => {
                    tracing::error!(job = %name, error = %e, "a stored job does not compile here; it is not scheduled");
                    continue;
                }
            };
            let task = if self.config.schedule {
                tokio::spawn(self.clone().schedule(job.clone(), stored.updated_at)).abort_handle()
            } else {
                tokio::spawn(async {}).abort_handle()
            };
            tracing::info!(job = %name, schedule = %job.spec.schedule, "scheduled the job");
            scheduled.insert(name, Scheduled { stamp, task });
        }
        Ok(())
    }

    /// The loop of one job: the latest missed occurrence (once), then each occurrence at its
    /// time.
    async fn schedule(self: Arc<Self>, job: Arc<Job>, defined_at: DateTime<Utc>) {
        let now = Utc::now();
        if job.spec.catch_up == CatchUp::Latest {
            if let Some(latest) = job.schedule.latest_at_or_before(now) {
                // Only occurrences the definition already existed for.
                if latest >= defined_at {
                    tokio::spawn(self.clone().occurrence(job.clone(), latest, Trigger::CatchUp));
                }
            }
        }
        let in_flight = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut cursor = now;
        loop {
            let Some(next) = job.schedule.next_after(cursor) else {
                tracing::warn!(job = %job.name, "the job's schedule has no further occurrence");
                return;
            };
            let wait = (next - Utc::now()).to_std().unwrap_or_default();
            tokio::time::sleep(wait).await;
            let woke = Utc::now();
            let (due, trigger) = if (woke - next).to_std().unwrap_or_default() > LATE {
                // Slept through occurrences: only the latest, and only with catch_up = latest.
                cursor = woke;
                match (job.spec.catch_up, job.schedule.latest_at_or_before(woke)) {
                    (CatchUp::Latest, Some(latest)) => (latest, Trigger::CatchUp),
                    _ => continue,
                }
            } else {
                cursor = next;
                (next, Trigger::Schedule)
            };
            if in_flight.load(std::sync::atomic::Ordering::Acquire) >= MAX_IN_FLIGHT {
                tracing::warn!(job = %job.name, occurrence = %due, "{MAX_IN_FLIGHT} runs of this job are still in flight on this server; this occurrence is left to the other servers");
                continue;
            }
            in_flight.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
            let (jobs, job, counter) = (self.clone(), job.clone(), in_flight.clone());
            tokio::spawn(async move {
                jobs.occurrence(job, due, trigger).await;
                counter.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
            });
        }
    }

    /// Runs one occurrence to its end (or leaves it to the server that holds it).
    async fn occurrence(
        self: Arc<Self>,
        job: Arc<Job>,
        scheduled_for: DateTime<Utc>,
        trigger: Trigger,
    ) -> Option<RunOutcome> {
        let run_id = run_id_for(scheduled_for);
        let mut failures = 0;
        loop {
            match self.try_run(&job, &run_id, scheduled_for, trigger).await {
                Ok(step) => match step {
                    Step::Finished(outcome) => return outcome,
                    Step::WaitUntil(until) => {
                        let wait = (until - Utc::now()).to_std().unwrap_or_default();
                        tokio::time::sleep(wait + jitter()).await;
                    }
                },
                Err(e) if !e.kind().is_retryable() => {
                    tracing::error!(job = %job.name, run = %run_id, error = %e, "cannot run the occurrence");
                    return None;
                }
                Err(e) => {
                    // Storage trouble while deciding who runs it: try again, it is not lost.
                    failures += 1;
                    let wait = Duration::from_secs(1 << failures.min(6));
                    tracing::warn!(job = %job.name, run = %run_id, error = %e, "cannot read or take the run's lease; trying again in {}s", wait.as_secs());
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// One pass over a run's state: finished, someone else holds it, or this server runs the
    /// next attempt (and, failing, goes round again after the backoff).
    async fn try_run(
        &self,
        job: &Job,
        run_id: &str,
        scheduled_for: DateTime<Utc>,
        trigger: Trigger,
    ) -> Result<Step> {
        let mut own_last: Option<u32> = None;
        loop {
            let state = self.store.run_state(&job.name, run_id).await?;
            if let Some(done) = state.done {
                return Ok(Step::Finished(Some(RunOutcome {
                    job: job.name.clone(),
                    run_id: run_id.to_string(),
                    state: done.state,
                    attempts: done.attempts,
                    rows: done.rows,
                    output: None,
                    error: done.error,
                })));
            }
            let last = state.leases.last();
            let made = last.map(|l| l.attempt).unwrap_or(0);
            // The holder of an attempt that succeeded stopped before it made the run final.
            if let Some(end) = state.ended.values().find(|e| e.state == "succeeded") {
                let outcome = self
                    .conclude(
                        job,
                        run_id,
                        scheduled_for,
                        made,
                        Some((end.rows, end.output.clone().unwrap_or_default())),
                        None,
                    )
                    .await?;
                return Ok(Step::Finished(outcome));
            }
            let mut abandoned = None;
            if let Some(lease) = last.filter(|l| !state.ended.contains_key(&l.attempt)) {
                let ours = own_last == Some(lease.attempt);
                let held_here = self
                    .running
                    .lock()
                    .expect("running lock")
                    .contains_key(&(job.name.clone(), run_id.to_string()));
                if !ours {
                    let alive = if lease.server == self.node {
                        held_here
                    } else {
                        lease.expires_at > Utc::now()
                    };
                    if alive {
                        return Ok(Step::WaitUntil(lease.expires_at));
                    }
                    abandoned = Some(lease.clone());
                }
            }
            // Attempts that failed count against `retries.attempts`; attempts whose server
            // stopped answering do not (the job did not fail), up to MAX_ABANDONED of them.
            let failed = state.ended.len() as u32;
            let lost = state.leases.iter().filter(|l| !state.ended.contains_key(&l.attempt)).count()
                as u32;
            if failed >= job.attempts || lost >= MAX_ABANDONED {
                let error = match state.ended.values().next_back() {
                    Some(end) if lost < MAX_ABANDONED => {
                        end.error.clone().unwrap_or_else(|| "the attempt failed".into())
                    }
                    _ => format!(
                        "{lost} servers stopped answering while they ran it (the last: {})",
                        last.map(|l| l.server.as_str()).unwrap_or("?")
                    ),
                };
                if let Some(lease) = &abandoned {
                    self.record_abandoned(job, run_id, scheduled_for, lease, trigger).await;
                }
                let outcome =
                    self.conclude(job, run_id, scheduled_for, made, None, Some(error)).await?;
                return Ok(Step::Finished(outcome));
            }
            // A job deleted (or replaced by a definition with another schedule) meanwhile is
            // not run again.
            match self.store.definition(&job.name).await? {
                Some(stored) if stored.spec == job.spec => {}
                _ => {
                    tracing::info!(job = %job.name, run = %run_id, "the job was deleted or changed; the run stops");
                    return Ok(Step::Finished(None));
                }
            }
            let attempt = made + 1;
            let started_at = Utc::now();
            let hold = job.timeout + self.backoff_after(job, failed + 1) + self.config.lease_grace;
            let lease = Lease {
                attempt,
                server: self.node.clone(),
                started_at,
                expires_at: started_at
                    + chrono::Duration::from_std(hold).unwrap_or(chrono::Duration::hours(24)),
            };
            if !self.store.take(&job.name, run_id, &lease).await? {
                continue;
            }
            if let Some(lease) = &abandoned {
                self.record_abandoned(job, run_id, scheduled_for, lease, trigger).await;
            }
            own_last = Some(attempt);
            let run = RunRef { run_id: run_id.to_string(), scheduled_for, attempt };
            let (record, written) = self.attempt(job, &run, trigger, started_at).await;
            let end = Ended {
                state: record.state.clone(),
                rows: record.rows,
                output: record.output.clone(),
                error: record.error.clone(),
            };
            self.store.end(&job.name, run_id, attempt, &end).await?;
            self.record(&record).await;
            match &record.error {
                None => {
                    let outcome = self
                        .conclude(
                            job,
                            run_id,
                            scheduled_for,
                            attempt,
                            written.as_ref().map(|w| (w.rows, w.output.clone())),
                            None,
                        )
                        .await?;
                    return Ok(Step::Finished(outcome));
                }
                Some(error) if failed + 1 >= job.attempts => {
                    let outcome = self
                        .conclude(job, run_id, scheduled_for, attempt, None, Some(error.clone()))
                        .await?;
                    return Ok(Step::Finished(outcome));
                }
                Some(error) => {
                    let wait = self.backoff_after(job, failed + 1);
                    tracing::warn!(job = %job.name, run = %run_id, attempt, error = %error, "the attempt failed; the next one starts in {}", format_duration(wait));
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// The wait after the `failed`-th failed attempt.
    fn backoff_after(&self, job: &Job, failed: u32) -> Duration {
        if failed >= job.attempts {
            return Duration::ZERO;
        }
        job.backoff.saturating_mul(1 << (failed - 1).min(20)).min(MAX_BACKOFF)
    }

    /// Runs one attempt and says how it went.
    async fn attempt(
        &self,
        job: &Job,
        run: &RunRef,
        trigger: Trigger,
        started_at: DateTime<Utc>,
    ) -> (RunRecord, Option<Written>) {
        let key = (job.name.clone(), run.run_id.clone());
        let mut record = RunRecord {
            job: job.name.clone(),
            run_id: run.run_id.clone(),
            attempt: run.attempt,
            scheduled_for: run.scheduled_for,
            started_at,
            finished_at: None,
            state: "running".into(),
            rows: None,
            output: None,
            error: None,
            server: self.node.clone(),
            trigger: trigger.as_str().into(),
        };
        self.running.lock().expect("running lock").insert(key.clone(), record.clone());
        tracing::info!(job = %job.name, run = %run.run_id, attempt = run.attempt, "job run started");
        let result = tokio::time::timeout(job.timeout, self.write(job, run)).await;
        self.running.lock().expect("running lock").remove(&key);
        record.finished_at = Some(Utc::now());
        let written = match result {
            Ok(Ok(written)) => {
                record.state = "succeeded".into();
                record.rows = written.rows;
                record.output = Some(written.output.clone());
                if written.already {
                    record.error = None;
                }
                tracing::info!(job = %job.name, run = %run.run_id, attempt = run.attempt, rows = ?written.rows, output = %written.output, already = written.already, "job run succeeded");
                Some(written)
            }
            Ok(Err(e)) => {
                record.state = "failed".into();
                record.error = Some(e.to_string());
                tracing::warn!(job = %job.name, run = %run.run_id, attempt = run.attempt, error = %e, "job run failed");
                None
            }
            Err(_) => {
                let e = Error::Timeout(format_duration(job.timeout));
                record.state = "timed_out".into();
                record.error = Some(e.to_string());
                tracing::warn!(job = %job.name, run = %run.run_id, attempt = run.attempt, error = %e, "job run timed out");
                None
            }
        };
        (record, written)
    }

    /// The query and its output, within the engine's admission like every other query.
    async fn write(&self, job: &Job, run: &RunRef) -> Result<Written> {
        let _slot = self.engine.admission().enter()?.admit().await;
        match &job.output {
            Output::Table { table, mode } => {
                let written =
                    output::write_table(&self.engine, &self.catalog, job, run, table, mode).await?;
                if let Some(maintenance) = &self.maintenance {
                    maintenance.after_commit(table, &self.catalog.table_as_known(table).await?);
                }
                Ok(written)
            }
            Output::Export { location, format } => {
                output::export(&self.engine, &self.catalog, job, run, location, *format).await
            }
        }
    }

    /// Records an attempt whose server stopped answering.
    async fn record_abandoned(
        &self,
        job: &Job,
        run_id: &str,
        scheduled_for: DateTime<Utc>,
        lease: &Lease,
        trigger: Trigger,
    ) {
        let record = RunRecord {
            job: job.name.clone(),
            run_id: run_id.to_string(),
            attempt: lease.attempt,
            scheduled_for,
            started_at: lease.started_at,
            finished_at: Some(Utc::now()),
            state: "abandoned".into(),
            rows: None,
            output: None,
            error: Some(format!(
                "the server running it ({}) stopped answering; its lease ran out at {}",
                lease.server,
                lease.expires_at.to_rfc3339()
            )),
            server: lease.server.clone(),
            trigger: trigger.as_str().into(),
        };
        self.record(&record).await;
    }

    /// Appends an attempt's row to `system.job_runs`, retrying while storage fails; a row
    /// that cannot be written is logged, and the run goes on.
    async fn record(&self, record: &RunRecord) {
        for attempt in 1..=5u32 {
            match self.runs.record(record).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(job = %record.job, run = %record.run_id, attempt, error = %e, "cannot record the run in system.job_runs");
                    tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
                }
            }
        }
        tracing::error!(job = %record.job, run = %record.run_id, record = ?record, "gave up recording the run in system.job_runs");
    }

    /// Makes the run's outcome final and tells who asked to be told. Only the server whose
    /// `done.json` is written notifies, so a run is announced once.
    async fn conclude(
        &self,
        job: &Job,
        run_id: &str,
        scheduled_for: DateTime<Utc>,
        attempts: u32,
        success: Option<(Option<u64>, String)>,
        error: Option<String>,
    ) -> Result<Option<RunOutcome>> {
        let state = if error.is_none() { "succeeded" } else { "failed" };
        let rows = success.as_ref().and_then(|(rows, _)| *rows);
        let done = Done {
            state: state.into(),
            attempts,
            finished_at: Utc::now(),
            rows,
            error: error.clone(),
        };
        let outcome = RunOutcome {
            job: job.name.clone(),
            run_id: run_id.to_string(),
            state: state.into(),
            attempts,
            rows,
            output: success.map(|(_, output)| output),
            error,
        };
        if !self.store.finish(&job.name, run_id, &done).await? {
            return Ok(Some(outcome));
        }
        let tell = if outcome.error.is_some() { job.notify_failure } else { job.notify_success };
        if tell && !job.recipients.is_empty() {
            let message = self.message(job, &outcome, scheduled_for).await;
            let notifier = self.notifier.clone();
            let recipients = job.recipients.clone();
            let name = job.name.clone();
            // Delivery is retried in the background and never changes the run's state.
            let delivery = tokio::spawn(async move {
                for delivery in notifier.send(&message, &recipients).await {
                    tracing::info!(job = %name, channel = %delivery.channel, delivered = delivery.delivered, attempts = delivery.attempts, "job notification");
                }
            });
            let mut deliveries = self.deliveries.lock().expect("deliveries lock");
            deliveries.retain(|d| !d.is_finished());
            deliveries.push(delivery);
        }
        Ok(Some(outcome))
    }

    /// The notification of a run: `{job, run_id, state, attempts, scheduled_for,
    /// started_at, finished_at, rows, error}`.
    async fn message(
        &self,
        job: &Job,
        outcome: &RunOutcome,
        scheduled_for: DateTime<Utc>,
    ) -> Message {
        let history = self
            .runs
            .list(&self.engine, &job.name, Some(&outcome.run_id), 100)
            .await
            .unwrap_or_default();
        let started_at = history.iter().map(|r| r.started_at).min();
        let finished_at = history.iter().filter_map(|r| r.finished_at).max().or(Some(Utc::now()));
        let facts = json!({
            "job": job.name,
            "run_id": outcome.run_id,
            "state": outcome.state,
            "attempts": outcome.attempts,
            "scheduled_for": scheduled_for,
            "started_at": started_at,
            "finished_at": finished_at,
            "rows": outcome.rows,
            "error": outcome.error,
        });
        let subject = match &outcome.error {
            Some(_) => format!(
                "Tarn job '{}' failed after {} attempt{}",
                job.name,
                outcome.attempts,
                if outcome.attempts == 1 { "" } else { "s" }
            ),
            None => format!("Tarn job '{}' succeeded", job.name),
        };
        let mut text = format!(
            "Job: {}\nRun: {}\nState: {}\nAttempts: {}\nScheduled for: {}\n",
            job.name,
            outcome.run_id,
            outcome.state,
            outcome.attempts,
            scheduled_for.to_rfc3339()
        );
        if let Some(rows) = outcome.rows {
            text.push_str(&format!("Rows: {rows}\n"));
        }
        if let Some(error) = &outcome.error {
            text.push_str(&format!("Error: {error}\n"));
        }
        text.push_str(&format!(
            "\nEvery attempt: SELECT * FROM system.job_runs WHERE job = '{}' AND run_id = '{}'\n",
            job.name, outcome.run_id
        ));
        Message { subject, text, json: facts }
    }

    /// Deletes old run records of every scheduled job.
    async fn prune(&self) {
        let names: Vec<String> =
            self.scheduled.lock().expect("scheduled lock").keys().cloned().collect();
        let before = Utc::now()
            - chrono::Duration::from_std(self.config.keep_run_records)
                .unwrap_or(chrono::Duration::days(7));
        for name in names {
            match self.store.prune(&name, before, 100).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(job = %name, runs = n, "deleted old run records"),
                Err(e) => tracing::warn!(job = %name, error = %e, "cannot delete old run records"),
            }
        }
    }

    /// Waits until the notifications sent so far are delivered (or given up on).
    pub async fn notified(&self) {
        let pending: Vec<_> =
            std::mem::take(&mut *self.deliveries.lock().expect("deliveries lock"));
        for delivery in pending {
            let _ = delivery.await;
        }
    }

    // ----- the API -----

    async fn stored(&self, name: &str) -> Result<(StoredJob, Job)> {
        let name = check_name(name)?;
        let stored =
            self.store.definition(&name).await?.ok_or_else(|| Error::JobNotFound(name.clone()))?;
        let job = stored.spec.compile(&name)?;
        Ok((stored, job))
    }

    fn info(stored: StoredJob, job: &Job, last_run: Option<RunRecord>) -> JobInfo {
        JobInfo {
            name: stored.name,
            source: stored.source,
            updated_at: stored.updated_at,
            definition: job.normalized(),
            next_run: job.schedule.next_after(Utc::now()),
            last_run,
        }
    }

    /// Every job, by name.
    pub async fn list(&self) -> Result<Vec<JobInfo>> {
        let mut jobs = Vec::new();
        for (name, (stored, _)) in self.store.definitions().await? {
            match stored.spec.compile(&name) {
                Ok(job) => jobs.push(Self::info(stored, &job, None)),
                Err(e) => tracing::warn!(job = %name, error = %e, "a stored job does not compile"),
            }
        }
        jobs.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(jobs)
    }

    /// One job, with its next and its last run.
    pub async fn get(&self, name: &str) -> Result<JobInfo> {
        let (stored, job) = self.stored(name).await?;
        let last = self.runs(&job.name, None, 1).await?.into_iter().next();
        Ok(Self::info(stored, &job, last))
    }

    /// Creates or replaces a job (`PUT /v1/jobs/{name}`); true if it is new. Other servers
    /// pick it up within [`JobsConfig::refresh`]; this one at once.
    pub async fn put(self: &Arc<Self>, name: &str, spec: JobSpec) -> Result<(JobInfo, bool)> {
        let job = self.declare(name, &spec)?;
        if let Output::Table { table, .. } = &job.output {
            match self.catalog.definition(table).await {
                Ok(definition)
                    if definition.owner.as_deref() != Some(&output::owner_of(&job.name)) =>
                {
                    return Err(Error::Output {
                        job: job.name.clone(),
                        reason: format!(
                            "into.table: '{table}' exists and is not this job's output (a job \
                             writes only into tables it creates)"
                        ),
                    });
                }
                Ok(_) | Err(tarn_catalog::Error::TableNotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let existed = self.store.definition(&job.name).await?.is_some();
        let stored = StoredJob {
            name: job.name.clone(),
            spec,
            source: "api".into(),
            updated_at: Utc::now(),
        };
        self.store.put_definition(&stored).await?;
        if let Err(e) = self.sync().await {
            tracing::warn!(error = %e, "cannot reschedule after a job changed; the next refresh will");
        }
        Ok((Self::info(stored, &job, None), !existed))
    }

    /// Deletes a job and its run records (its rows in `system.job_runs` and its output stay).
    pub async fn delete(self: &Arc<Self>, name: &str) -> Result<()> {
        let name = check_name(name)?;
        if !self.store.delete_definition(&name).await? {
            return Err(Error::JobNotFound(name));
        }
        self.store.delete_runs(&name).await?;
        if let Err(e) = self.sync().await {
            tracing::warn!(error = %e, "cannot reschedule after a job was deleted; the next refresh will");
        }
        Ok(())
    }

    /// Starts a run of the job now, in the background (`POST /v1/jobs/{name}/runs`).
    pub async fn run_now(self: &Arc<Self>, name: &str) -> Result<RunStarted> {
        let (_, job) = self.stored(name).await?;
        let job_name = job.name.clone();
        let now = Utc::now();
        let run_id = manual_run_id();
        // Shown as queued until its attempt takes the lease.
        let queued = RunRecord {
            job: job.name.clone(),
            run_id: run_id.clone(),
            attempt: 1,
            scheduled_for: now,
            started_at: now,
            finished_at: None,
            state: "queued".into(),
            rows: None,
            output: None,
            error: None,
            server: self.node.clone(),
            trigger: Trigger::Manual.as_str().into(),
        };
        self.running
            .lock()
            .expect("running lock")
            .insert((job.name.clone(), run_id.clone()), queued);
        let jobs = self.clone();
        let id = run_id.clone();
        tokio::spawn(async move {
            if let Err(e) = jobs.manual(Arc::new(job), now, id.clone()).await {
                tracing::error!(run = %id, error = %e, "cannot run the job");
            }
        });
        Ok(RunStarted { job: job_name, run_id, state: "running".into(), scheduled_for: now })
    }

    /// Runs the job now and waits for the run's end (`tarn job run`).
    pub async fn run_and_wait(self: &Arc<Self>, name: &str) -> Result<RunOutcome> {
        let (_, job) = self.stored(name).await?;
        let name = job.name.clone();
        let outcome = self.clone().manual(Arc::new(job), Utc::now(), manual_run_id()).await?;
        outcome.ok_or(Error::JobNotFound(name))
    }

    async fn manual(
        self: Arc<Self>,
        job: Arc<Job>,
        at: DateTime<Utc>,
        run_id: String,
    ) -> Result<Option<RunOutcome>> {
        loop {
            match self.try_run(&job, &run_id, at, Trigger::Manual).await {
                Ok(Step::Finished(outcome)) => return Ok(outcome),
                Ok(Step::WaitUntil(until)) => {
                    let wait = (until - Utc::now()).to_std().unwrap_or_default();
                    tokio::time::sleep(wait + jitter()).await;
                }
                Err(e) if !e.kind().is_retryable() => {
                    self.running.lock().expect("running lock").remove(&(job.name.clone(), run_id));
                    return Err(e);
                }
                Err(e) => {
                    tracing::warn!(job = %job.name, run = %run_id, error = %e, "cannot take the run's lease; trying again");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
        }
    }

    /// One run: its state and its attempts.
    pub async fn run(&self, name: &str, run_id: &str) -> Result<RunView> {
        let checked = check_name(name)?;
        // The outcome first: attempts are recorded before it, so a final run shows them all.
        let state = self.store.run_state(&checked, run_id).await?;
        let attempts = self.runs(name, Some(run_id), 1000).await?;
        let state = match (state.done, state.leases.is_empty()) {
            (Some(done), _) => done.state,
            // The run's records were pruned (or deleted with a former job of this name): its
            // newest attempt tells how it ended.
            (None, true) => match attempts.first().map(|a| a.state.as_str()) {
                Some("succeeded") => "succeeded".into(),
                Some("queued" | "running") | None => "running".into(),
                Some(_) => "failed".into(),
            },
            (None, false) => "running".into(),
        };
        let name = checked;
        Ok(RunView { job: name, run_id: run_id.to_string(), state, attempts })
    }

    /// The attempts of a job (of one run), newest first, with those running on this server.
    pub async fn runs(
        &self,
        name: &str,
        run_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RunRecord>> {
        let name = check_name(name)?;
        if self.store.definition(&name).await?.is_none() {
            return Err(Error::JobNotFound(name));
        }
        let mut records: Vec<RunRecord> = self
            .running
            .lock()
            .expect("running lock")
            .values()
            .filter(|r| r.job == name && run_id.is_none_or(|id| r.run_id == id))
            .cloned()
            .collect();
        records.extend(self.runs.list(&self.engine, &name, run_id, limit).await?);
        records.sort_by(|a, b| b.started_at.cmp(&a.started_at).then(b.attempt.cmp(&a.attempt)));
        records.truncate(limit);
        if let (Some(run_id), true) = (run_id, records.is_empty()) {
            // A run asked for by hand a moment ago may not have started its attempt yet.
            if self.store.run_state(&name, run_id).await?.leases.is_empty() {
                return Err(Error::RunNotFound { job: name, run_id: run_id.to_string() });
            }
        }
        Ok(records)
    }
}

/// What one pass over a run found.
enum Step {
    /// The run is over (its outcome, when known here).
    Finished(Option<RunOutcome>),
    /// Another server holds the current attempt until then.
    WaitUntil(DateTime<Utc>),
}

/// Up to a second, so that servers waiting on the same lease do not all look at once.
fn jitter() -> Duration {
    Duration::from_millis(u64::from(uuid::Uuid::new_v4().as_u128() as u16 % 1000))
}
