//! What other writers added to a table since a version: the data files of their commits, read
//! back from the log, and columns of those files read straight from storage; and commits that
//! land at exactly the next version or not at all.
//!
//! A writer that must not commit rows clashing with rows someone else committed meanwhile (ingest
//! enforcing a table's unique key across several servers) reads what was added since the version
//! it last checked ([`LakeTable::files_added_since`], [`LakeTable::read_file_columns`]), leaves
//! out its clashing rows, and commits at exactly the next version
//! ([`LakeTable::append_txn_next`]); when another commit took that version first, it looks again.
//! Commits are totally ordered by their versions, so every commit is checked against all those
//! before it.

use std::sync::Arc;

use arrow::array::{new_null_array, ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use deltalake::kernel::transaction::TransactionError;
use deltalake::kernel::{Action, Add, Transaction};
// Deprecated in parquet 59.2 in favour of readers of one's own; DataFusion 55's Parquet scan
// reads through it all the same.
#[allow(deprecated)]
use deltalake::parquet::arrow::async_reader::ParquetObjectReader;
use deltalake::parquet::arrow::async_reader::ParquetRecordBatchStreamBuilder;
use deltalake::parquet::arrow::ProjectionMask;
use deltalake::parquet::errors::ParquetError;
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::DeltaTableError;
use futures::TryStreamExt;
use object_store::path::Path;

use crate::{Error, LakeTable, Result};

impl LakeTable {
    /// The data files that the commits after `since`, up to this handle's version, added as new
    /// data (`dataChange`: appends, merges, the rewritten files of deletes and updates; not
    /// compactions, which only move rows already in the table), in commit order. `None` when
    /// one of those commits is no longer in the log (cleaned up after a checkpoint): the caller
    /// must then read the whole table instead.
    pub async fn files_added_since(&self, since: u64) -> Result<Option<Vec<Add>>> {
        let log = self.delta().log_store();
        let mut added = Vec::new();
        for version in since + 1..=self.version() {
            let Some(bytes) = log.read_commit_entry(version).await? else {
                return Ok(None);
            };
            let actions = deltalake::logstore::get_actions(version, &bytes)?;
            added.extend(actions.into_iter().filter_map(|action| match action {
                Action::Add(add) if add.data_change => Some(add),
                _ => None,
            }));
        }
        Ok(Some(added))
    }

    /// Reads `columns` of the data file `add` straight from storage (whether or not a later
    /// commit removed it), as batches with exactly those columns, typed as the file stores them
    /// (partition columns as strings from the file's partition values; a column the file does
    /// not have, all null). `None` when the file is gone (vacuumed).
    pub async fn read_file_columns(
        &self,
        add: &Add,
        columns: &[String],
    ) -> Result<Option<Vec<RecordBatch>>> {
        let store = self.delta().object_store();
        // The log's path, decoded once by deltalake, is the object's name as stored.
        let location = Path::parse(&add.path).unwrap_or_else(|_| Path::from(add.path.as_str()));
        #[allow(deprecated)]
        let mut reader = ParquetObjectReader::new(store, location);
        if let Ok(size) = u64::try_from(add.size) {
            reader = reader.with_file_size(size);
        }
        let builder = match ParquetRecordBatchStreamBuilder::new(reader).await {
            Ok(builder) => builder,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(parquet_error(e)),
        };
        let file_schema = builder.schema().clone();
        let roots: Vec<usize> =
            columns.iter().filter_map(|c| file_schema.index_of(c).ok()).collect();
        let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
        let stream = builder.with_projection(mask).build().map_err(parquet_error)?;
        let read: Vec<RecordBatch> = match stream.try_collect().await {
            Ok(read) => read,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(parquet_error(e)),
        };
        let mut batches = Vec::with_capacity(read.len());
        for batch in read {
            let rows = batch.num_rows();
            let mut fields = Vec::with_capacity(columns.len());
            let mut arrays: Vec<ArrayRef> = Vec::with_capacity(columns.len());
            for column in columns {
                let (field, array) = match batch.column_by_name(column) {
                    Some(array) => {
                        (Field::new(column, array.data_type().clone(), true), array.clone())
                    }
                    None => {
                        let array: ArrayRef = match add.partition_values.get(column) {
                            Some(Some(value)) => {
                                Arc::new(StringArray::from(vec![value.as_str(); rows]))
                            }
                            _ => new_null_array(&DataType::Utf8, rows),
                        };
                        (Field::new(column, DataType::Utf8, true), array)
                    }
                };
                fields.push(field);
                arrays.push(array);
            }
            let options = arrow::array::RecordBatchOptions::new().with_row_count(Some(rows));
            batches.push(RecordBatch::try_new_with_options(
                Arc::new(Schema::new(fields)),
                arrays,
                &options,
            )?);
        }
        Ok(Some(batches))
    }

    /// Appends `batches` with the application transaction `(app_id, version)` as the commit of
    /// exactly the version after this handle's, and returns the table at that version. When
    /// another writer committed since this handle was loaded (or takes that version first),
    /// nothing is committed and the answer is [`Error::VersionTaken`]. With no rows, the
    /// commit records the transaction alone.
    pub async fn append_txn_next(
        self,
        batches: Vec<RecordBatch>,
        app_id: &str,
        version: i64,
    ) -> Result<LakeTable> {
        let next = self.version() + 1;
        let txn = Some(Transaction::new(app_id, version));
        let committed = if batches.iter().all(|b| b.num_rows() == 0) {
            let operation = DeltaOperation::Write {
                mode: SaveMode::Append,
                partition_by: None,
                predicate: None,
            };
            self.commit_actions_with(Vec::new(), operation, txn, 0).await
        } else {
            self.commit_with(batches, txn, 0).await
        };
        committed.map_err(|e| match e {
            Error::Delta(DeltaTableError::Transaction {
                source: TransactionError::MaxCommitAttempts(_),
            })
            | Error::Delta(DeltaTableError::VersionAlreadyExists(_)) => {
                Error::VersionTaken { version: next }
            }
            other => other,
        })
    }
}

/// True when the Parquet reader failed because the object is not there.
fn is_not_found(e: &ParquetError) -> bool {
    match e {
        ParquetError::External(source) => matches!(
            source.downcast_ref::<object_store::Error>(),
            Some(object_store::Error::NotFound { .. })
        ),
        _ => false,
    }
}

/// A Parquet error as the lake's, keeping storage errors as storage errors (so that an
/// unreachable store stays transient).
fn parquet_error(e: ParquetError) -> Error {
    match e {
        ParquetError::External(source) => match source.downcast::<object_store::Error>() {
            Ok(store) => Error::ObjectStore(*store),
            Err(other) => Error::Delta(DeltaTableError::Generic(other.to_string())),
        },
        other => Error::Delta(DeltaTableError::Parquet { source: other }),
    }
}
