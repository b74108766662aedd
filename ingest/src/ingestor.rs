//! The ingest service: decode, check the contract, log durably, acknowledge; commits happen
//! behind.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::compute::filter_record_batch;
use arrow::datatypes::SchemaRef;
use bytes::Bytes;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use tarn_catalog::{companion, Catalog, ColumnType, Contract, TableDefinition, TableName};
use tokio::sync::watch;

use crate::buffer::{Buffers, Committed, FlushConfig, Flusher};
use crate::contract::{self, Rejection};
use crate::idempotency::{Begin, KeyAnswer, KeyRecord, KeyStore};
use crate::maintenance::{Maintenance, MaintenanceConfig};
use crate::unique::UniqueKeys;
use crate::wal::{Counts, Recovered, Wal, WalConfig, WalPart, WalRecord};
use crate::{decode, infer_schema, Error, Format, Result};

/// Bodies up to this size are decoded on the request's own task.
const INLINE_DECODE_BYTES: usize = 16 * 1024;

/// How many rejection reasons an answer lists.
const ERRORS_SHOWN: usize = 5;

/// Settings of the ingest service.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct IngestConfig {
    /// Create unknown tables on first write, with a schema inferred from that write.
    pub auto_create: bool,
    /// Largest accepted request body, in bytes (after decompression).
    pub max_body_bytes: usize,
    /// Largest accepted file upload, in bytes.
    pub max_upload_bytes: u64,
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
    /// Most keys the unique-key index of one table holds.
    pub unique_key_max: usize,
    /// The drop zone (`_tarn/landing/<table>/`).
    pub dropzone: crate::dropzone::DropZoneConfig,
    /// Origins allowed to post to tables besides each table's `forms.allowed_origins`: those
    /// of publishable API keys.
    pub cors: Vec<CorsGrant>,
}

/// Browser pages from `origins` may post to `tables` (qualified names, or `*` for all).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CorsGrant {
    /// Qualified table names, or `*`.
    pub tables: Vec<String>,
    /// Origins such as `https://www.example.com`.
    pub origins: Vec<String>,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            auto_create: true,
            max_body_bytes: 64 * 1024 * 1024,
            max_upload_bytes: 16 * 1024 * 1024 * 1024,
            wal: WalConfig::default(),
            flush: FlushConfig::default(),
            idempotency_ttl_secs: 24 * 3600,
            wait_timeout_ms: 30_000,
            shutdown_timeout_ms: 30_000,
            maintenance: MaintenanceConfig::default(),
            unique_key_max: 20_000_000,
            cors: Vec::new(),
            dropzone: crate::dropzone::DropZoneConfig::default(),
        }
    }
}

/// Where records came from, as `<table>_rejected` and `<table>_raw` record it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Source {
    /// A request body on `/v1/ingest`.
    #[default]
    Http,
    /// A browser form on `/v1/ingest`.
    Form,
    /// A file (uploaded, loaded by `tarn load`, or dropped), by name.
    File(String),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Http => f.write_str("http"),
            Source::Form => f.write_str("form"),
            Source::File(name) => write!(f, "file:{name}"),
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
    /// Where the records come from.
    pub source: Source,
    /// The request's content type, kept with the raw payload.
    pub content_type: Option<String>,
    /// The payload as received, when the body handed to [`Ingestor::ingest`] is a translation
    /// of it (a form's fields as a JSON record): what `raw_backup` keeps.
    pub original: Option<Bytes>,
}

/// The answer to an ingest request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IngestReceipt {
    /// The qualified table name.
    pub table: String,
    /// Records accepted (durable in the write-ahead log).
    pub accepted: usize,
    /// Records that broke the table's contract; they are in `<table>_rejected`.
    pub rejected: usize,
    /// Records left out because their unique key is in the table already.
    pub duplicates: usize,
    /// The first few reasons for rejected records.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
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

/// What ingest knows about one table, for one revision of its definition.
pub struct TablePlan {
    /// The table.
    pub name: TableName,
    /// Its definition.
    pub definition: Arc<TableDefinition>,
    /// The Delta table's schema (what undeclared tables decode against).
    pub schema: SchemaRef,
    /// The compiled contract, for declared tables.
    pub contract: Option<Contract>,
    /// Declared `json` columns.
    pub json_columns: Vec<String>,
    /// `<table>_rejected`, for declared tables.
    pub rejected: Option<TableName>,
    /// `<table>_raw`, with `raw_backup`.
    pub raw: Option<TableName>,
}

impl TablePlan {
    /// The declared type of `column`, if declared.
    pub fn column_type(&self, column: &str) -> Option<ColumnType> {
        self.definition.spec.columns.iter().find(|c| c.name == column).map(|c| c.data_type)
    }
}

/// What a request (or a chunk of a file) will append, before it is logged or committed.
#[derive(Debug, Default)]
pub(crate) struct Prepared {
    /// Rows for the table, in its schema.
    pub valid: Vec<RecordBatch>,
    /// Rows for `<table>_rejected`.
    pub rejected: Vec<Rejection>,
}

impl Prepared {
    pub(crate) fn extend(&mut self, other: Prepared) {
        self.valid.extend(other.valid);
        self.rejected.extend(other.rejected);
    }
}

/// The ingest service.
pub struct Ingestor {
    catalog: Arc<Catalog>,
    config: IngestConfig,
    buffers: Arc<Buffers>,
    wal: Arc<Wal>,
    keys: Arc<KeyStore>,
    flusher: Arc<Flusher>,
    unique: UniqueKeys,
    plans: Mutex<HashMap<TableName, Arc<TablePlan>>>,
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
        let io = |source| {
            Error::Wal(crate::wal::WalError::Io { dir: dir.display().to_string(), source })
        };
        let node_id = crate::wal::node_id(&dir)?;
        let wal_keys: Vec<KeyRecord> = records.iter().filter_map(WalRecord::key_record).collect();
        let ttl = Duration::from_secs(config.idempotency_ttl_secs);
        let keys = Arc::new(KeyStore::open(&dir, ttl, wal_keys).map_err(io)?);
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
            unique: UniqueKeys::new(config.unique_key_max),
            config,
            buffers,
            wal,
            keys,
            flusher: flusher.clone(),
            plans: Mutex::new(HashMap::new()),
            stop,
            flusher_task: Mutex::new(None),
            create_locks: Mutex::new(HashMap::new()),
        });
        ingestor.replay(records).await;
        // Files a crashed upload or drop left behind.
        let _ = tokio::fs::remove_dir_all(ingestor.spool_dir()).await;
        let drain = Duration::from_millis(ingestor.config.shutdown_timeout_ms);
        let task = tokio::spawn(flusher.run(stopped.clone(), drain));
        *ingestor.flusher_task.lock().expect("flusher task") = Some(task);
        tokio::spawn(crate::dropzone::run(
            ingestor.clone(),
            ingestor.config.dropzone.clone(),
            stopped,
        ));
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

    /// Where uploads and dropped files are copied while they load (local disk, under the WAL
    /// directory).
    pub fn spool_dir(&self) -> std::path::PathBuf {
        self.config.wal.dir.join("spool")
    }

    /// The catalog ingest writes through.
    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// Puts the WAL records that the lake does not hold yet back into the buffers.
    async fn replay(&self, records: Vec<WalRecord>) {
        let mut by_table: BTreeMap<TableName, Vec<(u64, WalPart)>> = BTreeMap::new();
        for record in records {
            for part in record.parts {
                by_table.entry(part.table.clone()).or_default().push((record.seq, part));
            }
        }
        for (name, parts) in by_table {
            let last = parts.last().map(|(seq, _)| *seq).unwrap_or(0);
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
                tracing::error!(table = %name, records = parts.len(), "the table no longer exists; dropping its write-ahead log records");
                self.release(&name, last);
                continue;
            };
            let committed = committed.unwrap_or(-1);
            let plan = self.plan(&name).await.ok();
            let (mut replayed, mut rows) = (0, 0);
            let total = parts.len();
            for (seq, mut part) in parts.into_iter().filter(|(seq, _)| *seq as i64 > committed) {
                let decoded = match part.body {
                    Some(format) => table.schema().map_err(|e| e.to_string()).and_then(|schema| {
                        decode(&part.data, format, schema).map_err(|e| e.to_string())
                    }),
                    None => part
                        .decode()
                        .map(|()| std::mem::take(&mut part.batches))
                        .map_err(|e| e.to_string()),
                };
                match decoded {
                    Ok(batches) => {
                        if let Some(plan) = &plan {
                            self.note_unique(plan, &batches);
                        }
                        rows += batches.iter().map(|b| b.num_rows()).sum::<usize>();
                        replayed += 1;
                        self.buffers.push(&name, seq, batches, part.data.len() as u64);
                    }
                    Err(e) => {
                        tracing::error!(table = %name, seq, error = %e, "a logged record cannot be read back; dropping it")
                    }
                }
            }
            if committed >= 0 {
                self.release(&name, committed as u64);
                let committed = Committed { seq: committed as u64, version: table.version() };
                self.buffers.set_committed(&name, committed);
            }
            tracing::info!(table = %name, replayed, rows, already_committed = total - replayed, "replayed the write-ahead log");
        }
    }

    /// Adds the unique keys of replayed rows to the table's index.
    fn note_unique(&self, plan: &TablePlan, batches: &[RecordBatch]) {
        let Some(contract) = plan.contract.as_ref().filter(|c| !c.unique_key.is_empty()) else {
            return;
        };
        let mut keys = Vec::new();
        for batch in batches {
            match crate::unique::hashes(batch, &contract.table_schema, &contract.unique_key) {
                Ok(hashes) => keys.extend(hashes.into_iter().flatten()),
                Err(e) => {
                    tracing::warn!(table = %plan.name, error = %e, "cannot read unique keys of replayed rows")
                }
            }
        }
        self.unique.note_uncommitted(
            &plan.name,
            plan.definition.created_at,
            &contract.unique_key,
            keys,
        );
    }

    fn release(&self, table: &TableName, seq: u64) {
        if let Err(e) = self.wal.committed(table, seq, |moved| self.keys.persist(moved)) {
            tracing::error!(error = %e, "cannot keep idempotency keys of a deleted WAL segment");
        }
    }

    /// What ingest needs to know about `name`, for the current revision of its definition.
    pub async fn plan(&self, name: &TableName) -> Result<Arc<TablePlan>> {
        let definition = self.catalog.definition(name).await?;
        if let Some(external) = &definition.external {
            // Crawled data belongs to whoever wrote it: Tarn reads it, never writes it.
            return Err(Error::Forbidden(format!(
                "table '{name}' is an external {} table over {} registered by the crawler; \
                 Tarn only reads it",
                external.format, external.url
            )));
        }
        if let Some(plan) = self.plans.lock().expect("plans").get(name) {
            if plan.definition.revision == definition.revision
                && plan.definition.created_at == definition.created_at
            {
                return Ok(plan.clone());
            }
        }
        let table = self.catalog.open_cached(name).await?;
        let spec = &definition.spec;
        let contract = if spec.is_declared() { Some(Contract::compile(spec)?) } else { None };
        let plan = Arc::new(TablePlan {
            name: name.clone(),
            schema: table.schema()?,
            json_columns: spec
                .columns
                .iter()
                .filter(|c| c.data_type == ColumnType::Json)
                .map(|c| c.name.clone())
                .collect(),
            rejected: if contract.is_some() { Some(companion::rejected_name(name)?) } else { None },
            raw: if spec.raw_backup { Some(companion::raw_name(name)?) } else { None },
            contract,
            definition: definition.clone(),
        });
        let flush = &spec.flush;
        let own = (flush != &Default::default()).then(|| FlushConfig {
            max_age_ms: flush.max_age_ms.unwrap_or(self.config.flush.max_age_ms),
            max_rows: flush.max_rows.unwrap_or(self.config.flush.max_rows),
            max_bytes: flush.max_bytes.unwrap_or(self.config.flush.max_bytes),
        });
        self.buffers.configure(name, own);
        let mut plans = self.plans.lock().expect("plans");
        if plans.len() >= 4096 {
            plans.clear();
        }
        plans.insert(name.clone(), plan.clone());
        Ok(plan)
    }

    /// The plan of `name`, creating the table first when it is unknown and auto-create is on.
    async fn plan_or_create(
        &self,
        name: &TableName,
        body: &[u8],
        format: Format,
    ) -> Result<(Arc<TablePlan>, bool)> {
        match self.plan(name).await {
            Ok(plan) => return Ok((plan, false)),
            Err(Error::Catalog(tarn_catalog::Error::TableNotFound { .. }))
                if self.config.auto_create => {}
            Err(Error::Catalog(tarn_catalog::Error::TableNotFound { .. })) => {
                return Err(Error::TableNotFound { name: name.to_string() })
            }
            Err(e) => return Err(e),
        }
        let schema = infer_schema(body, format)?;
        self.create_table(name, &schema).await
    }

    /// Creates `name` with `schema` (first write to an unknown table) and returns its plan;
    /// `false` when another request or server created it first.
    pub(crate) async fn create_table(
        &self,
        name: &TableName,
        schema: &arrow::datatypes::Schema,
    ) -> Result<(Arc<TablePlan>, bool)> {
        // Requests racing to create the same table queue here; the first creates it.
        let lock = {
            let mut locks = self.create_locks.lock().expect("create locks");
            locks.retain(|_, lock| Arc::strong_count(lock) > 1);
            locks.entry(name.clone()).or_default().clone()
        };
        let _guard = lock.lock().await;
        let created = match self.catalog.create(name, schema, &[], "auto").await {
            Ok(_) => true,
            // Another request or server created it a moment ago: use theirs.
            Err(tarn_catalog::Error::TableExists { .. }) => false,
            Err(e) => return Err(e.into()),
        };
        Ok((self.plan(name).await?, created))
    }

    /// The unique-key indexes.
    pub(crate) fn unique_keys(&self) -> &UniqueKeys {
        &self.unique
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
        let (plan, created) = self.plan_or_create(name, &body, format).await?;
        if let Some(owner) = &plan.definition.owner {
            return Err(Error::Forbidden(format!(
                "table '{name}' is kept by Tarn for '{owner}'; only Tarn writes to it"
            )));
        }
        let received = Utc::now();
        let prepared = {
            let (plan, body) = (plan.clone(), body.clone());
            if body.len() <= INLINE_DECODE_BYTES {
                prepare(&plan, &body, format)?
            } else {
                tokio::task::spawn_blocking(move || prepare(&plan, &body, format))
                    .await
                    .expect("decoding does not panic")?
            }
        };
        let Prepared { mut valid, rejected } = prepared;
        let mut counts = Counts {
            accepted: valid.iter().map(|b| b.num_rows()).sum(),
            rejected: rejected.len(),
            duplicates: 0,
        };
        let mut admitted: Vec<u128> = Vec::new();
        if let Some(contract) = plan.contract.as_ref().filter(|c| !c.unique_key.is_empty()) {
            if counts.accepted > 0 {
                let table = self.catalog.open_cached(name).await?;
                let batch = contract::concat(&contract.table_schema, &valid);
                let admission = self
                    .unique
                    .admit(name, plan.definition.created_at, &table, &batch, &contract.unique_key)
                    .await?;
                counts.duplicates = admission.duplicates;
                counts.accepted -= admission.duplicates;
                admitted = admission.added;
                valid = if admission.duplicates == 0 {
                    vec![batch]
                } else {
                    vec![filter_record_batch(&batch, &admission.keep)
                        .map_err(tarn_lake::Error::from)?]
                };
            }
        }
        let errors: Vec<String> =
            rejected.iter().take(ERRORS_SHOWN).map(Rejection::summary).collect();
        let parts = {
            let plan = plan.clone();
            let at = received.timestamp_micros();
            let raw_payload = plan.raw.as_ref().map(|_| {
                let payload = options.original.clone().unwrap_or_else(|| body.clone());
                (payload, options.content_type.clone())
            });
            let source = options.source.to_string();
            let logged_body = (format, body.clone());
            let encode =
                move || parts(&plan, valid, logged_body, &rejected, raw_payload, &source, at);
            if body.len() <= INLINE_DECODE_BYTES {
                encode()
            } else {
                tokio::task::spawn_blocking(encode).await.expect("encoding does not panic")
            }
        };
        let parts = match parts {
            Ok(parts) => parts,
            Err(e) => {
                self.unique.forget(name, &admitted);
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
        let seq = match self.wal.append(record).await {
            Ok(seq) => seq,
            Err(e) => {
                self.unique.forget(name, &admitted);
                return Err(e.into());
            }
        };
        if let Some(guard) = guard {
            guard.complete(KeyAnswer { seq, counts, received_ms: received.timestamp_millis() });
        }
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
            if let Ok((_, table)) = self.catalog.open(name).await {
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
            None => Some(self.catalog.open_cached(name).await.ok()?.version()),
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
            || match self.plan(name).await {
                Ok(plan) => plan.definition.spec.forms.allowed_origins.iter().any(|o| o == origin),
                Err(_) => false,
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

/// Decodes and checks a body: the rows to append and the rows to reject.
pub(crate) fn prepare(plan: &TablePlan, body: &[u8], format: Format) -> Result<Prepared> {
    let Some(contract) = &plan.contract else {
        // An inferred schema: all or nothing.
        let valid = match format {
            Format::Csv => crate::csv::decode_strict(body, &plan.schema)?,
            _ => decode(body, format, plan.schema.clone())?,
        };
        return Ok(Prepared { valid, rejected: Vec::new() });
    };
    let mut valid = Vec::new();
    let mut rejected: Vec<(usize, Rejection)> = Vec::new();
    match format {
        Format::Csv => {
            let (header, batches) = crate::csv::decode_text(body)?;
            crate::csv::check_header(&header, &contract.declared_schema)?;
            let mut base = 0;
            for batch in &batches {
                let checked =
                    contract::check(contract, batch, true, &|row| crate::csv::row_json(batch, row));
                valid.extend(checked.batch);
                rejected.extend(checked.rejected.into_iter().map(|(row, r)| (base + row, r)));
                base += batch.num_rows();
            }
        }
        Format::Json | Format::Ndjson => {
            let lenient = crate::decode::decode_lenient(
                body,
                format,
                contract.input_schema.clone(),
                &plan.json_columns,
            )?;
            for (index, rule, field, reason) in &lenient.refused {
                rejected.push((
                    *index,
                    Rejection {
                        record: lenient.text(*index),
                        rule: rule.to_string(),
                        field: field.clone(),
                        reason: reason.clone(),
                    },
                ));
            }
            let mut base = 0;
            for batch in &lenient.batches {
                let rows = &lenient.rows[base..base + batch.num_rows()];
                let checked =
                    contract::check(contract, batch, false, &|row| lenient.text(rows[row]));
                valid.extend(checked.batch);
                rejected.extend(checked.rejected.into_iter().map(|(row, r)| (rows[row], r)));
                base += batch.num_rows();
            }
        }
    }
    rejected.sort_by_key(|(index, _)| *index);
    Ok(Prepared { valid, rejected: rejected.into_iter().map(|(_, r)| r).collect() })
}

/// Checks a decoded batch (a CSV or Parquet chunk): for declared tables row by row, for
/// others all or nothing. `text(row)` gives a row's record for the rejected table.
pub(crate) fn prepare_batch(
    plan: &TablePlan,
    batch: &RecordBatch,
    empty_is_null: bool,
    text: &dyn Fn(usize) -> String,
) -> Result<Prepared> {
    let Some(contract) = &plan.contract else {
        let mut columns = Vec::with_capacity(plan.schema.fields().len());
        for field in plan.schema.fields() {
            let Some(column) = batch.column_by_name(field.name()) else {
                columns.push(arrow::array::new_null_array(field.data_type(), batch.num_rows()));
                continue;
            };
            let ty = ColumnType::from_arrow(field.data_type());
            let (typed, bad) = match ty {
                Some(ty) => crate::coerce::coerce(column, ty, empty_is_null),
                None => match arrow::compute::cast(column, field.data_type()) {
                    Ok(cast) => (cast, Vec::new()),
                    Err(e) => {
                        return Err(crate::DecodeError {
                            line: None,
                            column: None,
                            message: format!("column '{}': {e}", field.name()),
                        }
                        .into())
                    }
                },
            };
            if let Some(bad) = bad.first() {
                return Err(crate::DecodeError {
                    line: Some(bad.row + 1),
                    column: None,
                    message: format!("column '{}': {}", field.name(), bad.reason),
                }
                .into());
            }
            columns.push(typed);
        }
        let valid =
            RecordBatch::try_new(plan.schema.clone(), columns).map_err(tarn_lake::Error::from)?;
        return Ok(Prepared { valid: vec![valid], rejected: Vec::new() });
    };
    if let Some(unknown) = batch
        .schema()
        .fields()
        .iter()
        .find(|f| contract.declared_schema.field_with_name(f.name()).is_err())
    {
        return Err(crate::DecodeError {
            line: None,
            column: None,
            message: format!("column '{}' is not a column of the table", unknown.name()),
        }
        .into());
    }
    let checked = contract::check(contract, batch, empty_is_null, text);
    Ok(Prepared {
        valid: checked.batch.into_iter().collect(),
        rejected: checked.rejected.into_iter().map(|(_, r)| r).collect(),
    })
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
