//! What the API and the command line ask of jobs: list, get, put, delete, run now, runs.

use super::*;
use run::jitter;

impl Jobs {
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
