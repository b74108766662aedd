//! Async queries: started by `POST /v1/queries`, watched with `GET /v1/queries/{id}`, read
//! page by page from `GET /v1/queries/{id}/results`, cancelled with `DELETE`.
//!
//! A query waits for a slot like every other (the same [`crate::engine::Admission`]), runs
//! with the async time limit, and writes its result as one Parquet file under
//! `_tarn/results/<id>/` in the lake, streamed (bounded memory, whatever the result's size),
//! with its final status beside it (`query.json`), so another server sharing the lake, or
//! this one after a restart, can still answer for it. Results expire after
//! [`QueryConfig::results_ttl`](crate::QueryConfig); a sweeper deletes them.
//!
//! **Result reuse.** A query whose SQL text and the versions of every table it reads are
//! those of an earlier query whose result is still kept is answered from that result without
//! running (`"reused": true`), unless the caller opts out (`"reuse": false`). Queries that read
//! no table, or call functions whose value changes by itself (`now()`, `random()`), are never
//! reused. An ingest moves a table's version, so the next query runs afresh.

mod results;
mod status;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::Utc;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use tokio::task::AbortHandle;

use crate::engine::Ticket;
use crate::{Error, QueryEngine, Result};
pub use results::RESULTS_PREFIX;
use results::{check_id, lake_error, result_path, reuse_key, write_result};
pub use status::{columns_of, QueryError, QueryRequest, QueryState, QueryStatus, ResultColumn};

struct Tracked {
    status: Mutex<QueryStatus>,
    task: Mutex<Option<AbortHandle>>,
}

/// The async queries of one server.
pub struct QueryManager {
    engine: Arc<QueryEngine>,
    store: Arc<dyn ObjectStore>,
    tracked: Mutex<Tracking>,
}

#[derive(Default)]
struct Tracking {
    queries: HashMap<String, Arc<Tracked>>,
    order: VecDeque<String>,
    /// Reuse key → the id of the query whose result answers it.
    reuse: HashMap<u128, String>,
}

impl QueryManager {
    /// The async query service over `engine`; starts the sweeper that deletes expired
    /// results.
    pub fn start(engine: Arc<QueryEngine>) -> Arc<Self> {
        let store = engine.catalog().lake().store().clone();
        let manager =
            Arc::new(QueryManager { engine, store, tracked: Mutex::new(Tracking::default()) });
        let weak = Arc::downgrade(&manager);
        let every = (manager.engine.config().results_ttl / 4)
            .clamp(std::time::Duration::from_millis(200), std::time::Duration::from_secs(60));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(manager) = weak.upgrade() else { return };
                if let Err(e) = manager.sweep().await {
                    tracing::warn!(error = %e, "could not delete expired query results");
                }
            }
        });
        manager
    }

    /// Accepts a query: it is queued (or refused with [`Error::TooManyQueries`] when the
    /// queue is full) and runs in the background.
    pub fn submit(self: &Arc<Self>, request: QueryRequest) -> Result<QueryStatus> {
        if request.sql.trim().trim_end_matches(';').trim().is_empty() {
            return Err(Error::BadQuery("the SQL text is empty".into()));
        }
        let ticket = self.engine.admission().enter()?;
        let id = uuid::Uuid::new_v4().simple().to_string();
        let status = QueryStatus {
            id: id.clone(),
            state: QueryState::Queued,
            sql: request.sql.clone(),
            submitted_at: Utc::now(),
            started_at: None,
            finished_at: None,
            queued_ms: None,
            run_ms: None,
            rows: None,
            bytes_scanned: None,
            spilled_bytes: None,
            result_bytes: None,
            tables: Vec::new(),
            reused: false,
            reused_from: None,
            columns: None,
            expires_at: None,
            error: None,
            result_path: None,
        };
        let tracked =
            Arc::new(Tracked { status: Mutex::new(status.clone()), task: Mutex::new(None) });
        self.track(&id, tracked.clone());
        let manager = self.clone();
        let task = tokio::spawn({
            let tracked = tracked.clone();
            async move { manager.run(tracked, request, ticket).await }
        });
        *tracked.task.lock().expect("task lock") = Some(task.abort_handle());
        tracing::info!(query = %id, "query submitted");
        Ok(status)
    }

    fn track(&self, id: &str, tracked: Arc<Tracked>) {
        let mut tracking = self.tracked.lock().expect("tracking lock");
        let max = self.engine.config().max_tracked_queries.max(1);
        // Forget the oldest finished queries beyond the bound (their results stay in the
        // lake until they expire, and their status is still read from there).
        while tracking.queries.len() >= max {
            let Some(position) = tracking.order.iter().position(|old| {
                tracking
                    .queries
                    .get(old)
                    .is_none_or(|t| t.status.lock().expect("status lock").state.is_finished())
            }) else {
                break;
            };
            let old = tracking.order.remove(position).expect("position is in range");
            tracking.queries.remove(&old);
            tracking.reuse.retain(|_, owner| *owner != old);
        }
        tracking.queries.insert(id.to_string(), tracked);
        tracking.order.push_back(id.to_string());
    }

    async fn run(self: Arc<Self>, tracked: Arc<Tracked>, request: QueryRequest, ticket: Ticket) {
        let id = tracked.status.lock().expect("status lock").id.clone();
        // Other servers sharing the lake see the query from the start.
        let queued = tracked.status.lock().expect("status lock").clone();
        self.persist_best_effort(&queued).await;
        let _permit = ticket.admit().await;
        let started = Instant::now();
        let running = {
            let mut status = tracked.status.lock().expect("status lock");
            if status.state != QueryState::Queued {
                return; // cancelled while queued
            }
            let now = Utc::now();
            status.state = QueryState::Running;
            status.queued_ms = Some((now - status.submitted_at).num_milliseconds().max(0) as u64);
            status.started_at = Some(now);
            status.clone()
        };
        self.persist_best_effort(&running).await;
        let limit = self.engine.config().async_timeout;
        let mut record = crate::observe::QueryRecord::start("async");
        let outcome =
            match tokio::time::timeout(limit, self.execute(&id, &tracked, &request, &mut record))
                .await
            {
                Ok(outcome) => outcome,
                Err(_) => Err(Error::Timeout(limit)),
            };
        record.finish(match &outcome {
            Ok(()) => crate::observe::Outcome::Succeeded,
            Err(e) => crate::observe::Outcome::of(e),
        });
        let final_status = {
            let mut status = tracked.status.lock().expect("status lock");
            if status.state != QueryState::Running {
                return; // cancelled meanwhile
            }
            status.finished_at = Some(Utc::now());
            status.run_ms = Some(started.elapsed().as_millis() as u64);
            match outcome {
                Ok(()) => status.state = QueryState::Succeeded,
                Err(e) => {
                    status.state = QueryState::Failed;
                    status.error = Some(QueryError::of(&e));
                }
            }
            status.clone()
        };
        tracing::info!(
            query = %id,
            state = ?final_status.state,
            rows = final_status.rows,
            reused = final_status.reused,
            ms = final_status.run_ms,
            "query finished"
        );
        if final_status.state == QueryState::Failed {
            // A partial result is of no use to anyone.
            let _ = self.delete_result(&id).await;
        }
        self.persist_best_effort(&final_status).await;
    }

    /// Plans, then answers from an earlier result or runs the query into a Parquet file.
    async fn execute(
        &self,
        id: &str,
        tracked: &Tracked,
        request: &QueryRequest,
        record: &mut crate::observe::QueryRecord,
    ) -> Result<()> {
        let planned = self.engine.plan(&request.sql).await?;
        record.planned(&planned);
        let columns = columns_of(&planned.plan.schema());
        let key = (planned.deterministic && !planned.reads.is_empty())
            .then(|| reuse_key(&request.sql, &planned.reads));
        tracked.status.lock().expect("status lock").tables = planned.reads.clone();
        if let (Some(key), true) = (key, request.reuse) {
            if let Some(earlier) = self.reusable(key) {
                let mut status = tracked.status.lock().expect("status lock");
                status.reused = true;
                status.reused_from = Some(earlier.id.clone());
                status.rows = earlier.rows;
                status.bytes_scanned = Some(0);
                status.result_bytes = earlier.result_bytes;
                status.columns = Some(columns);
                status.result_path = earlier.result_path;
                // The result is the earlier query's, and goes when that one's does.
                status.expires_at = earlier.expires_at;
                return Ok(());
            }
        }
        let path = result_path(id);
        let mut stream = planned.execute()?;
        let (rows, bytes) = write_result(self.store.clone(), &path, &mut stream).await?;
        record.rows(rows);
        let ttl = chrono::Duration::from_std(self.engine.config().results_ttl)
            .unwrap_or(chrono::Duration::days(1));
        {
            let mut status = tracked.status.lock().expect("status lock");
            status.rows = Some(rows);
            status.bytes_scanned = Some(planned.bytes_scanned());
            status.spilled_bytes = Some(planned.spilled_bytes());
            status.result_bytes = Some(bytes);
            status.columns = Some(columns);
            status.result_path = Some(path.to_string());
            status.expires_at = Some(Utc::now() + ttl);
        }
        if let Some(key) = key {
            self.tracked.lock().expect("tracking lock").reuse.insert(key, id.to_string());
        }
        Ok(())
    }

    /// The status of the earlier query that can answer `key`, if its result is still kept.
    fn reusable(&self, key: u128) -> Option<QueryStatus> {
        let tracking = self.tracked.lock().expect("tracking lock");
        let owner = tracking.reuse.get(&key)?;
        let status = tracking.queries.get(owner)?.status.lock().expect("status lock").clone();
        let fresh =
            status.expires_at.is_some_and(|at| at > Utc::now() + chrono::Duration::seconds(5));
        (status.state == QueryState::Succeeded && fresh && status.result_path.is_some())
            .then_some(status)
    }

    /// The status of query `id`: from memory, or from the lake (a query of another server
    /// sharing it, or of this one before a restart).
    pub async fn status(&self, id: &str) -> Result<QueryStatus> {
        check_id(id)?;
        let tracked = self.tracked.lock().expect("tracking lock").queries.get(id).cloned();
        if let Some(tracked) = tracked {
            return Ok(tracked.status.lock().expect("status lock").clone());
        }
        let path = Path::from(format!("{RESULTS_PREFIX}/{id}/query.json"));
        let bytes = match self.store.get(&path).await {
            Ok(got) => got.bytes().await.map_err(lake_error)?,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(Error::QueryNotFound(id.to_string()))
            }
            Err(e) => return Err(lake_error(e)),
        };
        // Tarn wrote it; a document that does not parse is damage, logged as such.
        let status: QueryStatus = serde_json::from_slice(&bytes).map_err(|source| {
            Error::Catalog(tarn_catalog::Error::Document { path: path.to_string(), source })
        })?;
        if status.expires_at.is_some_and(|at| at <= Utc::now()) {
            return Err(Error::QueryNotFound(id.to_string()));
        }
        Ok(status)
    }

    /// Cancels a queued or running query; for a finished one, deletes its result now.
    /// Answers the status after the change.
    pub async fn cancel(&self, id: &str) -> Result<QueryStatus> {
        let status = self.status(id).await?;
        let tracked = self.tracked.lock().expect("tracking lock").queries.get(id).cloned();
        if let (false, Some(tracked)) = (status.state.is_finished(), &tracked) {
            let cancelled = {
                let mut status = tracked.status.lock().expect("status lock");
                if !status.state.is_finished() {
                    status.state = QueryState::Cancelled;
                    status.finished_at = Some(Utc::now());
                }
                status.clone()
            };
            if let Some(task) = tracked.task.lock().expect("task lock").take() {
                task.abort(); // drops the running stream: DataFusion stops
            }
            tracing::info!(query = %id, "query cancelled");
            self.delete_result(id).await?;
            self.persist(&cancelled).await?;
            return Ok(cancelled);
        }
        if !status.state.is_finished() {
            return Err(Error::NotReady(format!(
                "query '{id}' is {} on another server sharing the lake; cancel it there",
                if status.state == QueryState::Queued { "queued" } else { "running" }
            )));
        }
        // Finished: its result goes now (a reused result stays with the query that made it).
        {
            let mut tracking = self.tracked.lock().expect("tracking lock");
            tracking.queries.remove(id);
            tracking.order.retain(|q| q != id);
            tracking.reuse.retain(|_, owner| owner != id);
        }
        self.delete_result(id).await?;
        let mut gone = status;
        gone.expires_at = Some(Utc::now());
        gone.result_path = None;
        Ok(gone)
    }

    /// Deletes expired results: of the queries this server tracks, and any other under
    /// `_tarn/results/` older than the retention (left by a restart or another server).
    async fn sweep(&self) -> Result<()> {
        let now = Utc::now();
        let expired: Vec<String> = {
            let mut tracking = self.tracked.lock().expect("tracking lock");
            let expired: Vec<String> = tracking
                .queries
                .iter()
                .filter(|(_, t)| {
                    let status = t.status.lock().expect("status lock");
                    status.state.is_finished() && status.expires_at.is_some_and(|at| at <= now)
                })
                .map(|(id, _)| id.clone())
                .collect();
            for id in &expired {
                tracking.queries.remove(id);
                tracking.reuse.retain(|_, owner| owner != id);
            }
            tracking.order.retain(|id| !expired.contains(id));
            expired
        };
        for id in &expired {
            self.delete_result(id).await?;
            tracing::info!(query = %id, "deleted the expired result of a query");
        }
        let ttl = chrono::Duration::from_std(self.engine.config().results_ttl)
            .unwrap_or(chrono::Duration::days(1));
        let prefix = Path::from(RESULTS_PREFIX);
        let stale: Vec<_> = self
            .store
            .list(Some(&prefix))
            .try_filter(|meta| futures::future::ready(meta.last_modified + ttl <= now))
            .try_collect()
            .await
            .map_err(lake_error)?;
        for meta in stale {
            let id = meta.location.parts().nth(2).map(|p| p.as_ref().to_string());
            let live = id.as_ref().is_some_and(|id| {
                self.tracked.lock().expect("tracking lock").queries.contains_key(id)
            });
            if !live {
                let _ = self.store.delete(&meta.location).await;
            }
        }
        Ok(())
    }
}
