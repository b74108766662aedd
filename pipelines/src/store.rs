//! The jobs' documents in the lake, under `_tarn/jobs/`:
//!
//! ```text
//! _tarn/jobs/definitions/<job>.json                  the job as declared (PUT, tarn.toml)
//! _tarn/jobs/runs/<job>/<run_id>/attempt-<n>.json     the lease of attempt n (who, until when)
//! _tarn/jobs/runs/<job>/<run_id>/ended-<n>.json       how attempt n ended
//! _tarn/jobs/runs/<job>/<run_id>/done.json            the run's outcome, once it is final
//! ```
//!
//! **One run per occurrence, across servers.** Every server computes the same occurrences
//! from a job's schedule; the run id of an occurrence is its instant (`20261201T070000Z`).
//! Before an attempt, a server creates `attempt-<n>.json` with a conditional put (create only
//! if absent — `If-None-Match: *` on S3, an exclusive create on a local disk): exactly one
//! server succeeds and runs the attempt; the others watch. A lease says until when its holder
//! may run (the job's timeout plus the backoff before the next attempt, plus a grace period);
//! a holder that died loses it then, and another server takes the next attempt. The first
//! `done.json` written is the outcome: nobody runs an occurrence that has one.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::spec::JobSpec;
use crate::{Error, Result};

/// Where the jobs' documents are.
pub const JOBS_PREFIX: &str = "_tarn/jobs";

/// A job's stored definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredJob {
    /// The job's name.
    pub name: String,
    /// What was declared.
    pub spec: JobSpec,
    /// `config` (tarn.toml) or `api` (`PUT /v1/jobs/{name}`).
    pub source: String,
    /// When it was last written.
    pub updated_at: DateTime<Utc>,
}

/// The lease of one attempt of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lease {
    /// The attempt, from 1.
    pub attempt: u32,
    /// The server running it (its node id).
    pub server: String,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// Until when the holder may run it; after that, another server may take the next attempt.
    pub expires_at: DateTime<Utc>,
}

/// How an attempt ended, written by its server when it did (an attempt without one whose
/// lease ran out was abandoned: its server stopped answering).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ended {
    /// `succeeded`, `failed` or `timed_out`.
    pub state: String,
    /// Rows written, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    /// What it wrote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What the records of a run say.
#[derive(Debug, Clone, Default)]
pub struct RunState {
    /// The leases of its attempts, by attempt.
    pub leases: Vec<Lease>,
    /// How attempts ended, by attempt.
    pub ended: std::collections::BTreeMap<u32, Ended>,
    /// Its outcome, once final.
    pub done: Option<Done>,
}

/// The final outcome of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Done {
    /// `succeeded` or `failed`.
    pub state: String,
    /// Attempts made.
    pub attempts: u32,
    /// When the run became final.
    pub finished_at: DateTime<Utc>,
    /// Rows written, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    /// The last attempt's error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The jobs' documents of one lake.
#[derive(Clone)]
pub struct JobStore {
    store: std::sync::Arc<dyn ObjectStore>,
}

fn definition_path(name: &str) -> Path {
    Path::from(format!("{JOBS_PREFIX}/definitions/{name}.json"))
}

/// `n` of `<prefix><n>.json`.
fn number(file: &str, prefix: &str) -> Option<u32> {
    file.strip_prefix(prefix)?.strip_suffix(".json")?.parse().ok()
}

fn run_prefix(job: &str, run_id: &str) -> Path {
    Path::from(format!("{JOBS_PREFIX}/runs/{job}/{run_id}"))
}

impl JobStore {
    /// The documents in `store` (the lake's root).
    pub fn new(store: std::sync::Arc<dyn ObjectStore>) -> Self {
        JobStore { store }
    }

    /// Every stored definition, by name, with its e-tag (or modification time) to tell
    /// changes.
    pub async fn definitions(&self) -> Result<HashMap<String, (StoredJob, String)>> {
        let prefix = Path::from(format!("{JOBS_PREFIX}/definitions"));
        let metas: Vec<_> = self.store.list(Some(&prefix)).try_collect().await?;
        let mut jobs = HashMap::new();
        for meta in metas {
            let Some(name) = meta.location.filename().and_then(|f| f.strip_suffix(".json")) else {
                continue;
            };
            let stamp = meta.e_tag.clone().unwrap_or_else(|| meta.last_modified.to_rfc3339());
            match self.read::<StoredJob>(&meta.location).await {
                Ok(Some(job)) => {
                    jobs.insert(name.to_string(), (job, stamp));
                }
                Ok(None) => {}
                Err(Error::Document(e)) => {
                    tracing::error!(job = name, error = %e, "a stored job definition does not read; the job is not scheduled")
                }
                Err(e) => return Err(e),
            }
        }
        Ok(jobs)
    }

    /// One stored definition.
    pub async fn definition(&self, name: &str) -> Result<Option<StoredJob>> {
        self.read(&definition_path(name)).await
    }

    /// Writes a definition (the last writer wins: definitions are declarations, not state).
    pub async fn put_definition(&self, job: &StoredJob) -> Result<()> {
        let body = serde_json::to_vec_pretty(job).map_err(|e| Error::Document(e.to_string()))?;
        self.store.put(&definition_path(&job.name), PutPayload::from(body)).await?;
        Ok(())
    }

    /// Removes a definition; true if there was one.
    pub async fn delete_definition(&self, name: &str) -> Result<bool> {
        match self.store.delete(&definition_path(name)).await {
            Ok(()) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// What the records of a run say: its leases, how its attempts ended, its outcome.
    pub async fn run_state(&self, job: &str, run_id: &str) -> Result<RunState> {
        let prefix = run_prefix(job, run_id);
        let metas: Vec<_> = self.store.list(Some(&prefix)).try_collect().await?;
        let mut state = RunState::default();
        for meta in metas {
            let Some(file) = meta.location.filename() else { continue };
            if file == "done.json" {
                state.done = self.read::<Done>(&meta.location).await?;
            } else if let Some(n) = number(file, "ended-") {
                if let Some(ended) = self.read::<Ended>(&meta.location).await? {
                    state.ended.insert(n, ended);
                }
            } else if number(file, "attempt-").is_some() {
                if let Some(lease) = self.read::<Lease>(&meta.location).await? {
                    state.leases.push(lease);
                }
            }
        }
        state.leases.sort_by_key(|l| l.attempt);
        Ok(state)
    }

    /// Records how an attempt ended (the first record stays).
    pub async fn end(&self, job: &str, run_id: &str, attempt: u32, ended: &Ended) -> Result<()> {
        let path = run_prefix(job, run_id).join(format!("ended-{attempt}.json"));
        self.create(&path, ended).await.map(|_| ())
    }

    /// The outcome of a run, if final.
    pub async fn done(&self, job: &str, run_id: &str) -> Result<Option<Done>> {
        self.read(&run_prefix(job, run_id).join("done.json")).await
    }

    /// Takes the lease of an attempt: true if this call created it, false if another server
    /// holds it already.
    pub async fn take(&self, job: &str, run_id: &str, lease: &Lease) -> Result<bool> {
        let path = run_prefix(job, run_id).join(format!("attempt-{}.json", lease.attempt));
        self.create(&path, lease).await
    }

    /// Records a run's outcome; false if one was recorded already.
    pub async fn finish(&self, job: &str, run_id: &str, done: &Done) -> Result<bool> {
        self.create(&run_prefix(job, run_id).join("done.json"), done).await
    }

    /// Deletes a job's run records (its leases and outcomes; the rows of `system.job_runs`
    /// stay).
    pub async fn delete_runs(&self, job: &str) -> Result<usize> {
        let prefix = Path::from(format!("{JOBS_PREFIX}/runs/{job}"));
        let paths: Vec<Path> =
            self.store.list(Some(&prefix)).map_ok(|m| m.location).try_collect().await?;
        for path in &paths {
            match self.store.delete(path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(paths.len())
    }

    /// Deletes the records of runs older than `before`: scheduled runs by their id (which
    /// sorts by time), keeping at least the newest `keep` of them; runs started by hand
    /// (`m-…`) once nothing of theirs was written after `before`.
    pub async fn prune(&self, job: &str, before: DateTime<Utc>, keep: usize) -> Result<usize> {
        let prefix = Path::from(format!("{JOBS_PREFIX}/runs/{job}"));
        let listing = self.store.list_with_delimiter(Some(&prefix)).await?;
        let (mut scheduled, manual): (Vec<Path>, Vec<Path>) = listing
            .common_prefixes
            .into_iter()
            .partition(|run| !run.filename().is_some_and(|id| id.starts_with("m-")));
        scheduled.sort();
        let cutoff = crate::runs::run_id_for(before);
        let doomed = scheduled.len().saturating_sub(keep);
        let mut removed = 0;
        for run in scheduled.into_iter().take(doomed) {
            if run.filename().is_some_and(|id| id < cutoff.as_str()) {
                self.delete_folder(&run).await?;
                removed += 1;
            }
        }
        for run in manual {
            let files: Vec<ObjectMeta> = self.store.list(Some(&run)).try_collect().await?;
            if files.iter().all(|meta| meta.last_modified < before) {
                self.delete_folder(&run).await?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    async fn delete_folder(&self, folder: &Path) -> Result<()> {
        let files: Vec<Path> =
            self.store.list(Some(folder)).map_ok(|m| m.location).try_collect().await?;
        for file in files {
            match self.store.delete(&file).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    async fn create<T: Serialize>(&self, path: &Path, value: &T) -> Result<bool> {
        let body = serde_json::to_vec(value).map_err(|e| Error::Document(e.to_string()))?;
        let options = PutOptions { mode: PutMode::Create, ..Default::default() };
        match self.store.put_opts(path, PutPayload::from(body), options).await {
            Ok(_) => Ok(true),
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    async fn read<T: DeserializeOwned>(&self, path: &Path) -> Result<Option<T>> {
        let bytes = match self.store.get(path).await {
            Ok(result) => result.bytes().await?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::Document(format!("{path} does not read as a job document: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    #[tokio::test]
    async fn prune_keeps_recent_runs_and_deletes_old_ones() {
        let store = JobStore::new(std::sync::Arc::new(object_store::memory::InMemory::new()));
        let now = Utc::now();
        let lease =
            |attempt| Lease { attempt, server: "n".into(), started_at: now, expires_at: now };
        let old = crate::runs::run_id_for(now - Duration::days(9));
        let older = crate::runs::run_id_for(now - Duration::days(10));
        let recent = crate::runs::run_id_for(now - Duration::hours(1));
        for run in [&old, &older, &recent, "m-manual"] {
            assert!(store.take("j", run, &lease(1)).await.unwrap());
        }
        // Nothing is older than 8 days by write time: the manual run stays; of the scheduled
        // ones, the two before the cutoff go, however many are kept.
        let removed = store.prune("j", now - Duration::days(8), 1).await.unwrap();
        assert_eq!(removed, 2);
        assert!(store.run_state("j", &recent).await.unwrap().leases.len() == 1);
        assert!(store.run_state("j", &old).await.unwrap().leases.is_empty());
        assert_eq!(store.run_state("j", "m-manual").await.unwrap().leases.len(), 1);
        // A manual run nothing was written for since the cutoff goes too.
        let removed = store.prune("j", Utc::now() + Duration::seconds(1), 5).await.unwrap();
        assert_eq!(removed, 1, "the manual run; the recent scheduled one is within `keep`");
        assert!(store.run_state("j", "m-manual").await.unwrap().leases.is_empty());
    }
}
