//! The ingest service: decode, check the contract, log durably, acknowledge; commits happen
//! behind.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::array::RecordBatch;
use bytes::Bytes;
use chrono::Utc;
use tarn_catalog::TableName;
use tokio::sync::watch;

use crate::buffer::{Buffers, Flusher};
use crate::contract::{self, Rejection};
use crate::idempotency::{Begin, KeyAnswer, KeyRecord, KeyStore};
use crate::maintenance::Maintenance;
use crate::plan::{TablePlan, Tables};
use crate::prepare::{prepare, Prepared};
use crate::replay::Pending;
use crate::wal::{Counts, Recovered, Wal, WalPart, WalRecord};
use crate::{infer_schema, Error, Format, IngestConfig, IngestOptions, IngestReceipt, Result};

/// Bodies up to this size are decoded on the request's own task.
const INLINE_DECODE_BYTES: usize = 16 * 1024;

/// How many rejection reasons an answer lists.
const ERRORS_SHOWN: usize = 5;

/// The ingest service.
pub struct Ingestor {
    pub(crate) tables: Arc<Tables>,
    config: IngestConfig,
    pub(crate) buffers: Arc<Buffers>,
    pub(crate) wal: Arc<Wal>,
    pub(crate) keys: Arc<KeyStore>,
    pub(crate) flusher: Arc<Flusher>,
    /// Records of the log waiting to be replayed.
    pub(crate) pending: Pending,
    stop: watch::Sender<bool>,
    flusher_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    replay_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// Ingest whose write-ahead log directory is open and locked, not running yet: what
/// [`Ingestor::open`] gives. Everything kept in the directory (the node id, the spool of
/// uploads) is touched only from here on, so a second process pointed at the same directory
/// fails before it changes anything.
pub struct OpenIngest {
    config: IngestConfig,
    buffers: Arc<Buffers>,
    wal: Arc<Wal>,
    records: Vec<WalRecord>,
    keys: Arc<KeyStore>,
    node_id: String,
}

impl OpenIngest {
    /// This node's id, kept in the log directory (`node-id`): it names the Delta `txn`
    /// application ids of this node's commits.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Starts replaying what the log holds that the lake does not have yet (in the
    /// background: see [`crate::replay`]) and starts the flusher.
    pub async fn start(self, tables: Arc<Tables>) -> Result<Arc<Ingestor>> {
        Ingestor::run(self, tables)
    }
}

impl Ingestor {
    /// Opens and locks the write-ahead log directory, reads the log back and this node's id.
    /// Needs local disk only, so it succeeds while storage is down.
    pub async fn open(config: IngestConfig) -> Result<OpenIngest> {
        let buffers = Arc::new(Buffers::new(config.flush.clone()));
        let wal_config = config.wal.clone();
        let sink = buffers.clone();
        let Recovered { wal, records } =
            tokio::task::spawn_blocking(move || Wal::open(wal_config, sink))
                .await
                .map_err(|e| Error::Internal(format!("opening the WAL failed: {e}")))??;
        let wal = Arc::new(wal);
        let dir = config.wal.dir.clone();
        let io = |source| {
            Error::Wal(crate::wal::WalError::Io { dir: dir.display().to_string(), source })
        };
        let node_id = crate::wal::node_id(&dir)?;
        let wal_keys: Vec<KeyRecord> = records.iter().filter_map(WalRecord::key_record).collect();
        let ttl = Duration::from_secs(config.idempotency_ttl_secs);
        let keys = Arc::new(KeyStore::open(&dir, ttl, wal_keys).map_err(io)?);
        Ok(OpenIngest { config, buffers, wal, records, keys, node_id })
    }

    /// [`Ingestor::open`], then [`OpenIngest::start`].
    pub async fn start(tables: Arc<Tables>, config: IngestConfig) -> Result<Arc<Self>> {
        Self::open(config).await?.start(tables).await
    }

    fn run(open: OpenIngest, tables: Arc<Tables>) -> Result<Arc<Self>> {
        let OpenIngest { config, buffers, wal, records, keys, node_id } = open;
        if !records.is_empty() {
            tracing::info!(
                records = records.len(),
                "the write-ahead log holds records to check against the lake"
            );
        }
        let pending = Pending::new(records);
        tables.replaying(pending.tables());
        for table in pending.tables() {
            buffers.hold(&table);
        }
        let catalog = tables.catalog().clone();
        buffers.start_encoding(catalog.clone());
        let flusher = Arc::new(Flusher {
            buffers: buffers.clone(),
            catalog: catalog.clone(),
            tables: tables.clone(),
            wal: wal.clone(),
            keys: keys.clone(),
            maintenance: Arc::new(Maintenance::new(
                catalog,
                config.maintenance.clone(),
                tables.events().clone(),
            )),
            node_id,
            stats: tables.stats().clone(),
        });
        let (stop, stopped) = watch::channel(false);
        let ingestor = Arc::new(Ingestor {
            tables,
            config,
            buffers,
            wal,
            keys,
            flusher: flusher.clone(),
            pending,
            stop,
            flusher_task: Mutex::new(None),
            replay_task: Mutex::new(None),
        });
        let replaying = ingestor.clone();
        let replay_stop = stopped.clone();
        let replay = tokio::spawn(async move { replaying.replay(replay_stop).await });
        *ingestor.replay_task.lock().expect("replay task") = Some(replay);
        let drain = Duration::from_millis(ingestor.config.shutdown_timeout_ms);
        let task = tokio::spawn(flusher.run(stopped, drain));
        *ingestor.flusher_task.lock().expect("flusher task") = Some(task);
        Ok(ingestor)
    }

    /// The settings in force.
    pub fn config(&self) -> &IngestConfig {
        &self.config
    }

    /// This node's id (it names the Delta `txn` application ids of its commits).
    pub fn node(&self) -> String {
        self.flusher.node_id.clone()
    }

    /// The tables it writes through.
    pub fn tables(&self) -> &Arc<Tables> {
        &self.tables
    }

    /// Decodes `body`, checks it against the table's contract, logs it durably and answers;
    /// the records reach the lake with the table's next flush (or before the answer, with
    /// `wait_for_commit`).
    ///
    /// A table with a declared contract takes the records that fit and sends the others to
    /// `<table>_rejected`; a table with an inferred schema takes every record of the body or,
    /// when one does not fit, none.
    pub async fn ingest(
        &self,
        name: &TableName,
        body: Bytes,
        format: Format,
        options: IngestOptions,
    ) -> Result<IngestReceipt> {
        let receipt = self.ingest_body(name, body, format, options).await;
        let events = self.tables.events();
        match &receipt {
            Ok(_) => events.accepted(),
            Err(e) if tarn_lake::Classify::kind(e) == tarn_lake::ErrorKind::Unavailable => {
                events.refused()
            }
            Err(_) => {}
        }
        receipt
    }

    async fn ingest_body(
        &self,
        name: &TableName,
        body: Bytes,
        format: Format,
        options: IngestOptions,
    ) -> Result<IngestReceipt> {
        let table_key = name.to_string();
        let guard = match &options.key {
            None => None,
            Some(key) => loop {
                match self.keys.begin(&table_key, key) {
                    Begin::Seen(answer) => return self.replayed(name, answer, &options).await,
                    Begin::Wait(mut first) => {
                        let answer = first.wait_for(|a| a.is_some()).await.ok().and_then(|a| *a);
                        if let Some(answer) = answer {
                            return self.replayed(name, answer, &options).await;
                        }
                        // The first request failed; try again as the first.
                    }
                    Begin::Proceed(guard) => break Some(guard),
                }
            },
        };
        let infer = async { Ok(infer_schema(&body, format)?) };
        let (plan, created) = self.tables.plan_for_write(name, infer).await?;
        self.buffers.configure(name, plan.flush(&self.config.flush));
        let received = Utc::now();
        let prepared = {
            let (plan, body) = (plan.clone(), body.clone());
            if body.len() <= INLINE_DECODE_BYTES {
                prepare(&plan, &body, format)?
            } else {
                tokio::task::spawn_blocking(move || prepare(&plan, &body, format))
                    .await
                    .map_err(|e| Error::Internal(format!("decoding failed: {e}")))??
            }
        };
        let Prepared { valid, rejected } = prepared;
        let mut counts = Counts {
            accepted: valid.iter().map(|b| b.num_rows()).sum(),
            rejected: rejected.len(),
            duplicates: 0,
        };
        let (valid, duplicates, admitted) = self.tables.admit(&plan, valid).await?;
        counts.duplicates = duplicates;
        counts.accepted -= duplicates;
        let errors: Vec<String> =
            rejected.iter().take(ERRORS_SHOWN).map(Rejection::summary).collect();
        if let Some(first) = errors.first() {
            self.tables.events().emit(crate::IngestEvent::RowsRejected {
                table: name.clone(),
                rows: rejected.len() as u64,
                first_error: first.clone(),
                source: options.source.to_string(),
            });
        }
        let parts = {
            let plan = plan.clone();
            let at = received.timestamp_micros();
            let raw_payload = plan.raw.as_ref().map(|_| {
                let payload = options.original.clone().unwrap_or_else(|| body.clone());
                (payload, options.content_type.clone())
            });
            let source = options.source.to_string();
            let logged_body = (format, body.clone());
            // Only rows logged as Arrow IPC (a contract's checked rows, rejections, raw
            // payloads) cost CPU here; a logged body is handed over as it is.
            let encodes_ipc = plan.contract.is_some() || plan.raw.is_some() || !rejected.is_empty();
            let encode =
                move || parts(&plan, valid, logged_body, &rejected, raw_payload, &source, at);
            if body.len() <= INLINE_DECODE_BYTES || !encodes_ipc {
                encode()
            } else {
                tokio::task::spawn_blocking(encode)
                    .await
                    .unwrap_or_else(|e| Err(arrow::error::ArrowError::ExternalError(Box::new(e))))
            }
        };
        let parts = match parts {
            Ok(parts) => parts,
            Err(e) => {
                self.tables.unique_keys().forget(name, &admitted);
                return Err(tarn_lake::Error::from(e).into());
            }
        };
        let part_tables: Vec<TableName> = parts.iter().map(|p| p.table.clone()).collect();
        let record = WalRecord {
            seq: 0,
            table: name.clone(),
            key: options.key.clone(),
            received_ms: received.timestamp_millis(),
            counts,
            parts,
        };
        // Logging goes on when the client goes away: a record handed to the log may become
        // durable, so its key's answer is recorded (or its unique keys released) either way,
        // never dropped with the request (a retry would log it again).
        let logging = {
            let (wal, tables, name) = (self.wal.clone(), self.tables.clone(), name.clone());
            let received_ms = received.timestamp_millis();
            tokio::spawn(async move {
                let logged = wal.append(record).await;
                match (&logged, guard) {
                    (Ok(seq), Some(guard)) => {
                        guard.complete(KeyAnswer { seq: *seq, counts, received_ms })
                    }
                    (Ok(_), None) => {}
                    (Err(_), _) => tables.unique_keys().forget(&name, &admitted),
                }
                logged
            })
        };
        let seq = logging
            .await
            .map_err(|e| Error::Internal(format!("logging the record failed: {e}")))??;
        self.tables.stats().received(
            name,
            counts.accepted as u64,
            counts.rejected as u64,
            body.len() as u64,
        );
        let mut receipt = IngestReceipt {
            table: table_key,
            accepted: counts.accepted,
            rejected: counts.rejected,
            duplicates: counts.duplicates,
            errors,
            seq,
            version: None,
            created,
            replayed: false,
        };
        if options.wait_for_commit {
            receipt.version = self.wait(name, &part_tables, seq).await;
        }
        Ok(receipt)
    }

    async fn replayed(
        &self,
        name: &TableName,
        answer: KeyAnswer,
        options: &IngestOptions,
    ) -> Result<IngestReceipt> {
        let mut receipt = IngestReceipt {
            table: name.to_string(),
            accepted: answer.counts.accepted,
            rejected: answer.counts.rejected,
            duplicates: answer.counts.duplicates,
            errors: Vec::new(),
            seq: answer.seq,
            version: None,
            created: false,
            replayed: true,
        };
        if options.wait_for_commit {
            // The first request may have been committed by an earlier run of this node: ask
            // the lake before waiting for a commit that already happened.
            let app_id = self.flusher.app_id(name);
            if let Ok((_, table)) = self.tables.catalog().open(name).await {
                if table.txn_version(&app_id).await?.is_some_and(|v| v >= answer.seq as i64) {
                    receipt.version = Some(table.version());
                    return Ok(receipt);
                }
            }
            receipt.version = self.wait(name, std::slice::from_ref(name), answer.seq).await;
        }
        Ok(receipt)
    }

    /// Waits until record `seq` is committed to every table in `tables`; answers the version
    /// of `name` that holds it (its current version, when the record had no rows for it).
    async fn wait(&self, name: &TableName, tables: &[TableName], seq: u64) -> Option<u64> {
        let timeout = Duration::from_millis(self.config.wait_timeout_ms);
        let all = futures::future::join_all(tables.iter().map(|t| self.buffers.committed(t, seq)));
        let committed = tokio::time::timeout(timeout, all).await.ok()?;
        match tables.iter().position(|t| t == name) {
            Some(i) => Some(committed[i].version),
            None => Some(self.tables.catalog().table_as_known(name).await.ok()?.version()),
        }
    }

    /// True when a browser page of `origin` may post to `name` (CORS).
    pub async fn origin_allowed(&self, name: &TableName, origin: &str) -> bool {
        let qualified = name.to_string();
        let granted = self.config.cors.iter().any(|grant| {
            grant.origins.iter().any(|o| o == origin)
                && grant.tables.iter().any(|t| t == "*" || *t == qualified)
        });
        granted
            || match self.tables.plan(name).await {
                Ok(plan) => plan.definition.spec.forms.allowed_origins.iter().any(|o| o == origin),
                Err(_) => false,
            }
    }

    /// Bytes in the write-ahead log.
    pub fn wal_bytes(&self) -> u64 {
        self.wal.bytes()
    }

    /// What ingest did since the start, per table, and the write-ahead log's depth now.
    pub fn status(&self) -> IngestStatus {
        let tables = self
            .tables
            .stats()
            .snapshot()
            .into_iter()
            .map(|(name, stats)| TableStatus {
                buffered: self.buffers.pending_rows_of(&name) as u64,
                table: name.to_string(),
                stats,
            })
            .collect();
        IngestStatus {
            tables,
            wal: WalStatus {
                bytes: self.wal.bytes(),
                segments: self.wal.segments() as u64,
                oldest_uncommitted_age_seconds: self
                    .buffers
                    .oldest_pending()
                    .map(|age| age.as_secs_f64()),
            },
        }
    }

    /// Stops at once, like a crash would: nothing buffered is committed, the write-ahead log
    /// is closed, and the next start replays what the lake does not hold.
    pub async fn shutdown_now(&self) {
        // Abort, never signal: a signalled flusher would start committing what it buffers.
        for task in [&self.replay_task, &self.flusher_task] {
            let task = task.lock().expect("background task").take();
            if let Some(task) = task {
                task.abort();
                let _ = task.await;
            }
        }
        let wal = self.wal.clone();
        let _ = tokio::task::spawn_blocking(move || wal.close()).await;
    }

    /// Stops taking records, commits what is buffered (until the shutdown timeout) and closes
    /// the write-ahead log. What could not be committed stays in the log for the next start.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let task = self.flusher_task.lock().expect("flusher task").take();
        if let Some(task) = task {
            let _ = task.await;
        }
        let wal = self.wal.clone();
        let _ = tokio::task::spawn_blocking(move || wal.close()).await;
        self.keys.expire();
    }

    /// Why this ingest service is not ready for traffic yet (its write-ahead log is being
    /// replayed into the lake); `None` when it is.
    pub fn not_ready(&self) -> Option<String> {
        self.pending.reason()
    }
}

/// What `GET /v1/ingest` shows: [`Ingestor::status`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct IngestStatus {
    /// Per table ingest wrote to since the start, by name.
    pub tables: Vec<TableStatus>,
    /// The write-ahead log now.
    pub wal: WalStatus,
}

/// One table's ingest since the start.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TableStatus {
    /// The qualified name.
    pub table: String,
    /// Records, rejected rows, bytes and commits since the start; the latest commit.
    #[serde(flatten)]
    pub stats: crate::TableStats,
    /// Rows durable in the log and buffered for the table's next commit.
    pub buffered: u64,
}

/// The write-ahead log's depth.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WalStatus {
    /// Bytes in its segments.
    pub bytes: u64,
    /// Its segment files.
    pub segments: u64,
    /// How long the oldest record not yet committed has waited; `None` when all are.
    pub oldest_uncommitted_age_seconds: Option<f64>,
}

/// The WAL parts of a request: its rows (for tables without a contract, the body they came
/// from), its rejected rows, its raw payload.
fn parts(
    plan: &TablePlan,
    valid: Vec<RecordBatch>,
    (format, body): (Format, Bytes),
    rejected: &[Rejection],
    raw: Option<(Bytes, Option<String>)>,
    source: &str,
    at_micros: i64,
) -> std::result::Result<Vec<WalPart>, arrow::error::ArrowError> {
    let mut parts = Vec::with_capacity(3);
    if valid.iter().any(|b| b.num_rows() > 0) {
        parts.push(match plan.contract {
            None => WalPart::body(plan.name.clone(), format, body, valid),
            Some(_) => WalPart::new(plan.name.clone(), valid)?,
        });
    }
    if let (Some(table), false) = (&plan.rejected, rejected.is_empty()) {
        parts.push(WalPart::new(
            table.clone(),
            vec![contract::rejected_batch(rejected, source, at_micros)],
        )?);
    }
    if let (Some(table), Some((payload, content_type))) = (&plan.raw, raw) {
        let text = String::from_utf8_lossy(&payload);
        let batch =
            contract::raw_batch(Some(&text), None, content_type.as_deref(), source, at_micros);
        parts.push(WalPart::new(table.clone(), vec![batch])?);
    }
    Ok(parts)
}
