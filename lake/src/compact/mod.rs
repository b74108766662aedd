//! Compaction: a table's small files packed into bins of about a target size per partition,
//! and each bin replaced by one file in an `OPTIMIZE` commit (`dataChange=false`). Readers
//! keep working: the old files stay until a vacuum removes them.
//!
//! A bin is compacted in one of two ways:
//!
//! * **stitched** ([`stitch`]) when its files' row groups are already large (at least
//!   [`stitch::MIN_ROW_GROUP_ROWS`] rows, as ingest writes at high rates): their encoded row
//!   groups are copied into the new file as they are. This costs reading and writing the
//!   bytes once, against decoding, encoding and compressing every value again; the files
//!   keep their compression (snappy for Tarn's appends) and page layout;
//! * **rewritten** otherwise (small row groups, as ingest writes at low rates, and every bin
//!   of a table with `cluster_by`): the rows are read and written again with the compaction
//!   writer (row groups of 128k rows, zstd level 1), sorted by the `cluster_by` columns when
//!   the table has them (see [`crate::cluster`]).
//!
//! Compaction runs beside ingest, so it is made cheap and bounded rather than maximal: one
//! bin at a time, on one core; a rewrite's sort holds at most [`SORT_MEMORY_BYTES`] before it
//! spills, and its writer one row group; a stitch holds about one row group.

mod stats;
mod stitch;

use std::collections::BTreeMap;
use std::sync::Arc;

use deltalake::datafusion::execution::runtime_env::RuntimeEnvBuilder;
use deltalake::datafusion::execution::session_state::SessionStateBuilder;
use deltalake::datafusion::logical_expr::ident;
use deltalake::datafusion::prelude::{SessionConfig, SessionContext};
use deltalake::kernel::{Action, Add, Remove};
use deltalake::protocol::DeltaOperation;
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use deltalake::DeltaTableError;
use futures::TryStreamExt;
use object_store::path::Path;

use crate::maintenance::{compaction_writer, Compaction};
use crate::table::COMMIT_RETRIES;
use crate::{LakeTable, Result};

/// Memory the sort of one compaction bin may hold before it spills sorted runs to disk.
const SORT_MEMORY_BYTES: usize = 256 * 1024 * 1024;

impl LakeTable {
    /// Compacts the table's files smaller than three quarters of `target_bytes` into files of
    /// about `target_bytes` (see the module docs), sorted by `cluster_by` when it names columns, and
    /// returns the table at the new version with what was done. With nothing to compact, no
    /// commit is made.
    pub async fn optimize(
        self,
        target_bytes: u64,
        cluster_by: &[String],
    ) -> Result<(LakeTable, Compaction)> {
        let target_bytes = target_bytes.max(1);
        let files_before = self.stats().files;
        let bins = self.plan(target_bytes, cluster_by).await?;
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
        let mut rewriter = None;
        let mut actions = Vec::new();
        let (mut removed, mut added) = (0u64, 0u64);
        for bin in bins {
            let adds = match &bin.stitch {
                Some(parts) => vec![self.stitch(&bin, parts).await?],
                None => {
                    let rewriter = match &mut rewriter {
                        Some(r) => r,
                        None => rewriter.insert(Rewriter::new(&self, cluster_by)?),
                    };
                    rewriter.rewrite(&self, &bin, target_bytes).await?
                }
            };
            added += adds.len() as u64;
            actions.extend(adds.into_iter().map(|mut add| {
                add.data_change = false;
                Action::Add(add)
            }));
            removed += bin.files.len() as u64;
            actions.extend(bin.files.into_iter().map(|f| Action::Remove(f.remove)));
        }
        let operation =
            DeltaOperation::Optimize { target_size: target_bytes as i64, predicate: None };
        let table = self.commit_actions_with(actions, operation, None, COMMIT_RETRIES).await?;
        let report = Compaction {
            files_before,
            files_after: table.stats().files,
            files_removed: removed,
            files_added: added,
            version: table.version(),
        };
        Ok((table, report))
    }

    /// The bins of a compaction: per partition, files smaller than [`settled`] in log
    /// order, packed until a bin reaches `target_bytes`, files to stitch apart from files to
    /// rewrite (and stitched files only with files of the same schema); bins of one file are
    /// left alone. Reads the footers of the files that may be stitched.
    async fn plan(&self, target_bytes: u64, cluster_by: &[String]) -> Result<Vec<Bin>> {
        let snapshot = self.delta().snapshot()?;
        // Stitching copies files as they are: not for tables whose files are sorted when
        // compacted, nor with column mapping (the log's statistics name physical columns).
        let mapping = snapshot.metadata().configuration().get("delta.columnMapping.mode");
        let may_stitch = cluster_by.is_empty() && mapping.is_none_or(|mode| mode == "none");
        let store = self.delta().object_store();
        // Per partition (its values, sorted by column): its bins, the last one's bytes.
        let mut partitions: BTreeMap<PartitionKey, Vec<(Bin, u64)>> = BTreeMap::new();
        for file in snapshot.log_data().iter() {
            let size = file.size().max(0) as u64;
            if size >= settled(target_bytes) {
                continue;
            }
            let remove = file.remove_action(false);
            // The log's paths are URL-encoded and `remove.path` is decoded; the object store
            // path is its encoding (a scan selects files by it, as deltalake's own compaction
            // does).
            let path = Path::from(remove.path.as_str());
            let stats = file.stats();
            let footer = match (&stats, file.num_records()) {
                (Some(_), Some(rows))
                    if may_stitch
                        && rows as i64 >= stitch::MIN_ROW_GROUP_ROWS
                        && file.deletion_vector_descriptor().is_none() =>
                {
                    let footer = stitch::footer(store.clone(), &path, size).await?;
                    stitch::stitchable(&footer).then_some(footer)
                }
                _ => None,
            };
            let mut key: PartitionKey = file.partition_values_map().into_iter().collect();
            key.sort();
            let bins = partitions.entry(key).or_default();
            // The open bin of the file's kind: rewrite, or stitch with the same layout.
            let open = bins.iter_mut().rev().find(|(bin, _)| match (&bin.stitch, &footer) {
                (None, None) => true,
                (Some(parts), Some(footer)) => stitch::same_layout(&parts[0].footer, footer),
                _ => false,
            });
            let (bin, filled) = match open {
                Some((bin, filled)) if *filled + size <= target_bytes => (bin, filled),
                _ => {
                    let stitch = footer.is_some().then(Vec::new);
                    bins.push((Bin { files: Vec::new(), stitch }, 0));
                    let (bin, filled) = bins.last_mut().expect("pushed");
                    (bin, filled)
                }
            };
            *filled += size;
            if let (Some(parts), Some(footer)) = (&mut bin.stitch, footer) {
                parts.push(stitch::Part { path: path.clone(), footer });
            }
            bin.files.push(BinFile { path, stats, remove });
        }
        Ok(partitions
            .into_values()
            .flatten()
            .map(|(bin, _)| bin)
            .filter(|bin| bin.files.len() > 1)
            .collect())
    }

    /// Stitches a bin's files into one (see [`stitch`]) next to the first, and returns its
    /// `add` action.
    async fn stitch(&self, bin: &Bin, parts: &[stitch::Part]) -> Result<Add> {
        let first = &bin.files[0];
        let name = format!("part-00000-{}-c000.parquet", uuid::Uuid::new_v4());
        let mut segments: Vec<_> = first.path.parts().collect();
        segments.pop();
        segments.push(name.as_str().into());
        let location = Path::from_iter(segments);
        let store = self.delta().object_store();
        let size = stitch::stitch(&store, parts, &location).await?;
        let fields = self.schema()?.fields().clone();
        let stats: Vec<&str> = bin.files.iter().filter_map(|f| f.stats.as_deref()).collect();
        let stats = stats::merge(&fields, &stats);
        Ok(Add {
            path: location.to_string(),
            size: size as i64,
            partition_values: first.remove.partition_values.clone().unwrap_or_default(),
            modification_time: chrono::Utc::now().timestamp_millis(),
            data_change: false,
            stats,
            tags: None,
            deletion_vector: None,
            base_row_id: None,
            default_row_commit_version: None,
            clustering_provider: None,
        })
    }
}

/// Size from which a file is left alone: three quarters of the target (as Iceberg's
/// `min-file-size-bytes`). Merging a file about the target's size with small ones would copy
/// it whole to save one file, again after every few flushes of a busy table.
fn settled(target_bytes: u64) -> u64 {
    target_bytes / 4 * 3
}

/// A file's partition values, by column.
type PartitionKey = Vec<(String, Option<String>)>;

/// Files compacted into one (or, rewritten, into files of at most the target size).
struct Bin {
    files: Vec<BinFile>,
    /// For a bin to stitch: its files' footers, in the order of `files`.
    stitch: Option<Vec<stitch::Part>>,
}

/// A file chosen for a compaction bin.
struct BinFile {
    /// Its object store path in the table.
    path: Path,
    /// Its statistics in the log.
    stats: Option<String>,
    /// The action that removes it from the table.
    remove: Remove,
}

/// Reads bins and writes their rows again, sorted by the `cluster_by` columns if any.
struct Rewriter {
    ctx: SessionContext,
    order: Vec<deltalake::datafusion::logical_expr::SortExpr>,
}

impl Rewriter {
    fn new(table: &LakeTable, cluster_by: &[String]) -> Result<Rewriter> {
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(SORT_MEMORY_BYTES, 1.0)
            .build_arc()
            .map_err(DeltaTableError::from)?;
        // One partition: maintenance runs beside ingest and queries, so it takes one core.
        let config = SessionConfig::new().with_target_partitions(1);
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(runtime)
            .with_default_features()
            .build();
        table.delta().update_datafusion_session(&state)?;
        let ctx = SessionContext::new_with_state(state);
        let order = cluster_by.iter().map(|c| ident(c).sort(true, false)).collect();
        Ok(Rewriter { ctx, order })
    }

    /// The `add` actions of the files `bin`'s rows were written into.
    async fn rewrite(&self, table: &LakeTable, bin: &Bin, target_bytes: u64) -> Result<Vec<Add>> {
        let provider = table
            .delta()
            .table_provider()
            .with_session(Arc::new(self.ctx.state()))
            .with_file_paths(bin.files.iter().map(|f| f.path.to_string()))
            .build()
            .await
            .map_err(DeltaTableError::from)?;
        let rows = self.ctx.read_table(Arc::new(provider)).map_err(DeltaTableError::from)?;
        let rows = if self.order.is_empty() { Ok(rows) } else { rows.sort(self.order.clone()) };
        let mut rows = rows
            .map_err(DeltaTableError::from)?
            .execute_stream()
            .await
            .map_err(DeltaTableError::from)?;
        let mut writer = RecordBatchWriter::for_table(table.delta())?
            .with_writer_properties(compaction_writer())
            .with_target_file_size(target_bytes);
        // The scan hands partition values over dictionary-encoded, strings possibly as
        // views: the writer takes the table's own types.
        let schema = writer.arrow_schema();
        while let Some(batch) = rows.try_next().await.map_err(DeltaTableError::from)? {
            writer.write(crate::table::conform(batch, &schema)?).await?;
        }
        Ok(writer.flush().await?)
    }
}
