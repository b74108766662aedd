//! Unique keys: a row whose key is in the table already, or earlier in the same request, is
//! not appended and counts as a duplicate.
//!
//! Per table with a `unique_key`, an index of the keys' 128-bit hashes (xxh3 of Arrow's row
//! encoding of the key columns) is loaded from the table on first use — one scan of the key
//! columns — and every admitted row's key is added before the request is logged, so two
//! concurrent requests carrying the same key admit it once. A request that fails after
//! admission gives its keys back. Keys with a null part are never duplicates (SQL `UNIQUE`
//! semantics).
//!
//! The index lives in this process: rows appended by another Tarn process sharing the lake are
//! seen when the index is next loaded (at start). Its size is bounded by `max_keys` per table;
//! past that, ingest into the table is refused with a clear error rather than growing memory
//! without bound.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::SchemaRef;
use arrow::row::{RowConverter, SortField};
use chrono::{DateTime, Utc};
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use tarn_catalog::TableName;
use tarn_lake::LakeTable;
use tokio::sync::OnceCell;

use crate::{Error, Result};

/// The keys of one table.
struct TableKeys {
    /// Which table and key this is: a table dropped and created again, or given another
    /// unique key, starts afresh.
    identity: (DateTime<Utc>, Vec<usize>),
    /// Loaded on first use.
    set: OnceCell<Mutex<HashSet<u128>>>,
    /// Keys of rows replayed from the write-ahead log before the index was loaded (in no
    /// Delta commit yet, so not seen by the scan).
    uncommitted: Mutex<Vec<u128>>,
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

/// The hashes of each row's key (`None` where a key column is null).
pub fn hashes(batch: &RecordBatch, schema: &SchemaRef, key: &[usize]) -> Result<Vec<Option<u128>>> {
    let fields: Vec<SortField> =
        key.iter().map(|&i| SortField::new(schema.field(i).data_type().clone())).collect();
    let converter = RowConverter::new(fields).map_err(tarn_lake::Error::from)?;
    let columns: Vec<ArrayRef> = key
        .iter()
        .map(|&i| {
            let wanted = schema.field(i);
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

impl UniqueKeys {
    /// Indexes holding at most `max_keys` keys per table.
    pub fn new(max_keys: usize) -> Self {
        UniqueKeys { max_keys, tables: Mutex::new(HashMap::new()) }
    }

    fn entry(&self, name: &TableName, created_at: DateTime<Utc>, key: &[usize]) -> Arc<TableKeys> {
        let identity = (created_at, key.to_vec());
        let fresh = || {
            Arc::new(TableKeys {
                identity: identity.clone(),
                set: OnceCell::new(),
                uncommitted: Mutex::new(Vec::new()),
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
    pub fn note_uncommitted(
        &self,
        name: &TableName,
        created_at: DateTime<Utc>,
        key: &[usize],
        keys: Vec<u128>,
    ) {
        let entry = self.entry(name, created_at, key);
        match entry.set.get() {
            Some(set) => set.lock().expect("key set").extend(keys),
            None => entry.uncommitted.lock().expect("uncommitted keys").extend(keys),
        }
    }

    /// Decides which rows of `batch` (in the table's schema) are new, and adds their keys.
    pub async fn admit(
        &self,
        name: &TableName,
        created_at: DateTime<Utc>,
        table: &LakeTable,
        batch: &RecordBatch,
        key: &[usize],
    ) -> Result<Admission> {
        let entry = self.entry(name, created_at, key);
        let set = entry
            .set
            .get_or_try_init(|| async {
                let mut set = load(table, key).await?;
                set.extend(entry.uncommitted.lock().expect("uncommitted keys").drain(..));
                tracing::info!(table = %name, keys = set.len(), "loaded the unique-key index");
                Ok::<_, Error>(Mutex::new(set))
            })
            .await?;
        let schema = table.schema()?;
        let hashes = hashes(batch, &schema, key)?;
        let mut set = set.lock().expect("key set");
        if set.len() + hashes.len() > self.max_keys {
            return Err(Error::UniqueKeyLimit { table: name.to_string(), limit: self.max_keys });
        }
        let mut added = Vec::new();
        let keep: BooleanArray = hashes
            .into_iter()
            .map(|h| match h {
                None => Some(true),
                Some(h) if set.insert(h) => {
                    added.push(h);
                    Some(true)
                }
                Some(_) => Some(false),
            })
            .collect();
        let duplicates = keep.false_count();
        Ok(Admission { keep, duplicates, added })
    }

    /// Gives back keys of a request that failed after admission.
    pub fn forget(&self, name: &TableName, added: &[u128]) {
        let entry = self.tables.lock().expect("unique keys").get(name).cloned();
        if let Some(set) = entry.as_ref().and_then(|e| e.set.get()) {
            let mut set = set.lock().expect("key set");
            for h in added {
                set.remove(h);
            }
        }
    }
}

/// Scans the key columns of `table` into a set of hashes.
async fn load(table: &LakeTable, key: &[usize]) -> Result<HashSet<u128>> {
    let schema = table.schema()?;
    let ctx = SessionContext::new();
    let provider = table.delta().table_provider().await.map_err(|e| Error::Scan(e.to_string()))?;
    let columns: Vec<String> = key.iter().map(|&i| schema.field(i).name().clone()).collect();
    let frame = ctx
        .read_table(provider)
        .and_then(|f| f.select_columns(&columns.iter().map(String::as_str).collect::<Vec<_>>()))
        .map_err(|e| Error::Scan(e.to_string()))?;
    let mut stream = frame.execute_stream().await.map_err(|e| Error::Scan(e.to_string()))?;
    let mut set = HashSet::new();
    let positions: Vec<usize> = (0..key.len()).collect();
    let key_schema = Arc::new(arrow::datatypes::Schema::new(
        key.iter().map(|&i| schema.field(i).clone()).collect::<Vec<_>>(),
    ));
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(|e| Error::Scan(e.to_string()))?;
        set.extend(hashes(&batch, &key_schema, &positions)?.into_iter().flatten());
    }
    Ok(set)
}
