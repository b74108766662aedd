//! Running an occurrence: its lease, its attempts with their backoff, what each wrote, the
//! rows of `system.job_runs`, the outcome and its notification.

use super::*;

impl Jobs {
    /// Runs one occurrence to its end (or leaves it to the server that holds it).
    pub(super) async fn occurrence(
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
    pub(super) async fn try_run(
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
        // Counted by the server whose `done` decided the run, so once per run across servers.
        metrics::counter!("tarn_job_runs_total", "job" => job.name.clone(), "state" => state)
            .increment(1);
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
}

/// What one pass over a run found.
pub(super) enum Step {
    /// The run is over (its outcome, when known here).
    Finished(Option<RunOutcome>),
    /// Another server holds the current attempt until then.
    WaitUntil(DateTime<Utc>),
}

/// Up to a second, so that servers waiting on the same lease do not all look at once.
pub(super) fn jitter() -> Duration {
    Duration::from_millis(u64::from(uuid::Uuid::new_v4().as_u128() as u16 % 1000))
}
