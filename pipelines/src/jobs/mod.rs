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

mod api;
mod run;

use run::Step;

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
}
