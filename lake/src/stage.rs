//! Rows staged for an append: encoded into Parquet files in memory as they arrive, and
//! committed later in one step.
//!
//! A writer that collects rows for a while before committing them (ingest buffers records
//! for about a second) would otherwise hold them as Arrow arrays, several times the size of
//! their Parquet encoding. A [`Stage`] encodes each batch as it comes into the Parquet files
//! of the commit-to-be (one per partition), kept in memory; [`Stage::finish`] closes them
//! into [`Staged`] files with their Delta `add` actions and statistics, and
//! [`LakeTable::append_staged`] uploads them and commits them as one append. Until that
//! commit succeeds the staged files stay in memory, so a failed upload or commit is retried
//! with the same files, and nothing is encoded twice.
//!
//! Files are written as Tarn's appends write them (snappy, pages of about 2,048 rows; the
//! table's statistics settings). A batch with columns the open files lack
//! (the table gained columns meanwhile) closes them and opens new ones with its own schema;
//! the commit checks every file's columns against the table's.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use deltalake::kernel::{Action, Add, Transaction};
use deltalake::operations::write::writer::{DeltaWriter, WriterConfig};
use deltalake::operations::write::WriterStatsConfig;
use deltalake::protocol::{DeltaOperation, SaveMode};
use futures::TryStreamExt;
use object_store::memory::InMemory;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::table::conform;
use crate::{Error, LakeTable, Result};

/// Rows being encoded into the Parquet files of one append (see the module docs).
pub struct Stage {
    store: Arc<InMemory>,
    partition_columns: Vec<String>,
    stats: WriterStatsConfig,
    /// The writer of the open files, and their schema.
    open: Option<(SchemaRef, DeltaWriter)>,
    closed: Staged,
}

/// Parquet files in memory, ready for [`LakeTable::append_staged`].
pub struct Staged {
    store: Arc<InMemory>,
    adds: Vec<Add>,
    /// The schemas the files were written with.
    schemas: Vec<SchemaRef>,
    rows: usize,
}

impl LakeTable {
    /// A stage for rows to append to this table, in its partitioning.
    pub fn stage(&self) -> Result<Stage> {
        let snapshot = self.delta().snapshot()?;
        let store = Arc::new(InMemory::new());
        Ok(Stage {
            store: store.clone(),
            partition_columns: self.partition_columns()?,
            stats: WriterStatsConfig::from_config(snapshot.snapshot().table_configuration()),
            open: None,
            closed: Staged { store, adds: Vec::new(), schemas: Vec::new(), rows: 0 },
        })
    }

    /// Uploads the staged files into the table and commits them as one append, with the
    /// application transaction `(app_id, version)` (see [`LakeTable::append_txn`]). Returns
    /// the table at the new version.
    ///
    /// Every file's columns must be columns of the table, of the same types
    /// ([`Error::SchemaMismatch`] otherwise). The staged files are left as they are, so a
    /// failed call can be retried; a retried upload writes the same objects again.
    pub async fn append_staged(
        self,
        staged: &Staged,
        app_id: &str,
        version: i64,
    ) -> Result<LakeTable> {
        let table_schema = self.schema()?;
        for schema in &staged.schemas {
            for field in schema.fields() {
                match table_schema.field_with_name(field.name()) {
                    Ok(column) if column.data_type() == field.data_type() => {}
                    _ => {
                        return Err(Error::SchemaMismatch(format!(
                            "staged rows have the column {} {}, which the table does not have \
                             (its columns: {})",
                            field.name(),
                            field.data_type(),
                            crate::table::describe(&table_schema)
                        )))
                    }
                }
            }
        }
        let target = self.delta().object_store();
        let objects: Vec<_> = staged.store.list(None).try_collect().await?;
        for object in objects {
            let bytes = staged.store.get(&object.location).await?.bytes().await?;
            target.put(&object.location, bytes.into()).await?;
        }
        let actions = staged.adds.iter().cloned().map(Action::Add).collect();
        let partition_by = self.partition_columns()?;
        let operation = DeltaOperation::Write {
            mode: SaveMode::Append,
            partition_by: (!partition_by.is_empty()).then_some(partition_by),
            predicate: None,
        };
        self.commit_actions(actions, operation, Some(Transaction::new(app_id, version))).await
    }
}

impl Stage {
    /// Encodes `batch` into the staged files.
    pub async fn write(&mut self, batch: RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let batch = match &self.open {
            Some((schema, _)) => match conform(batch.clone(), schema) {
                Ok(conformed) => conformed,
                // New columns: the open files are closed, and new ones take the batch's.
                Err(_) => {
                    self.close_open().await?;
                    batch
                }
            },
            None => batch,
        };
        if self.open.is_none() {
            let schema = batch.schema();
            let config = WriterConfig::new(
                schema.clone(),
                self.partition_columns.clone(),
                // As Tarn's appends write files: snappy, small pages.
                Some(crate::maintenance::append_writer()),
                None,
                None,
                self.stats.num_indexed_cols,
                self.stats.stats_columns.clone(),
            );
            self.open = Some((schema, DeltaWriter::new(self.store.clone(), config)));
        }
        let (_, writer) = self.open.as_mut().expect("opened above");
        writer.write(&batch).await?;
        self.closed.rows += batch.num_rows();
        Ok(())
    }

    /// Rows written so far.
    pub fn rows(&self) -> usize {
        self.closed.rows
    }

    /// Closes the files: the staged rows, ready to be committed.
    pub async fn finish(mut self) -> Result<Staged> {
        self.close_open().await?;
        Ok(self.closed)
    }

    async fn close_open(&mut self) -> Result<()> {
        if let Some((schema, writer)) = self.open.take() {
            self.closed.adds.extend(writer.close().await?);
            self.closed.schemas.push(schema);
        }
        Ok(())
    }
}

impl Staged {
    /// Rows in the files.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Bytes of the files.
    pub fn bytes(&self) -> u64 {
        self.adds.iter().map(|a| a.size.max(0) as u64).sum()
    }
}
