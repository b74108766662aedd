//! Unique keys: a row whose key is in the table already, or earlier in the same request, is
//! not appended and counts as a duplicate — across every Tarn process writing into the lake.
//!
//! Two checks, one per moment:
//!
//! * **At admission** (before a request is logged and acknowledged), against an index in this
//!   process: the keys' 128-bit hashes (xxh3 of Arrow's row encoding of the key columns),
//!   loaded from the table on first use (one scan of the key columns), plus every key this
//!   process admitted. Two concurrent requests carrying the same key admit it once; the
//!   answer's `duplicates` counts the rows left out. A request that fails after admission
//!   gives its keys back.
//! * **At commit**, against what other writers committed since the index last looked: the
//!   commits after the index's version are read from the Delta log, and the key columns of the
//!   data files they added are read back ([`tarn_lake::LakeTable::files_added_since`]). Rows of
//!   this commit whose key another writer committed first are dropped (counted as
//!   `duplicates_dropped` in the table's ingest figures and `tarn_ingest_duplicates_dropped_total`),
//!   and the commit is made at exactly the next version
//!   ([`tarn_lake::LakeTable::append_txn_next`]); when another commit takes that version
//!   first, the check runs again over it. Delta versions order all commits, so each commit is
//!   checked against every commit before it: the table never holds a key twice, whichever
//!   servers the rows came through.
//!
//! The trade-off: a key sent to two servers within about a second (before either committed
//! it) is acknowledged by both, and the later commit drops its row; the first committed record
//! is the one kept. Once a server has committed a key, the other servers see it at their next
//! commit of the table and then refuse it at admission. Rows written by other means (a job, a
//! merge) are seen the same way; rows deleted from the table keep their keys taken until the
//! index is next loaded (at start).
//!
//! With [`crate::UniqueKeyScope::Node`], the check at commit is skipped: each process enforces
//! the keys it sees, and commits rebase freely (a key sent to two servers lands twice).
//!
//! Keys with a null part are never duplicates (SQL `UNIQUE` semantics). The index's size is
//! bounded by `max_keys` per table; past that, ingest into the table is refused with a clear
//! error rather than growing memory without bound.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch};
use arrow::compute::{cast, filter_record_batch};
use arrow::datatypes::SchemaRef;
use arrow::row::{RowConverter, SortField};
use chrono::{DateTime, Utc};
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use tarn_catalog::TableName;
use tarn_lake::LakeTable;
use tokio::sync::OnceCell;

use crate::{Error, Result};

/// How often a commit at the next version is tried, each after reading what took the one
/// before, before the commit fails (and the flush retries it with backoff).
const EXACT_COMMIT_ATTEMPTS: usize = 100;

/// The keys of one table.
struct TableKeys {
    /// Which table and key this is: a table dropped and created again, or given another
    /// unique key, starts afresh.
    identity: (DateTime<Utc>, Vec<String>),
    /// Loaded on first use.
    index: OnceCell<Mutex<Index>>,
    /// Keys of rows replayed from the write-ahead log before the index was loaded (in no
    /// Delta commit yet, so not seen by the scan).
    uncommitted: Mutex<Vec<u128>>,
    /// Held while this process commits rows of the table: the checks at commit and the commits
    /// run one at a time.
    committing: tokio::sync::Mutex<()>,
}

/// What one table's index knows.
struct Index {
    /// Every key known: in the table as of `seen`, or admitted by this process.
    keys: HashSet<u128>,
    /// Keys this process admitted and has not committed yet.
    pending: HashSet<u128>,
    /// Pending keys that another writer committed first: their rows are dropped at commit.
    taken: HashSet<u128>,
    /// The table version up to which every commit's keys are in `keys`.
    seen: u64,
}

/// The unique-key indexes of every table.
pub struct UniqueKeys {
    max_keys: usize,
    tables: Mutex<HashMap<TableName, Arc<TableKeys>>>,
}

/// Which rows of a batch are new.
pub struct Admission {
    /// True for rows to append.
    pub keep: BooleanArray,
    /// Rows left out.
    pub duplicates: usize,
    /// Keys added to the index, to give back if the request fails.
    pub added: Vec<u128>,
}

/// A table's unique key, as the index knows it.
#[derive(Debug, Clone, Copy)]
pub struct KeySpec<'a> {
    /// When the table was created (a table created again starts a new index).
    pub created_at: DateTime<Utc>,
    /// The key's columns.
    pub columns: &'a [String],
}

/// The hashes of each row's key (`None` where a key column is null). The key columns are found
/// in `batch` by name and read as `schema` (the table's) types them.
pub fn hashes(
    batch: &RecordBatch,
    schema: &SchemaRef,
    key: &[String],
) -> Result<Vec<Option<u128>>> {
    let wanted: Vec<_> = key
        .iter()
        .map(|name| {
            schema.field_with_name(name).map_err(|_| {
                tarn_lake::Error::SchemaMismatch(format!("the table has no key column '{name}'"))
            })
        })
        .collect::<std::result::Result<_, _>>()?;
    let fields: Vec<SortField> =
        wanted.iter().map(|f| SortField::new(f.data_type().clone())).collect();
    let converter = RowConverter::new(fields).map_err(tarn_lake::Error::from)?;
    let columns: Vec<ArrayRef> = wanted
        .iter()
        .map(|wanted| {
            let column = batch.column_by_name(wanted.name()).ok_or_else(|| {
                tarn_lake::Error::SchemaMismatch(format!("no key column '{}'", wanted.name()))
            })?;
            if column.data_type() == wanted.data_type() {
                Ok(column.clone())
            } else {
                cast(column, wanted.data_type()).map_err(tarn_lake::Error::from)
            }
        })
        .collect::<std::result::Result<_, tarn_lake::Error>>()?;
    let rows = converter.convert_columns(&columns).map_err(tarn_lake::Error::from)?;
    Ok((0..batch.num_rows())
        .map(|r| {
            if columns.iter().any(|c| c.is_null(r)) {
                None
            } else {
                Some(xxhash_rust::xxh3::xxh3_128(rows.row(r).as_ref()))
            }
        })
        .collect())
}

impl TableKeys {
    /// The index, loaded from `table` on first use.
    async fn index(&self, name: &TableName, table: &LakeTable) -> Result<&Mutex<Index>> {
        self.index
            .get_or_try_init(|| async {
                let mut keys = load(table, &self.identity.1).await?;
                let replayed: Vec<u128> =
                    self.uncommitted.lock().expect("uncommitted keys").drain(..).collect();
                keys.extend(replayed.iter().copied());
                tracing::info!(table = %name, keys = keys.len(), version = table.version(), "loaded the unique-key index");
                Ok::<_, Error>(Mutex::new(Index {
                    keys,
                    pending: replayed.into_iter().collect(),
                    taken: HashSet::new(),
                    seen: table.version(),
                }))
            })
            .await
    }
}

impl UniqueKeys {
    /// Indexes holding at most `max_keys` keys per table.
    pub fn new(max_keys: usize) -> Self {
        UniqueKeys { max_keys, tables: Mutex::new(HashMap::new()) }
    }

    fn entry(&self, name: &TableName, key: KeySpec<'_>) -> Arc<TableKeys> {
        let identity = (key.created_at, key.columns.to_vec());
        let fresh = || {
            Arc::new(TableKeys {
                identity: identity.clone(),
                index: OnceCell::new(),
                uncommitted: Mutex::new(Vec::new()),
                committing: tokio::sync::Mutex::new(()),
            })
        };
        let mut tables = self.tables.lock().expect("unique keys");
        let entry = tables.entry(name.clone()).or_insert_with(fresh);
        if entry.identity != identity {
            *entry = fresh();
        }
        entry.clone()
    }

    /// Notes keys of replayed rows (in the write-ahead log, not in the table yet).
    pub fn note_uncommitted(&self, name: &TableName, key: KeySpec<'_>, keys: Vec<u128>) {
        let entry = self.entry(name, key);
        match entry.index.get() {
            Some(index) => {
                let mut index = index.lock().expect("key index");
                index.keys.extend(keys.iter().copied());
                index.pending.extend(keys);
            }
            None => entry.uncommitted.lock().expect("uncommitted keys").extend(keys),
        }
    }

    /// Decides which rows of `batch` (in the table's schema) are new, and adds their keys.
    pub async fn admit(
        &self,
        name: &TableName,
        key: KeySpec<'_>,
        table: &LakeTable,
        batch: &RecordBatch,
    ) -> Result<Admission> {
        let entry = self.entry(name, key);
        let index = entry.index(name, table).await?;
        let hashes = hashes(batch, &table.schema()?, key.columns)?;
        let mut index = index.lock().expect("key index");
        if index.keys.len() + hashes.len() > self.max_keys {
            return Err(Error::UniqueKeyLimit { table: name.to_string(), limit: self.max_keys });
        }
        let mut added = Vec::new();
        let keep: BooleanArray = hashes
            .into_iter()
            .map(|h| match h {
                None => Some(true),
                Some(h) if index.keys.insert(h) => {
                    index.pending.insert(h);
                    added.push(h);
                    Some(true)
                }
                Some(_) => Some(false),
            })
            .collect();
        let duplicates = keep.false_count();
        Ok(Admission { keep, duplicates, added })
    }

    /// Gives back keys of a request that failed after admission (keys another writer has
    /// committed meanwhile stay taken).
    pub fn forget(&self, name: &TableName, added: &[u128]) {
        let entry = self.tables.lock().expect("unique keys").get(name).cloned();
        if let Some(index) = entry.as_ref().and_then(|e| e.index.get()) {
            let mut index = index.lock().expect("key index");
            for h in added {
                index.pending.remove(h);
                if !index.taken.remove(h) {
                    index.keys.remove(h);
                }
            }
        }
    }

    /// Appends `batches` — rows this process admitted — to `table` (of `name`, at its latest
    /// version) as one commit with the application transaction `(app_id, version)`. With
    /// `across` (the lake scope), rows whose key another writer committed first are left out
    /// (see the module docs) and the commit lands at exactly the version after those checked;
    /// otherwise it is a plain append. Answers the table at the new version and the rows left
    /// out.
    #[allow(clippy::too_many_arguments)]
    pub async fn append(
        &self,
        name: &TableName,
        key: KeySpec<'_>,
        mut table: LakeTable,
        batches: Vec<RecordBatch>,
        app_id: &str,
        version: i64,
        across: bool,
    ) -> Result<(LakeTable, usize)> {
        let entry = self.entry(name, key);
        let _committing = entry.committing.lock().await;
        let index = entry.index(name, &table).await?;
        let schema = table.schema()?;
        let hashes: Vec<Vec<Option<u128>>> =
            batches.iter().map(|b| hashes(b, &schema, key.columns)).collect::<Result<_>>()?;
        let (committed, dropped) = if across {
            let mut attempt = 0;
            loop {
                attempt += 1;
                catch_up(name, index, &table, key.columns).await?;
                let (rows, dropped) = {
                    let index = index.lock().expect("key index");
                    without_taken(&batches, &hashes, &index.taken)?
                };
                match table.clone().append_txn_next(rows, app_id, version).await {
                    Ok(committed) => break (committed, dropped),
                    Err(tarn_lake::Error::VersionTaken { .. })
                        if attempt < EXACT_COMMIT_ATTEMPTS =>
                    {
                        table.refresh().await?;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        } else {
            (table.append_txn(batches, app_id, version).await?, 0)
        };
        let mut index = index.lock().expect("key index");
        index.settle(hashes.iter().flatten().flatten());
        if across {
            index.seen = committed.version();
        }
        if dropped > 0 {
            tracing::info!(table = %name, rows = dropped, version = committed.version(), "left out rows whose unique key another writer committed first");
        }
        Ok((committed, dropped))
    }

    /// The rows of `batches` (in the table's `schema`) were committed by an earlier attempt
    /// whose answer was lost: their keys are no longer pending.
    pub fn settled(
        &self,
        name: &TableName,
        key: KeySpec<'_>,
        schema: &SchemaRef,
        batches: &[RecordBatch],
    ) {
        let entry = self.entry(name, key);
        let Some(index) = entry.index.get() else { return };
        let mut index = index.lock().expect("key index");
        for batch in batches {
            // Keys that cannot be read were not admitted either.
            if let Ok(hashes) = hashes(batch, schema, key.columns) {
                index.settle(hashes.iter().flatten());
            }
        }
    }
}

impl Index {
    /// `keys` are committed: no longer pending (nor taken).
    fn settle<'a>(&mut self, keys: impl IntoIterator<Item = &'a u128>) {
        for h in keys {
            self.pending.remove(h);
            self.taken.remove(h);
        }
    }
}

/// The rows of `batches` whose key (`hashes`, per batch and row) is not in `taken`, and how
/// many were left out.
fn without_taken(
    batches: &[RecordBatch],
    hashes: &[Vec<Option<u128>>],
    taken: &HashSet<u128>,
) -> Result<(Vec<RecordBatch>, usize)> {
    if taken.is_empty() {
        return Ok((batches.to_vec(), 0));
    }
    let mut dropped = 0;
    let mut kept = Vec::with_capacity(batches.len());
    for (batch, hashes) in batches.iter().zip(hashes) {
        let keep: BooleanArray =
            hashes.iter().map(|h| Some(!h.is_some_and(|h| taken.contains(&h)))).collect();
        dropped += keep.false_count();
        kept.push(filter_record_batch(batch, &keep).map_err(tarn_lake::Error::from)?);
    }
    Ok((kept, dropped))
}

/// Brings `index` up to `table`'s version: the keys of the data files other writers added
/// since the index's version are read back (or, when the log or a file is gone, the whole
/// table's keys); those of rows this process has not committed yet become taken.
async fn catch_up(
    name: &TableName,
    index: &Mutex<Index>,
    table: &LakeTable,
    key: &[String],
) -> Result<()> {
    let seen = index.lock().expect("key index").seen;
    if table.version() <= seen {
        return Ok(());
    }
    let schema = table.schema()?;
    let mut found = HashSet::new();
    let mut complete = false;
    if let Some(files) = table.files_added_since(seen).await? {
        complete = true;
        for file in &files {
            let Some(batches) = table.read_file_columns(file, key).await? else {
                complete = false;
                break;
            };
            for batch in &batches {
                found.extend(hashes(batch, &schema, key)?.into_iter().flatten());
            }
        }
    }
    if !complete {
        tracing::info!(table = %name, since = seen, version = table.version(), "commits or files since the unique-key index last looked are gone; reading every key of the table");
        found = load(table, key).await?;
    }
    let mut index = index.lock().expect("key index");
    for h in found {
        if index.pending.contains(&h) {
            index.taken.insert(h);
        }
        index.keys.insert(h);
    }
    index.seen = table.version();
    Ok(())
}

/// Scans the key columns of `table` into a set of hashes.
async fn load(table: &LakeTable, key: &[String]) -> Result<HashSet<u128>> {
    let schema = table.schema()?;
    let ctx = SessionContext::new();
    let provider = table.delta().table_provider().await.map_err(|e| Error::Scan(e.to_string()))?;
    let frame = ctx
        .read_table(provider)
        .and_then(|f| f.select_columns(&key.iter().map(String::as_str).collect::<Vec<_>>()))
        .map_err(|e| Error::Scan(e.to_string()))?;
    let mut stream = frame.execute_stream().await.map_err(|e| Error::Scan(e.to_string()))?;
    let mut set = HashSet::new();
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(|e| Error::Scan(e.to_string()))?;
        set.extend(hashes(&batch, &schema, key)?.into_iter().flatten());
    }
    Ok(set)
}
