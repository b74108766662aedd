//! One Delta table: append, refresh, statistics, history.

use arrow::array::RecordBatch;
use arrow::datatypes::{Field, Schema, SchemaRef};
use chrono::{DateTime, TimeZone, Utc};
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel as _;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::StructType;
use deltalake::kernel::Transaction;
use deltalake::protocol::SaveMode;
use deltalake::{DeltaTable, DeltaTableError};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::ObjectStoreExt;
use serde::Serialize;

use crate::{Error, Result};

/// How often a commit is retried when another writer committed the same version first.
/// Appends never conflict logically, so each retry simply takes the next version.
pub(crate) const COMMIT_RETRIES: usize = 100;

/// Properties of Tarn's commits: `retries` further versions tried when another writer took
/// the next one, the application transaction `txn`, and no checkpoint: checkpoints are written
/// by Tarn's maintenance (every N commits, configurable), not as a side effect of a commit.
fn commit_properties(txn: Option<Transaction>, retries: usize) -> CommitProperties {
    let properties =
        CommitProperties::default().with_max_retries(retries).with_create_checkpoint(false);
    match txn {
        Some(txn) => properties.with_application_transaction(txn),
        None => properties,
    }
}

/// A loaded Delta table in the lake.
#[derive(Debug, Clone)]
pub struct LakeTable {
    table: DeltaTable,
    /// The Arrow schema of the loaded version, converted once from the Delta schema (the
    /// conversion allocates per field; ingest asks for the schema on every request).
    schema: Option<SchemaRef>,
}

/// Statistics of a table's current version, read from the Delta log (no data file is opened).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TableStats {
    /// The current Delta version.
    pub version: u64,
    /// Number of live data files.
    pub files: usize,
    /// Total size of the live data files in bytes.
    pub bytes: u64,
    /// Number of rows, when every file's statistics record it.
    pub rows: Option<u64>,
    /// When the current version was committed.
    pub last_commit: Option<DateTime<Utc>>,
}

/// One entry of a table's history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Commit {
    /// The version this commit created.
    pub version: u64,
    /// When it was committed.
    pub timestamp: Option<DateTime<Utc>>,
    /// The operation recorded in the commit (`WRITE`, `CREATE TABLE`, `OPTIMIZE`, ...).
    pub operation: Option<String>,
    /// Number of data files the commit added.
    pub files_added: usize,
    /// Rows in the added files, when their statistics record it.
    pub rows_added: Option<u64>,
}

impl LakeTable {
    pub(crate) fn new(table: DeltaTable) -> Self {
        let schema = arrow_schema(&table);
        LakeTable { table, schema }
    }

    /// The underlying deltalake table, e.g. to build a DataFusion table provider.
    pub fn delta(&self) -> &DeltaTable {
        &self.table
    }

    pub(crate) fn into_delta(self) -> DeltaTable {
        self.table
    }

    /// The table's id, from its metadata (a table created anew at the same place has
    /// another).
    pub fn id(&self) -> Option<String> {
        self.table.snapshot().ok().map(|state| state.metadata().id().to_string())
    }

    /// The current version.
    pub fn version(&self) -> u64 {
        self.table.version().unwrap_or(0)
    }

    /// The table's schema as Arrow.
    pub fn schema(&self) -> Result<SchemaRef> {
        match &self.schema {
            Some(schema) => Ok(schema.clone()),
            None => Ok(self.table.snapshot()?.snapshot().arrow_schema()),
        }
    }

    /// The partition columns.
    pub fn partition_columns(&self) -> Result<Vec<String>> {
        Ok(self.table.snapshot()?.metadata().partition_columns().to_vec())
    }

    /// Reads commits made since this handle was loaded (by this or any other process).
    /// Returns true if the version moved.
    ///
    /// When nothing was committed since, this costs one listing of the log after the known
    /// version (one request on S3): deltalake's own refresh also reads `_last_checkpoint`
    /// every time, to adopt a checkpoint written at the same version, which a reader of the
    /// files does not need.
    pub async fn refresh(&mut self) -> Result<bool> {
        let before = self.version();
        if self.table.version().is_some() && !self.newer_version_listed().await? {
            return Ok(false);
        }
        self.table.update_incremental(None).await?;
        let moved = self.version() != before;
        if moved {
            // The schema may have evolved.
            self.schema = arrow_schema(&self.table);
        }
        Ok(moved)
    }

    /// Whether the log holds a version newer than the loaded one: one listing of
    /// `_delta_log/` after the loaded version's commit file.
    async fn newer_version_listed(&self) -> Result<bool> {
        let current = self.version();
        let store = self.table.log_store().object_store(None);
        let prefix = Path::from("_delta_log");
        let offset = Path::from(format!("_delta_log/{current:020}.json"));
        let mut listing = store.list_with_offset(Some(&prefix), &offset);
        while let Some(meta) = listing.try_next().await? {
            // Commits, checkpoints and their siblings are named by their version's 20 digits.
            let version =
                meta.location.filename().and_then(|name| name.get(..20)?.parse::<u64>().ok());
            if version.is_some_and(|v| v > current) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The table as it was at `version` (time travel). Fails with
    /// [`Error::VersionNotFound`] for a version not yet written, or one whose log was
    /// cleaned up.
    pub async fn at_version(&self, version: u64) -> Result<LakeTable> {
        let current = self.version();
        if version > current {
            return Err(Error::VersionNotFound(format!(
                "version {version} does not exist yet; the latest is {current}"
            )));
        }
        let mut table = self.table.clone();
        table.load_version(version).await.map_err(|e| match e {
            DeltaTableError::InvalidVersion(_) | DeltaTableError::NotATable(_) => {
                Error::VersionNotFound(format!(
                    "version {version} is no longer readable (its log was cleaned up)"
                ))
            }
            e => e.into(),
        })?;
        Ok(LakeTable::new(table))
    }

    /// The table as it was at `at`: the last version committed at or before that moment
    /// (time travel). Fails with [`Error::VersionNotFound`] when `at` is before the table's
    /// first readable commit.
    pub async fn at_time(&self, at: DateTime<Utc>) -> Result<LakeTable> {
        let mut table = self.table.clone();
        let before_first = || {
            Error::VersionNotFound(format!(
                "the table has no version committed at or before {}",
                at.to_rfc3339()
            ))
        };
        match table.load_with_datetime(at).await {
            Ok(()) => {
                // deltalake answers its oldest version for moments before it; that is not
                // what the table looked like then.
                let loaded = LakeTable::new(table);
                match loaded.stats().last_commit {
                    Some(committed) if committed > at => Err(before_first()),
                    _ => Ok(loaded),
                }
            }
            Err(DeltaTableError::InvalidVersion(_) | DeltaTableError::NotATable(_)) => {
                Err(before_first())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Appends the batches to the table as exactly one commit and returns the table at the new
    /// version. With no rows, nothing is committed and the table is returned as it was.
    ///
    /// When another writer commits first, the commit is retried on the next version; appends
    /// never conflict, so no data is lost and nothing is written twice.
    pub async fn append(self, batches: Vec<RecordBatch>) -> Result<LakeTable> {
        self.commit_with(batches, None, COMMIT_RETRIES).await
    }

    /// Like [`LakeTable::append`], and records the application transaction `(app_id,
    /// version)` in the same commit (a Delta `txn` action), so a writer can later ask which of
    /// its batches are in the table ([`LakeTable::txn_version`]) and never append one twice.
    pub async fn append_txn(
        self,
        batches: Vec<RecordBatch>,
        app_id: &str,
        version: i64,
    ) -> Result<LakeTable> {
        self.commit_with(batches, Some(Transaction::new(app_id, version)), COMMIT_RETRIES).await
    }

    /// The last version recorded for `app_id` by [`LakeTable::append_txn`], if any.
    pub async fn txn_version(&self, app_id: &str) -> Result<Option<i64>> {
        let state = self.table.snapshot()?;
        Ok(state.transaction_version(self.table.log_store().as_ref(), app_id).await?)
    }

    /// Appends `batches` (and `txn`) as one commit, trying at most `retries` further versions
    /// when another writer took the next one.
    pub(crate) async fn commit_with(
        self,
        batches: Vec<RecordBatch>,
        txn: Option<Transaction>,
        retries: usize,
    ) -> Result<LakeTable> {
        if batches.iter().all(|b| b.num_rows() == 0) && txn.is_none() {
            return Ok(self);
        }
        let table_schema = self.schema()?;
        let batches = batches
            .into_iter()
            .map(|batch| conform(batch, &table_schema))
            .collect::<Result<Vec<_>>>()?;
        let table = self
            .table
            .write(batches)
            .with_save_mode(SaveMode::Append)
            .with_writer_properties(crate::maintenance::append_writer())
            .with_commit_properties(commit_properties(txn, retries))
            .await?;
        Ok(LakeTable::new(table))
    }

    /// Commits `actions` as `operation` (with the table's commit retries, and no checkpoint:
    /// maintenance writes those), plus the application transaction `txn`, and returns the
    /// table at the new version. For writers that prepared their files themselves.
    pub(crate) async fn commit_actions(
        self,
        actions: Vec<deltalake::kernel::Action>,
        operation: deltalake::protocol::DeltaOperation,
        txn: Option<Transaction>,
    ) -> Result<LakeTable> {
        self.commit_actions_with(actions, operation, txn, COMMIT_RETRIES).await
    }

    /// [`LakeTable::commit_actions`], trying at most `retries` further versions.
    pub(crate) async fn commit_actions_with(
        self,
        actions: Vec<deltalake::kernel::Action>,
        operation: deltalake::protocol::DeltaOperation,
        txn: Option<Transaction>,
        retries: usize,
    ) -> Result<LakeTable> {
        let commit =
            deltalake::kernel::transaction::CommitBuilder::from(commit_properties(txn, retries))
                .with_actions(actions)
                .build(Some(self.table.snapshot()?), self.table.log_store(), operation)
                .await?;
        let mut table = self.table;
        table.update_incremental(Some(commit.version())).await?;
        Ok(LakeTable::new(table))
    }

    /// Adds nullable columns to the table (schema evolution); existing rows read them as
    /// null. Columns already in the table are left alone.
    pub async fn add_columns(self, fields: &[Field]) -> Result<LakeTable> {
        let existing = self.schema()?;
        let new: Vec<Field> = fields
            .iter()
            .filter(|f| existing.field_with_name(f.name()).is_err())
            .cloned()
            .collect();
        if new.is_empty() {
            return Ok(self);
        }
        if let Some(f) = new.iter().find(|f| !f.is_nullable()) {
            return Err(Error::SchemaMismatch(format!(
                "column '{}' cannot be added as non-nullable: existing rows have no value for it",
                f.name()
            )));
        }
        let delta: StructType = (&Schema::new(new)).try_into_kernel().map_err(|e| {
            Error::SchemaMismatch(format!("cannot store these columns in Delta: {e}"))
        })?;
        let table = self
            .table
            .add_columns()
            .with_fields(delta.fields().cloned().collect::<Vec<_>>())
            .with_commit_properties(CommitProperties::default().with_max_retries(COMMIT_RETRIES))
            .await?;
        Ok(LakeTable::new(table))
    }

    /// Statistics of the loaded version.
    pub fn stats(&self) -> TableStats {
        let Ok(state) = self.table.snapshot() else {
            return TableStats { version: 0, files: 0, bytes: 0, rows: Some(0), last_commit: None };
        };
        let mut files = 0;
        let mut bytes = 0u64;
        let mut rows = Some(0u64);
        for file in state.log_data().iter() {
            files += 1;
            bytes += file.size().max(0) as u64;
            rows = match (rows, file.num_records()) {
                (Some(total), Some(n)) => Some(total + n as u64),
                _ => None,
            };
        }
        let version = state.version();
        let last_commit =
            state.version_timestamp(version).and_then(|ms| Utc.timestamp_millis_opt(ms).single());
        TableStats { version, files, bytes, rows, last_commit }
    }

    /// The last `limit` commits, newest first, read from the Delta log.
    pub async fn history(&self, limit: usize) -> Result<Vec<Commit>> {
        let store = self.table.log_store().object_store(None);
        let current = self.version();
        let oldest = current.saturating_sub(limit.max(1) as u64 - 1);
        let mut commits = Vec::new();
        for version in (oldest..=current).rev() {
            let path = Path::from(format!("_delta_log/{version:020}.json"));
            let bytes = match store.get(&path).await {
                Ok(result) => result.bytes().await?,
                // Older commits may have been cleaned up after a checkpoint.
                Err(object_store::Error::NotFound { .. }) => break,
                Err(e) => return Err(e.into()),
            };
            commits.push(parse_commit(version, &bytes));
        }
        Ok(commits)
    }
}

/// Brings a batch to the table's schema: columns in the table's order, nullable columns the
/// batch lacks (added to the table after the batch was decoded) filled with nulls, and types
/// cast where they differ only in representation. Anything else is a [`Error::SchemaMismatch`].
pub(crate) fn conform(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    if batch.schema().fields() == schema.fields() {
        return Ok(batch);
    }
    let mismatch = || {
        Error::SchemaMismatch(format!(
            "expected columns {}, got {}",
            describe(schema),
            describe(&batch.schema())
        ))
    };
    let mut columns = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        let column = match batch.column_by_name(field.name()) {
            Some(column) if column.data_type() == field.data_type() => column.clone(),
            Some(column) => {
                arrow::compute::cast(column, field.data_type()).map_err(|_| mismatch())?
            }
            None if field.is_nullable() => {
                arrow::array::new_null_array(field.data_type(), batch.num_rows())
            }
            None => return Err(mismatch()),
        };
        columns.push(column);
    }
    if batch.schema().fields().iter().any(|f| schema.field_with_name(f.name()).is_err()) {
        return Err(mismatch());
    }
    RecordBatch::try_new(schema.clone(), columns).map_err(|e| Error::SchemaMismatch(e.to_string()))
}

fn arrow_schema(table: &DeltaTable) -> Option<SchemaRef> {
    table.snapshot().ok().map(|state| state.snapshot().arrow_schema())
}

pub(crate) fn describe(schema: &arrow::datatypes::Schema) -> String {
    let fields: Vec<String> =
        schema.fields().iter().map(|f| format!("{} {}", f.name(), f.data_type())).collect();
    format!("({})", fields.join(", "))
}

/// Summarises one commit file (newline-delimited JSON actions).
fn parse_commit(version: u64, bytes: &[u8]) -> Commit {
    let mut commit =
        Commit { version, timestamp: None, operation: None, files_added: 0, rows_added: Some(0) };
    for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let Ok(action) = serde_json::from_slice::<serde_json::Value>(line) else {
            continue;
        };
        if let Some(info) = action.get("commitInfo") {
            commit.timestamp = info
                .get("timestamp")
                .and_then(|t| t.as_i64())
                .and_then(|ms| Utc.timestamp_millis_opt(ms).single());
            commit.operation = info.get("operation").and_then(|o| o.as_str()).map(String::from);
        }
        if let Some(add) = action.get("add") {
            commit.files_added += 1;
            let records = add
                .get("stats")
                .and_then(|s| s.as_str())
                .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
                .and_then(|s| s.get("numRecords").and_then(|n| n.as_u64()));
            commit.rows_added = match (commit.rows_added, records) {
                (Some(total), Some(n)) => Some(total + n),
                _ => None,
            };
        }
    }
    commit
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_summary_counts_adds_and_rows() {
        let log = br#"{"commitInfo":{"timestamp":1700000000000,"operation":"WRITE"}}
{"add":{"path":"a.parquet","size":10,"stats":"{\"numRecords\":3}"}}
{"add":{"path":"b.parquet","size":10,"stats":"{\"numRecords\":4}"}}
"#;
        let c = parse_commit(7, log);
        assert_eq!(c.version, 7);
        assert_eq!(c.operation.as_deref(), Some("WRITE"));
        assert_eq!(c.files_added, 2);
        assert_eq!(c.rows_added, Some(7));
        assert_eq!(c.timestamp.unwrap().timestamp_millis(), 1_700_000_000_000);
    }

    #[test]
    fn missing_stats_make_rows_unknown() {
        let log = br#"{"add":{"path":"a.parquet","size":10}}"#;
        assert_eq!(parse_commit(0, log).rows_added, None);
    }
}
