//! The ingest service: decode, log durably, acknowledge; commits happen behind.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::datatypes::SchemaRef;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tarn_catalog::{Catalog, TableName};
use tokio::sync::watch;

use crate::buffer::{Buffers, Committed, FlushConfig, Flusher};
use crate::idempotency::{Begin, KeyAnswer, KeyRecord, KeyStore};
use crate::maintenance::{Maintenance, MaintenanceConfig};
use crate::wal::{Recovered, Wal, WalConfig, WalRecord};
use crate::{decode, infer_schema, Error, Format, Result};

/// Bodies up to this size are decoded on the request's own task.
const INLINE_DECODE_BYTES: usize = 16 * 1024;

/// Settings of the ingest service.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct IngestConfig {
    /// Create unknown tables on first write, with a schema inferred from that write.
    pub auto_create: bool,
    /// Largest accepted request body, in bytes (after decompression).
    pub max_body_bytes: usize,
    /// The write-ahead log.
    pub wal: WalConfig,
    /// When buffers become Delta commits.
    pub flush: FlushConfig,
    /// How long an `Idempotency-Key` is remembered, in seconds.
    pub idempotency_ttl_secs: u64,
    /// How long `?wait=commit` waits for the commit before answering 202 anyway, in ms.
    pub wait_timeout_ms: u64,
    /// How long shutdown keeps trying to commit buffered records, in ms.
    pub shutdown_timeout_ms: u64,
    /// Background compaction, checkpoints and vacuum.
    pub maintenance: MaintenanceConfig,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            auto_create: true,
            max_body_bytes: 64 * 1024 * 1024,
            wal: WalConfig::default(),
            flush: FlushConfig::default(),
            idempotency_ttl_secs: 24 * 3600,
            wait_timeout_ms: 30_000,
            shutdown_timeout_ms: 30_000,
            maintenance: MaintenanceConfig::default(),
        }
    }
}

/// How a request wants to be treated.
#[derive(Debug, Clone, Default)]
pub struct IngestOptions {
    /// The `Idempotency-Key` header.
    pub key: Option<String>,
    /// `?wait=commit`: answer after the Delta commit that holds the records.
    pub wait_for_commit: bool,
}

/// The answer to an ingest request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IngestReceipt {
    /// The qualified table name.
    pub table: String,
    /// Records accepted (durable in the write-ahead log).
    pub accepted: usize,
    /// The request's sequence number in the write-ahead log.
    pub seq: u64,
    /// The Delta version that holds the records (only with `?wait=commit`, once committed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// True when this request created the table.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub created: bool,
    /// True when this answers a retry of an earlier request with the same `Idempotency-Key`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub replayed: bool,
}

/// The ingest service.
pub struct Ingestor {
    catalog: Arc<Catalog>,
    config: IngestConfig,
    buffers: Arc<Buffers>,
    wal: Arc<Wal>,
    keys: Arc<KeyStore>,
    flusher: Arc<Flusher>,
    stop: watch::Sender<bool>,
    flusher_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Serialises auto-creates of one table within this process.
    create_locks: Mutex<HashMap<TableName, Arc<tokio::sync::Mutex<()>>>>,
}

impl Ingestor {
    /// Opens the write-ahead log, commits what it holds that the lake does not have yet, and
    /// starts the flusher.
    pub async fn start(catalog: Arc<Catalog>, config: IngestConfig) -> Result<Arc<Self>> {
        let buffers = Arc::new(Buffers::new(config.flush.clone()));
        let wal_config = config.wal.clone();
        let sink = buffers.clone();
        let Recovered { wal, records } =
            tokio::task::spawn_blocking(move || Wal::open(wal_config, sink))
                .await
                .expect("opening the WAL does not panic")?;
        let wal = Arc::new(wal);
        let dir = config.wal.dir.clone();
        let node_id = node_id(&dir).map_err(|source| {
            Error::Wal(crate::wal::WalError::Io { dir: dir.display().to_string(), source })
        })?;
        let wal_keys: Vec<KeyRecord> = records
            .iter()
            .filter_map(|r| {
                r.key.as_ref().map(|key| KeyRecord {
                    table: r.table.to_string(),
                    key: key.clone(),
                    seq: r.seq,
                    accepted: r.rows,
                    received_ms: r.received_ms,
                })
            })
            .collect();
        let ttl = Duration::from_secs(config.idempotency_ttl_secs);
        let keys = Arc::new(KeyStore::open(&dir, ttl, wal_keys).map_err(|source| {
            Error::Wal(crate::wal::WalError::Io { dir: dir.display().to_string(), source })
        })?);
        let flusher = Arc::new(Flusher {
            buffers: buffers.clone(),
            catalog: catalog.clone(),
            wal: wal.clone(),
            keys: keys.clone(),
            maintenance: Arc::new(Maintenance::new(catalog.clone(), config.maintenance.clone())),
            node_id,
        });
        let (stop, stopped) = watch::channel(false);
        let ingestor = Arc::new(Ingestor {
            catalog,
            config,
            buffers,
            wal,
            keys,
            flusher: flusher.clone(),
            stop,
            flusher_task: Mutex::new(None),
            create_locks: Mutex::new(HashMap::new()),
        });
        ingestor.replay(records).await;
        let drain = Duration::from_millis(ingestor.config.shutdown_timeout_ms);
        let task = tokio::spawn(flusher.run(stopped, drain));
        *ingestor.flusher_task.lock().expect("flusher task") = Some(task);
        Ok(ingestor)
    }

    /// The settings in force.
    pub fn config(&self) -> &IngestConfig {
        &self.config
    }

    /// Puts the WAL records that the lake does not hold yet back into the buffers.
    async fn replay(&self, records: Vec<WalRecord>) {
        if records.is_empty() {
            return;
        }
        let mut by_table: BTreeMap<TableName, Vec<WalRecord>> = BTreeMap::new();
        for record in records {
            by_table.entry(record.table.clone()).or_default().push(record);
        }
        for (name, records) in by_table {
            let last = records.last().map(|r| r.seq).unwrap_or(0);
            let app_id = self.flusher.app_id(&name);
            let mut backoff = Duration::from_millis(200);
            let found = loop {
                let opened = match self.catalog.open(&name).await {
                    Ok((_, table)) => table
                        .txn_version(&app_id)
                        .await
                        .map(|v| Some((table, v)))
                        .map_err(Into::into),
                    Err(tarn_catalog::Error::TableNotFound { .. }) => Ok(None),
                    Err(e) => Err(e),
                };
                match opened {
                    Ok(found) => break found,
                    Err(e) => {
                        tracing::warn!(table = %name, error = %e, retry_in_ms = backoff.as_millis() as u64, "cannot read the table to replay the write-ahead log; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                    }
                }
            };
            let Some((table, committed)) = found else {
                tracing::error!(table = %name, records = records.len(), "the table no longer exists; dropping its write-ahead log records");
                self.release(&name, last);
                continue;
            };
            let committed = committed.unwrap_or(-1);
            let schema = match table.schema() {
                Ok(schema) => schema,
                Err(e) => {
                    tracing::error!(table = %name, error = %e, "cannot read the table schema to replay");
                    continue;
                }
            };
            let (mut replayed, mut rows) = (0, 0);
            for record in records.iter().filter(|r| r.seq as i64 > committed) {
                match decode(&record.body, record.format, schema.clone()) {
                    Ok(batches) => {
                        rows += batches.iter().map(|b| b.num_rows()).sum::<usize>();
                        replayed += 1;
                        self.buffers.push(&name, record.seq, batches, record.body.len() as u64);
                    }
                    Err(e) => {
                        tracing::error!(table = %name, seq = record.seq, error = %e, "a logged record no longer fits the table's schema; dropping it")
                    }
                }
            }
            if committed >= 0 {
                self.release(&name, committed as u64);
                let committed = Committed { seq: committed as u64, version: table.version() };
                self.buffers.set_committed(&name, committed);
            }
            tracing::info!(table = %name, replayed, rows, already_committed = records.len() - replayed, "replayed the write-ahead log");
        }
    }

    fn release(&self, table: &TableName, seq: u64) {
        let moved = self.wal.committed(table, seq);
        if let Err(e) = self.keys.persist(&moved) {
            tracing::error!(error = %e, "cannot keep idempotency keys of a deleted WAL segment");
        }
    }

    /// Decodes `body`, logs it durably and answers; the records reach the lake with the
    /// table's next flush (or before the answer, with `wait_for_commit`).
    ///
    /// Either every record of the body is accepted or none is.
    pub async fn ingest(
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
        let (schema, created) = self.schema_for(name, &body, format).await?;
        // Small bodies (single events, forms) decode faster than a hand-off to the blocking
        // pool takes; large ones decode there, in parallel, off the async workers.
        let batches = if body.len() <= INLINE_DECODE_BYTES {
            decode(&body, format, schema)?
        } else {
            let decode_body = body.clone();
            tokio::task::spawn_blocking(move || decode(&decode_body, format, schema))
                .await
                .expect("the decoder does not panic")?
        };
        let accepted = batches.iter().map(|b| b.num_rows()).sum();
        let received_ms = chrono::Utc::now().timestamp_millis();
        let record = WalRecord {
            seq: 0,
            table: name.clone(),
            format,
            key: options.key.clone(),
            received_ms,
            body,
            rows: accepted,
        };
        let seq = self.wal.append(record, batches).await?;
        if let Some(guard) = guard {
            guard.complete(KeyAnswer { seq, accepted, received_ms });
        }
        let mut receipt = IngestReceipt {
            table: table_key,
            accepted,
            seq,
            version: None,
            created,
            replayed: false,
        };
        if options.wait_for_commit {
            receipt.version = self.wait(name, seq).await;
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
            accepted: answer.accepted,
            seq: answer.seq,
            version: None,
            created: false,
            replayed: true,
        };
        if options.wait_for_commit {
            // The first request may have been committed by an earlier run of this node: ask
            // the lake before waiting for a commit that already happened.
            let app_id = self.flusher.app_id(name);
            if let Ok((_, table)) = self.catalog.open(name).await {
                if table.txn_version(&app_id).await?.is_some_and(|v| v >= answer.seq as i64) {
                    receipt.version = Some(table.version());
                    return Ok(receipt);
                }
            }
            receipt.version = self.wait(name, answer.seq).await;
        }
        Ok(receipt)
    }

    async fn wait(&self, name: &TableName, seq: u64) -> Option<u64> {
        let timeout = Duration::from_millis(self.config.wait_timeout_ms);
        tokio::time::timeout(timeout, self.buffers.committed(name, seq))
            .await
            .ok()
            .map(|c| c.version)
    }

    /// The table's schema, creating the table first when it is unknown and auto-create is on.
    async fn schema_for(
        &self,
        name: &TableName,
        body: &[u8],
        format: Format,
    ) -> Result<(SchemaRef, bool)> {
        match self.catalog.open_cached(name).await {
            Ok(table) => return Ok((table.schema()?, false)),
            Err(tarn_catalog::Error::TableNotFound { .. }) if self.config.auto_create => {}
            Err(tarn_catalog::Error::TableNotFound { .. }) => {
                return Err(Error::TableNotFound { name: name.to_string() })
            }
            Err(e) => return Err(e.into()),
        }
        let schema = infer_schema(body, format)?;
        // Requests racing to create the same table queue here; the first creates it.
        let lock = {
            let mut locks = self.create_locks.lock().expect("create locks");
            locks.retain(|_, lock| Arc::strong_count(lock) > 1);
            locks.entry(name.clone()).or_default().clone()
        };
        let _guard = lock.lock().await;
        match self.catalog.create(name, &schema, &[], "auto").await {
            Ok((_, table)) => Ok((table.schema()?, true)),
            // Another request or server created it a moment ago: use theirs.
            Err(tarn_catalog::Error::TableExists { .. }) => {
                Ok((self.catalog.open_cached(name).await?.schema()?, false))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Bytes in the write-ahead log.
    pub fn wal_bytes(&self) -> u64 {
        self.wal.bytes()
    }

    /// Stops at once, like a crash would: nothing buffered is committed, the write-ahead log
    /// is closed, and the next start replays what the lake does not hold.
    pub async fn shutdown_now(&self) {
        let task = self.flusher_task.lock().expect("flusher task").take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
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
}

/// This node's id, kept in the WAL directory so that it survives restarts: it names the Delta
/// `txn` application ids of this node's commits.
fn node_id(dir: &std::path::Path) -> std::io::Result<String> {
    let path = dir.join("node-id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => Ok(id.trim().to_string()),
        Ok(_) | Err(_) => {
            let id = uuid::Uuid::new_v4().simple().to_string();
            let aside = dir.join("node-id.new");
            std::fs::write(&aside, &id)?;
            std::fs::File::open(&aside)?.sync_all()?;
            std::fs::rename(&aside, &path)?;
            Ok(id)
        }
    }
}
