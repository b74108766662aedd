//! Clustering: the rows of a data file sorted by the table's `cluster_by` columns, so that the
//! file's (and each row group's) min/max statistics of those columns cover narrow ranges and
//! filters on them skip data.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::compute::{
    concat_batches, lexsort_to_indices, take_record_batch, SortColumn, SortOptions,
};
use deltalake::datafusion::execution::runtime_env::RuntimeEnvBuilder;
use deltalake::datafusion::execution::session_state::SessionStateBuilder;
use deltalake::datafusion::logical_expr::ident;
use deltalake::datafusion::prelude::{SessionConfig, SessionContext};
use deltalake::kernel::Action;
use deltalake::protocol::DeltaOperation;
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use deltalake::DeltaTableError;
use futures::TryStreamExt;

use crate::maintenance::{compaction_writer, Compaction};
use crate::{LakeTable, Result};

/// Memory the sort of one compaction bin may hold before it spills sorted runs to disk.
const SORT_MEMORY_BYTES: usize = 256 * 1024 * 1024;

/// The rows of `batches` as one batch sorted by `columns` (in that order, ascending, nulls
/// last). Columns the batches do not have are left out of the order; with none left, or no
/// rows, the batches are returned as they are.
pub fn sort_rows(batches: Vec<RecordBatch>, columns: &[String]) -> Result<Vec<RecordBatch>> {
    let Some(first) = batches.first() else { return Ok(batches) };
    let schema = first.schema();
    let positions: Vec<usize> = columns.iter().filter_map(|c| schema.index_of(c).ok()).collect();
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    if positions.is_empty() || rows < 2 {
        return Ok(batches);
    }
    let all = concat_batches(&schema, &batches)?;
    drop(batches);
    let options = SortOptions { descending: false, nulls_first: false };
    let keys: Vec<SortColumn> = positions
        .iter()
        .map(|&i| SortColumn { values: all.column(i).clone(), options: Some(options) })
        .collect();
    let order = lexsort_to_indices(&keys, None)?;
    Ok(vec![take_record_batch(&all, &order)?])
}

impl LakeTable {
    /// Compaction of a clustered table: small files are packed into bins of about
    /// `target_bytes` per partition (as [`LakeTable::optimize`] does), and each bin is
    /// rewritten as files sorted by `columns` (ascending, nulls last), so that the statistics
    /// of the compacted files cover narrow ranges of those columns. The commit removes the
    /// bins' files and adds the new ones, all with `dataChange=false`, as an `OPTIMIZE`.
    ///
    /// Memory is bounded: each bin is sorted by DataFusion within [`SORT_MEMORY_BYTES`],
    /// spilling sorted runs to the temp dir beyond that, and the writer streams the sorted rows
    /// into files of at most `target_bytes`, one row group at a time.
    pub(crate) async fn compact_sorted(
        self,
        target_bytes: u64,
        columns: &[String],
    ) -> Result<(LakeTable, Compaction)> {
        let files_before = self.stats().files;
        let bins = self.bins(target_bytes)?;
        if bins.is_empty() {
            let version = self.version();
            let report = Compaction {
                files_before,
                files_after: files_before,
                files_removed: 0,
                files_added: 0,
                version,
            };
            return Ok((self, report));
        }
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(SORT_MEMORY_BYTES, 1.0)
            .build_arc()
            .map_err(DeltaTableError::from)?;
        // One partition: maintenance runs beside ingest and queries, so it takes one core.
        let config = SessionConfig::new().with_target_partitions(1);
        let state = Arc::new(
            SessionStateBuilder::new()
                .with_config(config)
                .with_runtime_env(runtime)
                .with_default_features()
                .build(),
        );
        self.delta().update_datafusion_session(state.as_ref())?;
        let ctx = SessionContext::new_with_state(state.as_ref().clone());
        let order: Vec<_> = columns.iter().map(|c| ident(c).sort(true, false)).collect();
        let mut actions = Vec::new();
        let (mut removed, mut added) = (0u64, 0u64);
        for bin in bins {
            let provider = self
                .delta()
                .table_provider()
                .with_session(state.clone())
                .with_file_paths(bin.iter().map(|f| f.selection.clone()))
                .build()
                .await
                .map_err(DeltaTableError::from)?;
            let mut rows = ctx
                .read_table(Arc::new(provider))
                .and_then(|rows| rows.sort(order.clone()))
                .map_err(DeltaTableError::from)?
                .execute_stream()
                .await
                .map_err(DeltaTableError::from)?;
            let mut writer = RecordBatchWriter::for_table(self.delta())?
                .with_writer_properties(compaction_writer())
                .with_target_file_size(target_bytes);
            // The scan hands partition values over dictionary-encoded, strings possibly as
            // views: the writer takes the table's own types.
            let schema = writer.arrow_schema();
            while let Some(batch) = rows.try_next().await.map_err(DeltaTableError::from)? {
                writer.write(crate::table::conform(batch, &schema)?).await?;
            }
            for mut add in writer.flush().await? {
                add.data_change = false;
                actions.push(Action::Add(add));
                added += 1;
            }
            removed += bin.len() as u64;
            actions.extend(bin.into_iter().map(|f| Action::Remove(f.remove)));
        }
        let operation =
            DeltaOperation::Optimize { target_size: target_bytes as i64, predicate: None };
        let table = self.commit_actions(actions, operation, None).await?;
        let report = Compaction {
            files_before,
            files_after: table.stats().files,
            files_removed: removed,
            files_added: added,
            version: table.version(),
        };
        Ok((table, report))
    }

    /// The bins of a compaction: per partition, files smaller than `target_bytes` in log
    /// order, packed until a bin reaches `target_bytes`; bins of one file are left alone.
    fn bins(&self, target_bytes: u64) -> Result<Vec<Vec<BinFile>>> {
        // Per partition (its values, sorted by column): the bins, and the last one's bytes.
        let mut partitions: BTreeMap<PartitionKey, (Vec<Vec<BinFile>>, u64)> = BTreeMap::new();
        for file in self.delta().snapshot()?.log_data().iter() {
            let size = file.size().max(0) as u64;
            if size >= target_bytes {
                continue;
            }
            let mut key: PartitionKey = file.partition_values_map().into_iter().collect();
            key.sort();
            let (bins, filled) = partitions.entry(key).or_default();
            if bins.is_empty() || *filled + size > target_bytes {
                bins.push(Vec::new());
                *filled = 0;
            }
            *filled += size;
            let remove = file.remove_action(false);
            // The log's paths are URL-encoded and `remove.path` is decoded; a scan selects
            // files by their object store path (as deltalake's own compaction does).
            let selection = object_store::path::Path::from(remove.path.as_str()).to_string();
            bins.last_mut().expect("a bin").push(BinFile { selection, remove });
        }
        Ok(partitions
            .into_values()
            .flat_map(|(bins, _)| bins)
            .filter(|bin| bin.len() > 1)
            .collect())
    }
}

/// A file's partition values, by column.
type PartitionKey = Vec<(String, Option<String>)>;

/// A file chosen for a compaction bin.
struct BinFile {
    /// Its object store path in the table, to select it in a scan.
    selection: String,
    /// The action that removes it from the table.
    remove: deltalake::kernel::Remove,
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn batch(days: &[Option<&str>], ids: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("day", DataType::Utf8, true),
            Field::new("id", DataType::Int64, false),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(days.to_vec())),
                Arc::new(Int64Array::from(ids.to_vec())),
            ],
        )
        .unwrap()
    }

    #[test]
    fn rows_are_sorted_across_batches_by_the_columns_in_order_nulls_last() {
        let batches = vec![
            batch(&[Some("b"), None, Some("a")], &[3, 9, 2]),
            batch(&[Some("a"), Some("b")], &[1, 0]),
        ];
        let sorted = sort_rows(batches, &["day".into(), "id".into(), "missing".into()]).unwrap();
        assert_eq!(sorted.len(), 1);
        let ids = sorted[0].column(1).as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(ids.values().to_vec(), vec![1, 2, 0, 3, 9]);
        let unsorted = vec![batch(&[Some("b")], &[1]), batch(&[Some("a")], &[2])];
        let kept = sort_rows(unsorted, &["nope".into()]).unwrap();
        assert_eq!(kept.len(), 2, "no known column: left as it is");
    }
}
