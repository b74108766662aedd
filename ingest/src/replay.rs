//! Replaying the write-ahead log after a restart.
//!
//! The records the log holds that the lake lacks (those above each table's committed Delta
//! `txn` version) go back into the buffers, table by table. This runs in the background, so a
//! server restarted while storage is down starts anyway: it answers health checks and
//! queries, takes new records into the log while it has room, and reports itself not ready
//! ([`Ingestor::not_ready`]) until every table is replayed. A table waiting for its replay is
//! not flushed (its next commit's `txn` version would otherwise pass records the lake does
//! not hold), and takes no rows with unique keys, from requests or file loads (their index
//! would miss the keys of the records waiting: see [`crate::Tables::admit`]).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use arrow::array::RecordBatch;
use tarn_catalog::TableName;
use tarn_lake::Classify;
use tokio::sync::watch;

use crate::buffer::Committed;
use crate::plan::TablePlan;
use crate::wal::{WalPart, WalRecord};
use crate::{decode, Ingestor};

/// Longest wait between two attempts to read a table that storage does not serve.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// The records waiting to be replayed, by table.
#[derive(Default)]
pub(crate) struct Pending {
    tables: Mutex<BTreeMap<TableName, Vec<(u64, WalPart)>>>,
    /// Why the last attempt failed, for `/readyz`.
    last_error: Mutex<Option<String>>,
}

impl Pending {
    /// The records of the log, by table, in sequence order.
    pub fn new(records: Vec<WalRecord>) -> Self {
        let mut tables: BTreeMap<TableName, Vec<(u64, WalPart)>> = BTreeMap::new();
        for record in records {
            for part in record.parts {
                tables.entry(part.table.clone()).or_default().push((record.seq, part));
            }
        }
        Pending { tables: Mutex::new(tables), last_error: Mutex::new(None) }
    }

    /// The tables still waiting.
    pub fn tables(&self) -> Vec<TableName> {
        self.tables.lock().expect("pending replay").keys().cloned().collect()
    }

    /// Why the server is not ready yet, if it is not.
    pub fn reason(&self) -> Option<String> {
        let tables = self.tables.lock().expect("pending replay");
        if tables.is_empty() {
            return None;
        }
        let records: usize = tables.values().map(Vec::len).sum();
        let mut reason = format!(
            "replaying the write-ahead log: {records} records of {} tables ({}) are not in the lake yet",
            tables.len(),
            tables.keys().map(ToString::to_string).collect::<Vec<_>>().join(", ")
        );
        if let Some(error) = self.last_error.lock().expect("replay error").as_ref() {
            reason.push_str(&format!(" ({error})"));
        }
        Some(reason)
    }
}

impl Ingestor {
    /// Replays every table waiting in [`Pending`], retrying each while storage does not serve
    /// it, until done or `stop`.
    pub(crate) async fn replay(&self, mut stop: watch::Receiver<bool>) {
        for name in self.pending.tables() {
            let mut backoff = Duration::from_millis(200);
            loop {
                match self.replay_table(&name).await {
                    Ok(()) => {
                        // Only now: readiness waits for the records to be in the buffers and
                        // those the lake holds (or cannot read) to be released.
                        self.pending.tables.lock().expect("pending replay").remove(&name);
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(table = %name, error = %e, retry_in_ms = backoff.as_millis() as u64, "cannot read the table to replay the write-ahead log; retrying");
                        *self.pending.last_error.lock().expect("replay error") =
                            Some(format!("{}: {e}", e.kind()));
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
        *self.pending.last_error.lock().expect("replay error") = None;
    }

    /// Puts the records of `name` that the lake lacks back into its buffer, and lets it flush.
    async fn replay_table(&self, name: &TableName) -> crate::Result<()> {
        let app_id = self.flusher.app_id(name);
        let found = match self.tables.catalog().open(name).await {
            Ok((_, table)) => {
                let committed = table.txn_version(&app_id).await?;
                Some((table, committed))
            }
            Err(tarn_catalog::Error::TableNotFound { .. }) => None,
            Err(e) => return Err(e.into()),
        };
        // The plan is for the unique-key index: storage failing is retried (a replay without
        // the index would let duplicates in); a definition that cannot be planned is said.
        let plan = match found {
            Some(_) => match self.tables.plan(name).await {
                Ok(plan) => Some(plan),
                Err(e) if e.kind().is_retryable() => return Err(e),
                Err(e) => {
                    tracing::warn!(table = %name, error = %e, "cannot plan the table: the unique keys of replayed rows are not indexed");
                    None
                }
            },
            None => None,
        };
        // Taken, not removed: the table stays pending (not ready) until `replay` is done with it.
        let parts = self
            .pending
            .tables
            .lock()
            .expect("pending replay")
            .get_mut(name)
            .map(std::mem::take)
            .unwrap_or_default();
        let last = parts.last().map(|(seq, _)| *seq).unwrap_or(0);
        let Some((table, committed)) = found else {
            tracing::error!(table = %name, records = parts.len(), "the table no longer exists; dropping its write-ahead log records");
            self.release(name, last);
            self.buffers.release(name);
            self.tables.replayed(name);
            return Ok(());
        };
        let committed = committed.unwrap_or(-1);
        let (mut replayed, mut rows) = (0, 0);
        let total = parts.len();
        let mut decoded = Vec::new();
        for (seq, mut part) in parts.into_iter().filter(|(seq, _)| *seq as i64 > committed) {
            let batches = match part.body {
                Some(format) => table.schema().map_err(|e| e.to_string()).and_then(|schema| {
                    decode(&part.data, format, schema).map_err(|e| e.to_string())
                }),
                None => part
                    .decode()
                    .map(|()| std::mem::take(&mut part.batches))
                    .map_err(|e| e.to_string()),
            };
            if let Err(e) = &batches {
                tracing::error!(table = %name, seq, error = %e, "a logged record cannot be read back; dropping it");
            }
            decoded.push((seq, batches.ok(), part.data.len() as u64));
        }
        // Records dropped as unreadable are released with the commit of the others (an
        // empty push moves the buffer's last sequence number); when none is readable, now.
        let dropped = decoded.iter().filter(|(_, batches, _)| batches.is_none()).count();
        let dropped_only = dropped == decoded.len();
        for (seq, batches, bytes) in decoded {
            match batches {
                Some(batches) => {
                    if let Some(plan) = &plan {
                        self.note_unique(plan, &batches);
                    }
                    rows += batches.iter().map(|b| b.num_rows()).sum::<usize>();
                    replayed += 1;
                    self.buffers.push(name, seq, batches, bytes);
                }
                None if dropped_only => {}
                None => self.buffers.push(name, seq, Vec::new(), 0),
            }
        }
        if committed >= 0 {
            self.release(name, committed as u64);
            let committed = Committed { seq: committed as u64, version: table.version() };
            self.buffers.set_committed(name, committed);
        }
        if dropped_only && last as i64 > committed {
            self.release(name, last);
        }
        self.buffers.release(name);
        self.tables.replayed(name);
        tracing::info!(table = %name, replayed, rows, dropped, already_committed = total - replayed - dropped, "replayed the write-ahead log");
        Ok(())
    }

    /// Adds the unique keys of replayed rows to the table's index.
    fn note_unique(&self, plan: &TablePlan, batches: &[RecordBatch]) {
        let (Some(key), Some(contract)) = (plan.unique_key(), plan.contract.as_ref()) else {
            return;
        };
        let mut keys = Vec::new();
        for batch in batches {
            match crate::unique::hashes(batch, &contract.table_schema, key.columns) {
                Ok(hashes) => keys.extend(hashes.into_iter().flatten()),
                Err(e) => {
                    tracing::warn!(table = %plan.name, error = %e, "cannot read unique keys of replayed rows")
                }
            }
        }
        self.tables.unique_keys().note_uncommitted(&plan.name, key, keys);
    }

    /// Tells the log that `table`'s records up to `seq` are in the lake, keeping the
    /// idempotency keys of the segments that go.
    pub(crate) fn release(&self, table: &TableName, seq: u64) {
        if let Err(e) = self.wal.committed(table, seq, |moved| self.keys.persist(moved)) {
            tracing::error!(error = %e, "cannot keep idempotency keys of a deleted WAL segment");
        }
    }
}
