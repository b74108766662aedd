//! Per-table buffers of durable records, and the flusher that turns them into Delta commits.
//!
//! Records arrive from the WAL writer in sequence order ([`WalSink`]). A table's buffer is
//! flushed as one Delta commit when its rows, bytes (of request bodies) or age cross the
//! thresholds; the commit carries a Delta `txn` whose version is the last sequence number in
//! it, so after a crash the records above that version, and only those, are replayed. One
//! flush per table runs at a time; failed commits are retried with exponential backoff and
//! jitter while new records keep collecting behind them.
//!
//! While they wait, a table's rows are encoded into Parquet files in memory as they arrive
//! (an [`Encoder`] task per table and flush, see [`tarn_lake::Stage`]), so a buffer holds
//! compressed pages rather than Arrow arrays; the commit uploads the files. Tables with
//! `cluster_by` keep Arrow batches, because their flush is sorted as a whole, and so do tables
//! with a `unique_key`, because their commit may leave rows out ([`crate::unique`]).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use serde::Deserialize;
use tarn_catalog::{Catalog, TableName};
use tarn_lake::LakeTable;
use tokio::sync::{mpsc, watch, Notify};

use crate::wal::{Wal, WalPart, WalSink};

/// When a table's buffer becomes a Delta commit.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct FlushConfig {
    /// Flush records at most this long after the first of them arrived.
    pub max_age_ms: u64,
    /// Flush when the buffered request bodies reach this many bytes.
    pub max_bytes: u64,
    /// Flush when this many rows are buffered.
    pub max_rows: usize,
}

impl Default for FlushConfig {
    fn default() -> Self {
        FlushConfig { max_age_ms: 1000, max_bytes: 64 * 1024 * 1024, max_rows: 1_000_000 }
    }
}

/// The latest commit of a table's records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Committed {
    /// Every record of the table up to this sequence number is in the lake.
    pub seq: u64,
    /// The Delta version that committed `seq`.
    pub version: u64,
}

#[derive(Default)]
struct TableBuffer {
    /// The table's own thresholds, when its definition sets them.
    config: Option<FlushConfig>,
    rows_in: Pending,
    rows: usize,
    bytes: u64,
    since: Option<Instant>,
    /// When the oldest record of the flush under way arrived.
    flushing_since: Option<Instant>,
    last_seq: u64,
    flushing: bool,
    /// Someone waits for this buffer's commit (`?wait=commit`): flush without waiting for the
    /// thresholds.
    urgent: bool,
}

/// Where a table's durable rows wait for their commit.
enum Pending {
    /// Encoded into Parquet as they arrive, by an [`Encoder`].
    Encoding(Encoder),
    /// Kept as Arrow batches (before [`Buffers::start_encoding`]).
    Batches(Vec<RecordBatch>),
}

impl Default for Pending {
    fn default() -> Self {
        Pending::Batches(Vec::new())
    }
}

impl Pending {
    /// The rows, ready to be committed; an error when the encoder failed (the rows are only
    /// in the write-ahead log then).
    async fn finish(self) -> Result<Rows, String> {
        match self {
            Pending::Batches(batches) => Ok(Rows::Batches(batches)),
            Pending::Encoding(encoder) => encoder.finish().await,
        }
    }
}

/// The rows of one commit.
enum Rows {
    /// Parquet files in memory.
    Staged(tarn_lake::Staged),
    /// Arrow batches: tables whose flushes are sorted by `cluster_by` or may leave rows out
    /// (`unique_key`), or whose encoder could not start (the table could not be read then).
    Batches(Vec<RecordBatch>),
}

/// A task that encodes a table's rows into Parquet in memory as they become durable, so that
/// the buffer holds them at their encoded size instead of as Arrow arrays.
struct Encoder {
    sender: mpsc::UnboundedSender<RecordBatch>,
    task: tokio::task::JoinHandle<Result<Rows, String>>,
}

impl Encoder {
    fn start(runtime: &tokio::runtime::Handle, catalog: Arc<Catalog>, table: TableName) -> Self {
        let (sender, receiver) = mpsc::unbounded_channel();
        let task = runtime.spawn(Self::run(catalog, table, receiver));
        Encoder { sender, task }
    }

    fn push(&self, batches: Vec<RecordBatch>) {
        for batch in batches {
            // The task ends only after the sender is dropped, in `finish`.
            let _ = self.sender.send(batch);
        }
    }

    /// Waits for every pushed row to be encoded and closes the files.
    async fn finish(self) -> Result<Rows, String> {
        drop(self.sender);
        self.task.await.map_err(|e| format!("the encoder stopped: {e}"))?
    }

    async fn run(
        catalog: Arc<Catalog>,
        table: TableName,
        mut receiver: mpsc::UnboundedReceiver<RecordBatch>,
    ) -> Result<Rows, String> {
        // The table as this process knows it (no storage access): the stage needs its
        // partitioning and statistics settings, not its latest version.
        let stage = match catalog.definition(&table).await {
            Ok(definition)
                if !definition.spec.cluster_by.is_empty()
                    || !definition.spec.unique_key.is_empty() =>
            {
                None
            }
            Ok(_) => match catalog.table_as_known(&table).await {
                Ok(lake_table) => lake_table.stage().ok(),
                Err(_) => None,
            },
            Err(_) => None,
        };
        let Some(mut stage) = stage else {
            let mut batches = Vec::new();
            while let Some(batch) = receiver.recv().await {
                batches.push(batch);
            }
            return Ok(Rows::Batches(batches));
        };
        while let Some(batch) = receiver.recv().await {
            if let Err(e) = stage.write(batch).await {
                // Drain the channel: the rows stay in the write-ahead log.
                while receiver.recv().await.is_some() {}
                return Err(e.to_string());
            }
        }
        stage.finish().await.map(Rows::Staged).map_err(|e| e.to_string())
    }
}

/// Work for one commit.
struct Flush {
    table: TableName,
    rows_in: Pending,
    rows: usize,
    last_seq: u64,
}

/// The buffers of every table.
#[derive(Default)]
pub struct Buffers {
    config: FlushConfig,
    tables: Mutex<HashMap<TableName, TableBuffer>>,
    wake: Notify,
    commits: Mutex<HashMap<TableName, watch::Sender<Committed>>>,
    /// Tables whose records from before a restart are not replayed yet: they are not flushed
    /// (a commit's `txn` version would otherwise pass records the lake does not hold).
    held: Mutex<HashSet<TableName>>,
    /// Where encoders run and read table definitions, once [`Buffers::start_encoding`] set it.
    encoding: OnceLock<(tokio::runtime::Handle, Arc<Catalog>)>,
}

impl WalSink for Buffers {
    fn durable(&self, seq: u64, parts: Vec<WalPart>) {
        for part in parts {
            self.push(&part.table, seq, part.batches, part.data.len() as u64);
        }
    }
}

impl Buffers {
    /// Empty buffers with the given thresholds.
    pub fn new(config: FlushConfig) -> Self {
        Buffers { config, ..Default::default() }
    }

    /// Sets `table`'s own thresholds (from its definition); `None` goes back to the defaults.
    pub fn configure(&self, table: &TableName, config: Option<FlushConfig>) {
        let mut tables = self.tables.lock().expect("buffers");
        tables.entry(table.clone()).or_default().config = config;
    }

    /// From now on, rows are encoded as they arrive (see [`Encoder`]), by tasks on the current
    /// runtime that read table definitions from `catalog`.
    pub fn start_encoding(&self, catalog: Arc<Catalog>) {
        let _ = self.encoding.set((tokio::runtime::Handle::current(), catalog));
    }

    /// Adds a durable record's rows.
    pub fn push(&self, table: &TableName, seq: u64, batches: Vec<RecordBatch>, bytes: u64) {
        let mut tables = self.tables.lock().expect("buffers");
        let buffer = tables.entry(table.clone()).or_default();
        buffer.rows += batches.iter().map(|b| b.num_rows()).sum::<usize>();
        buffer.bytes += bytes;
        if let (Pending::Batches(_), Some((runtime, catalog))) =
            (&buffer.rows_in, self.encoding.get())
        {
            if !batches.is_empty() {
                let encoder = Encoder::start(runtime, catalog.clone(), table.clone());
                if let Pending::Batches(earlier) = std::mem::take(&mut buffer.rows_in) {
                    encoder.push(earlier);
                }
                buffer.rows_in = Pending::Encoding(encoder);
            }
        }
        match &mut buffer.rows_in {
            Pending::Encoding(encoder) => encoder.push(batches),
            Pending::Batches(pending) => pending.extend(batches),
        }
        buffer.last_seq = buffer.last_seq.max(seq);
        buffer.since.get_or_insert_with(Instant::now);
        let config = buffer.config.as_ref().unwrap_or(&self.config);
        if buffer.rows >= config.max_rows || buffer.bytes >= config.max_bytes {
            self.wake.notify_one();
        }
    }

    /// Keeps `table` from being flushed until [`Buffers::release`].
    pub fn hold(&self, table: &TableName) {
        self.held.lock().expect("held tables").insert(table.clone());
    }

    /// Lets `table` be flushed again (its replay is done).
    pub fn release(&self, table: &TableName) {
        self.held.lock().expect("held tables").remove(table);
        self.wake.notify_one();
    }

    /// Takes the buffers that are due (all non-empty ones with `everything`), marking their
    /// tables as flushing. Held tables are never due.
    fn take_due(&self, everything: bool) -> Vec<Flush> {
        let mut due = Vec::new();
        let held = self.held.lock().expect("held tables").clone();
        let mut tables = self.tables.lock().expect("buffers");
        for (table, buffer) in tables.iter_mut() {
            let Some(since) = buffer.since else { continue };
            if held.contains(table) {
                continue;
            }
            let config = buffer.config.as_ref().unwrap_or(&self.config);
            let ready = everything
                || buffer.urgent
                || since.elapsed() >= Duration::from_millis(config.max_age_ms)
                || buffer.rows >= config.max_rows
                || buffer.bytes >= config.max_bytes;
            if ready && !buffer.flushing {
                buffer.flushing = true;
                due.push(Flush {
                    table: table.clone(),
                    rows_in: std::mem::take(&mut buffer.rows_in),
                    rows: std::mem::take(&mut buffer.rows),
                    last_seq: buffer.last_seq,
                });
                buffer.bytes = 0;
                buffer.flushing_since = buffer.since.take();
                buffer.urgent = false;
            }
        }
        due
    }

    fn finished(&self, table: &TableName, committed: Option<Committed>) {
        if let Some(buffer) = self.tables.lock().expect("buffers").get_mut(table) {
            buffer.flushing = false;
            buffer.flushing_since = None;
        }
        if let Some(committed) = committed {
            self.set_committed(table, committed);
        }
        self.wake.notify_one();
    }

    /// Records that `table`'s records up to `committed.seq` are in the lake (found on start, or
    /// by a commit).
    pub fn set_committed(&self, table: &TableName, committed: Committed) {
        self.sender(table).send_if_modified(|c| {
            let newer = committed.seq > c.seq;
            if newer {
                *c = committed;
            }
            newer
        });
    }

    fn sender(&self, table: &TableName) -> watch::Sender<Committed> {
        self.commits
            .lock()
            .expect("commits")
            .entry(table.clone())
            .or_insert_with(|| watch::channel(Committed::default()).0)
            .clone()
    }

    /// Waits until `table`'s records up to `seq` are committed, asking for an early flush.
    pub async fn committed(&self, table: &TableName, seq: u64) -> Committed {
        let mut receiver = self.sender(table).subscribe();
        if receiver.borrow().seq < seq {
            if let Some(buffer) = self.tables.lock().expect("buffers").get_mut(table) {
                buffer.urgent = true;
            }
            self.wake.notify_one();
        }
        let committed = receiver.wait_for(|c| c.seq >= seq).await.expect("the sender is kept");
        *committed
    }

    /// How long the oldest record not yet committed has waited (over all tables; `None` when
    /// every durable record is committed).
    pub fn oldest_pending(&self) -> Option<Duration> {
        let tables = self.tables.lock().expect("buffers");
        tables
            .values()
            .flat_map(|b| [b.since, b.flushing_since])
            .flatten()
            .min()
            .map(|t| t.elapsed())
    }

    /// Rows buffered and not yet committed, per table.
    pub fn pending_rows_of(&self, table: &TableName) -> usize {
        self.tables.lock().expect("buffers").get(table).map_or(0, |b| b.rows)
    }

    /// Rows buffered and not yet committed, over all tables.
    pub fn pending_rows(&self) -> usize {
        self.tables.lock().expect("buffers").values().map(|b| b.rows).sum()
    }

    /// Nothing buffered that could be committed (held tables' records wait in the log).
    fn idle(&self) -> bool {
        let held = self.held.lock().expect("held tables").clone();
        self.tables
            .lock()
            .expect("buffers")
            .iter()
            .all(|(t, b)| held.contains(t) || (b.since.is_none() && !b.flushing))
    }
}

/// Commits buffers to the lake; one per process.
pub struct Flusher {
    pub(crate) buffers: Arc<Buffers>,
    pub(crate) catalog: Arc<Catalog>,
    /// The tables' plans and unique keys.
    pub(crate) tables: Arc<crate::Tables>,
    pub(crate) wal: Arc<Wal>,
    pub(crate) keys: Arc<crate::idempotency::KeyStore>,
    pub(crate) maintenance: Arc<crate::maintenance::Maintenance>,
    pub(crate) node_id: String,
    /// Where commits are counted.
    pub(crate) stats: Arc<crate::stats::IngestStats>,
}

/// How often the flusher looks at buffer ages.
const TICK: Duration = Duration::from_millis(20);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How often expired idempotency keys are dropped from memory.
const KEY_EXPIRY_INTERVAL: Duration = Duration::from_secs(60);

impl Flusher {
    /// The Delta `txn` application id of this node's commits to `table`.
    pub fn app_id(&self, table: &TableName) -> String {
        format!("tarn-{}-{table}", self.node_id)
    }

    /// Runs until `stop` turns true, then commits everything still buffered (retrying while
    /// storage is unreachable, until `drain_timeout`).
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>, drain_timeout: Duration) {
        let mut last_expiry = Instant::now();
        loop {
            if last_expiry.elapsed() >= KEY_EXPIRY_INTERVAL {
                self.keys.expire();
                last_expiry = Instant::now();
            }
            tokio::select! {
                _ = self.buffers.wake.notified() => {}
                _ = tokio::time::sleep(TICK) => {}
                _ = stop.wait_for(|s| *s) => break,
            }
            for flush in self.buffers.take_due(false) {
                tokio::spawn(self.clone().flush(flush));
            }
        }
        let pending = self.buffers.pending_rows();
        tracing::info!(rows = pending, "committing buffered records before shutdown");
        let drained = tokio::time::timeout(drain_timeout, async {
            while !self.buffers.idle() {
                for flush in self.buffers.take_due(true) {
                    tokio::spawn(self.clone().flush(flush));
                }
                tokio::time::sleep(TICK).await;
            }
        })
        .await;
        match drained {
            Ok(()) => tracing::info!("all buffered records are committed"),
            Err(_) => tracing::warn!(
                rows = self.buffers.pending_rows(),
                "storage did not take every buffered record before the shutdown timeout; they stay in the write-ahead log and are committed on the next start"
            ),
        }
    }

    async fn flush(self: Arc<Self>, flush: Flush) {
        let Flush { table, rows_in, rows, last_seq } = flush;
        let started = Instant::now();
        let rows_in = match rows_in.finish().await {
            Ok(Rows::Batches(batches)) => Rows::Batches(self.clustered(&table, batches).await),
            Ok(staged) => staged,
            Err(e) => {
                // Nothing can be committed, and no later commit may pass these records (its
                // `txn` version would): the table is held, its records stay in the log (which
                // answers 503 once full), and a restart replays them.
                self.stats.commit_failed(&table);
                tracing::error!(table = %table, rows, error = %e, "encoding buffered records failed; the table takes no more commits until a restart replays them from the write-ahead log");
                self.buffers.hold(&table);
                self.buffers.finished(&table, None);
                return;
            }
        };
        let app_id = self.app_id(&table);
        let mut backoff = Duration::from_millis(100);
        let mut attempt = 0u32;
        let outcome = loop {
            attempt += 1;
            match self.commit(&table, &rows_in, &app_id, last_seq, attempt > 1).await {
                Ok((committed, dropped)) => {
                    self.stats.committed(
                        &table,
                        committed.version(),
                        rows.saturating_sub(dropped) as u64,
                        started.elapsed(),
                    );
                    self.maintenance.after_commit(&table, &committed);
                    break Some(Committed { seq: last_seq, version: committed.version() });
                }
                Err(crate::Error::Catalog(tarn_catalog::Error::TableNotFound { .. })) => {
                    tracing::error!(table = %table, rows, "the table was deleted while records for it were buffered; dropping them");
                    break None;
                }
                Err(e) => {
                    self.stats.commit_failed(&table);
                    let wait = backoff + jitter(backoff);
                    tracing::warn!(table = %table, rows, attempt, error = %e, retry_in_ms = wait.as_millis() as u64, "commit failed; retrying");
                    tokio::time::sleep(wait).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        };
        let wal = self.wal.clone();
        let keys = self.keys.clone();
        let name = table.clone();
        let released = tokio::task::spawn_blocking(move || {
            wal.committed(&name, last_seq, |moved| keys.persist(moved))
        })
        .await;
        if let Ok(Err(e)) | Err(e) = released.map_err(std::io::Error::other) {
            tracing::error!(error = %e, "cannot keep idempotency keys of a deleted WAL segment");
        }
        if let Some(committed) = outcome {
            tracing::debug!(table = %table, rows, version = committed.version, seq = last_seq, "committed");
        }
        self.buffers.finished(&table, outcome);
    }

    /// `batches` sorted by the table's `cluster_by` columns, when it declares some. A failure
    /// to sort (or to read the definition) leaves the rows in arrival order: they are
    /// committed all the same.
    async fn clustered(&self, table: &TableName, batches: Vec<RecordBatch>) -> Vec<RecordBatch> {
        let cluster_by = match self.catalog.definition(table).await {
            Ok(definition) if !definition.spec.cluster_by.is_empty() => {
                definition.spec.cluster_by.clone()
            }
            _ => return batches,
        };
        let kept = batches.clone();
        let sorting = tokio::task::spawn_blocking(move || {
            tarn_lake::cluster::sort_rows(batches, &cluster_by).map_err(|e| e.to_string())
        });
        match sorting.await.map_err(|e| e.to_string()).and_then(|sorted| sorted) {
            Ok(sorted) => sorted,
            Err(e) => {
                tracing::warn!(table = %table, error = %e, "cannot sort the flush by cluster_by; committing it unsorted");
                kept
            }
        }
    }

    /// One commit attempt; answers the table at the new version and the rows left out (rows
    /// whose unique key another writer committed first). On a retry, the table is first asked
    /// whether an earlier attempt landed after all (its `txn` version already covers `seq`),
    /// so nothing is written twice.
    async fn commit(
        &self,
        table: &TableName,
        rows: &Rows,
        app_id: &str,
        seq: u64,
        retry: bool,
    ) -> crate::Result<(LakeTable, usize)> {
        let (definition, lake_table) = self.catalog.open(table).await?;
        if retry {
            if let Some(done) = lake_table.txn_version(app_id).await? {
                if done >= seq as i64 {
                    if let Rows::Batches(batches) = rows {
                        self.tables.appended_earlier(table, &definition, &lake_table, batches);
                    }
                    return Ok((lake_table, 0));
                }
            }
        }
        match rows {
            Rows::Staged(staged) => {
                let committed = lake_table.append_staged(staged, app_id, seq as i64).await?;
                self.catalog.remember(table, &committed);
                Ok((committed, 0))
            }
            Rows::Batches(batches) => {
                let batches = batches.clone();
                self.tables
                    .append(table, &definition, lake_table, batches, app_id, seq as i64)
                    .await
            }
        }
    }
}

/// Up to half of `base`, from the clock's nanoseconds: enough to spread retries apart.
fn jitter(base: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    base.mul_f64(f64::from(nanos % 1000) / 2000.0)
}
