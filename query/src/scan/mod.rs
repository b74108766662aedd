//! Tarn's own scan of Delta tables.
//!
//! A table version's live files come from deltalake's snapshot, with the statistics the Delta
//! log keeps for every file and every column ([`files::TableFiles`], built once per version
//! and cached). A scan then:
//!
//! - skips the files whose statistics (or partition values) show that the query's filters
//!   keep none of their rows (a [`PruningPredicate`] over the log's statistics, when the scan
//!   is planned: no file is opened for it);
//! - hands DataFusion the statistics of what it reads, per file and for the table: row counts,
//!   and for every column min, max and null count (and, for a declared single-column
//!   `unique_key`, the distinct count), so that joins are ordered on estimates and
//!   `count(*)` is answered without reading data;
//! - splits a file that holds more than a partition's share of the rows into pieces of rows
//!   (a [`ParquetRowSelection`] each), so that a table of one large file, or of files of
//!   unequal sizes, is read by every core: a file's row groups are the smallest unit
//!   DataFusion divides between partitions, and Delta writers put up to a million rows in
//!   one (see [`split_large_files`]); not for a scan with a limit, nor one whose filters
//!   DataFusion estimates to keep fewer than [`MIN_SPLIT_ROWS`] rows (a lookup by key reads a
//!   few pages, and each piece would open the file again);
//! - plans a plain `DataSourceExec` over a `ParquetSource`, exactly what DataFusion plans for
//!   its own Parquet tables, with the session's Parquet settings: the physical optimizer
//!   pushes the filters (and the joins' dynamic filters) into it, which prunes row groups and
//!   pages, and it can be serialized with datafusion-proto;
//! - on a single node, gets a [`runtime_filter::RuntimeFilterExec`] above it when joins sent it
//!   dynamic filters, which drops the rows they rule out where that is cheaper than leaving it
//!   to the joins.
//!
//! Tables with features this scan does not read (deletion vectors, column mapping, other
//! reader features) are read with deltalake's provider instead; the reason is logged once
//! per table version.
//!
//! [`PruningPredicate`]: datafusion::physical_optimizer::pruning::PruningPredicate

mod files;
mod runtime_filter;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arrow::array::Array;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::stats::Precision;
use datafusion::common::{DFSchema, Statistics};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::parquet::ParquetRowSelection;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::table_schema::TableSchema;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::Result;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_expr::intervals::utils::check_support;
use datafusion::physical_expr::{analyze, AnalysisContext, PhysicalExpr};
use datafusion::physical_optimizer::pruning::PruningPredicateBuilder;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::ExecutionPlan;
use deltalake::parquet::arrow::arrow_reader::{RowSelection, RowSelector};
use object_store::ObjectStore;
use tarn_catalog::{Catalog, TableDefinition, TableName};
use tarn_lake::LakeTable;

use crate::error::carry;
use files::TableFiles;
pub(crate) use runtime_filter::RuntimeFilters;

/// Which provider reads Delta tables.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DeltaReader {
    /// Tarn's own scan (this module), falling back to deltalake's provider for tables with
    /// features it does not read.
    #[default]
    Tarn,
    /// deltalake's table provider for every table (to compare, or to step around a problem).
    Deltalake,
}

impl std::str::FromStr for DeltaReader {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "tarn" => Ok(DeltaReader::Tarn),
            "deltalake" => Ok(DeltaReader::Deltalake),
            other => Err(format!("unknown Delta reader '{other}' (expected tarn or deltalake)")),
        }
    }
}

/// Most bytes the cached file lists of table versions hold together (roughly: paths, and a
/// statistics entry per file and column).
const CACHE_BYTES: usize = 256 << 20;

/// Most table versions whose file lists are cached.
const CACHE_ENTRIES: usize = 1024;

/// What every Delta scan of an engine shares: the session its settings come from, which
/// reader to use, and the file lists of the table versions read lately.
#[derive(Debug)]
pub(crate) struct Scans {
    session: Arc<SessionState>,
    reader: DeltaReader,
    /// Whether large files are split into pieces of rows (not when plans go to workers:
    /// datafusion-proto does not carry a piece's row selection).
    split_files: bool,
    cache: Mutex<FilesCache>,
}

/// How a table version is read.
#[derive(Debug, Clone)]
enum Plan {
    Files(Arc<TableFiles>),
    /// Through deltalake's provider, for this reason.
    Deltalake(String),
}

/// A table version: the table's URL, its id (a table created anew at the same place has
/// another), its version, and the unique-key column its statistics were built with.
type CacheKey = (String, String, u64, Option<String>);

#[derive(Debug, Default)]
struct FilesCache {
    entries: HashMap<CacheKey, (Instant, Plan)>,
    bytes: usize,
}

impl FilesCache {
    fn get(&mut self, key: &CacheKey) -> Option<Plan> {
        let (used, plan) = self.entries.get_mut(key)?;
        *used = Instant::now();
        Some(plan.clone())
    }

    fn insert(&mut self, key: CacheKey, plan: Plan) {
        let size = plan_bytes(&plan);
        if size > CACHE_BYTES {
            return;
        }
        while !self.entries.is_empty()
            && (self.bytes + size > CACHE_BYTES || self.entries.len() >= CACHE_ENTRIES)
        {
            let oldest =
                self.entries.iter().min_by_key(|(_, (used, _))| *used).map(|(k, _)| k.clone());
            if let Some((_, plan)) = oldest.and_then(|k| self.entries.remove(&k)) {
                self.bytes -= plan_bytes(&plan);
            }
        }
        self.bytes += size;
        if let Some((_, replaced)) = self.entries.insert(key, (Instant::now(), plan)) {
            self.bytes -= plan_bytes(&replaced);
        }
    }
}

fn plan_bytes(plan: &Plan) -> usize {
    match plan {
        Plan::Files(files) => files.approx_bytes,
        Plan::Deltalake(reason) => reason.len() + 64,
    }
}

impl Scans {
    /// Scans with the settings of `session`, by `reader`; `split_files` says whether large
    /// files are read in pieces ([`split_large_files`]).
    pub(crate) fn new(session: Arc<SessionState>, reader: DeltaReader, split_files: bool) -> Self {
        Scans { session, reader, split_files, cache: Mutex::default() }
    }

    /// The table provider of `table` at the version it is loaded at.
    pub(crate) async fn provider(
        &self,
        catalog: &Catalog,
        name: &TableName,
        definition: &TableDefinition,
        table: &LakeTable,
    ) -> Result<Arc<dyn TableProvider>> {
        let plan = match self.reader {
            DeltaReader::Deltalake => Plan::Deltalake("deltalake is the configured reader".into()),
            DeltaReader::Tarn => self.plan(name, definition, table)?,
        };
        match plan {
            Plan::Files(files) => {
                let table_url = table.delta().table_url();
                let store = catalog.lake().store_for_url(table_url).map_err(carry)?;
                Ok(Arc::new(DeltaScan {
                    store_url: ObjectStoreUrl::parse(files::store_url(table_url))?,
                    store,
                    files,
                    split_files: self.split_files,
                }))
            }
            Plan::Deltalake(_) => {
                Ok(table.delta().table_provider().with_session(self.session.clone()).await?)
            }
        }
    }

    fn plan(
        &self,
        name: &TableName,
        definition: &TableDefinition,
        table: &LakeTable,
    ) -> Result<Plan> {
        let unique = match definition.spec.unique_key.as_slice() {
            [column] => Some(column.as_str()),
            _ => None,
        };
        let key = (
            table.delta().table_url().to_string(),
            table.id().unwrap_or_default(),
            table.version(),
            unique.map(str::to_string),
        );
        if let Some(plan) = self.cache.lock().expect("scan cache lock").get(&key) {
            return Ok(plan);
        }
        let view_types = self.session.config_options().execution.parquet.schema_force_view_types;
        let plan = match TableFiles::build(table, view_types, unique) {
            Ok(files) => Plan::Files(Arc::new(files?)),
            Err(files::Unsupported(reason)) => {
                tracing::info!(
                    table = %name,
                    version = table.version(),
                    reason = %reason,
                    "reading the table with deltalake's provider: Tarn's scan does not read it"
                );
                Plan::Deltalake(reason)
            }
        };
        self.cache.lock().expect("scan cache lock").insert(key, plan.clone());
        Ok(plan)
    }
}

/// One version of a Delta table, read by Tarn's scan.
#[derive(Debug)]
struct DeltaScan {
    files: Arc<TableFiles>,
    store_url: ObjectStoreUrl,
    store: Arc<dyn ObjectStore>,
    split_files: bool,
}

impl DeltaScan {
    /// The scan's filters as one predicate over its columns, as DataFusion evaluates it
    /// (`None`: no filter, or one DataFusion cannot plan here, which then prunes nothing).
    fn predicate(&self, state: &dyn Session, filters: &[Expr]) -> Option<Arc<dyn PhysicalExpr>> {
        let predicate = conjunction(filters.iter().cloned())?;
        let schema = DFSchema::try_from(self.files.scan_schema.clone());
        match schema.and_then(|schema| state.create_physical_expr(predicate, &schema)) {
            Ok(physical) => Some(physical),
            Err(e) => {
                tracing::debug!(error = %e, "file statistics not used to prune");
                None
            }
        }
    }

    /// The files a scan with `predicate` (its filters) and `limit` reads: those whose
    /// statistics do not show that the predicate keeps none of their rows; and with a limit
    /// and no filter, only as many as hold that many rows.
    fn select(
        &self,
        state: &dyn Session,
        predicate: Option<&Arc<dyn PhysicalExpr>>,
        filtered: bool,
        limit: Option<usize>,
    ) -> Vec<usize> {
        let files = &self.files;
        let mut keep: Vec<usize> = (0..files.files.len()).collect();
        if let Some(predicate) = predicate {
            match self.pruning(state, predicate.clone()) {
                Ok(Some(mask)) => keep.retain(|&i| mask[i]),
                Ok(None) => {}
                Err(e) => tracing::debug!(error = %e, "file statistics not used to prune"),
            }
        }
        if let (Some(limit), false) = (limit, filtered) {
            let rows = files.row_counts();
            if rows.null_count() == 0 {
                let mut total = 0u64;
                keep.retain(|&i| {
                    let needed = total < limit as u64;
                    total += rows.value(i);
                    needed
                });
            }
        }
        keep
    }

    /// How many of the rows of the files of `statistics` `predicate` keeps, as DataFusion
    /// estimates it from the columns' bounds (an equality on a number column whose bounds
    /// span 6M values, over 1M rows: one row); `None` where it cannot (a condition on
    /// strings).
    fn estimated_rows(
        &self,
        predicate: &Arc<dyn PhysicalExpr>,
        statistics: &Statistics,
    ) -> Option<u64> {
        let rows = *statistics.num_rows.get_value()? as f64;
        let schema = &self.files.scan_schema;
        if !check_support(predicate, schema) {
            return None;
        }
        let context =
            AnalysisContext::try_from_statistics(schema, &statistics.column_statistics).ok()?;
        let selectivity = analyze(predicate, context, schema).ok()?.selectivity?;
        Some((rows * selectivity).ceil() as u64)
    }

    /// Which files may hold rows `predicate` keeps (`None`: the predicate cannot be checked
    /// against statistics).
    fn pruning(
        &self,
        state: &dyn Session,
        predicate: Arc<dyn PhysicalExpr>,
    ) -> Result<Option<Vec<bool>>> {
        let schema = self.files.scan_schema.clone();
        let max_in_list = state.config_options().execution.parquet.max_in_list_size;
        let Some(pruning) = PruningPredicateBuilder::new()
            .with_file_schema(schema)
            .with_max_in_list_size(max_in_list)
            .build(predicate)
        else {
            return Ok(None);
        };
        Ok(Some(pruning.prune(self.files.as_ref())?))
    }
}

/// Files with fewer rows than this are never split.
const MIN_SPLIT_ROWS: u64 = 64 * 1024;

/// `files` with each file that holds more than a partition's share of the rows (the rows of
/// all of them over `partitions`, and at least [`MIN_SPLIT_ROWS`]) replaced by pieces of about
/// that share: the same file, each piece with a [`ParquetRowSelection`] of consecutive rows,
/// so that together they read every row once. Each piece comes with the bytes it stands for
/// (the file's, in proportion to its rows).
///
/// DataFusion divides a scan between partitions by files and by byte ranges of files, but a
/// range reads the row groups that start in it: a file of one large row group (Delta writers
/// put up to a million rows in one) is read by one core, whatever its size. Pieces of rows
/// are read by different partitions, and when one finishes first it takes the next piece
/// from the others (DataFusion's work stealing between the streams of a scan). A piece skips
/// the pages of the rows it does not read without decompressing them; without a page index
/// loaded (no filter on the scan) it still fetches its row groups' column chunks whole.
///
/// A file without an exact row count in its statistics is not split.
fn split_large_files(
    files: Vec<PartitionedFile>,
    partitions: usize,
) -> Vec<(PartitionedFile, u64)> {
    let rows = |f: &PartitionedFile| match f.statistics.as_deref().map(|s| s.num_rows) {
        Some(Precision::Exact(n)) => Some(n as u64),
        _ => None,
    };
    let total: u64 = files.iter().filter_map(rows).sum();
    let share = total.div_ceil(partitions.max(1) as u64).max(MIN_SPLIT_ROWS);
    let mut out = Vec::with_capacity(files.len());
    for file in files {
        let bytes = file.object_meta.size;
        let n = match rows(&file) {
            Some(n) if partitions > 1 && n > share => n,
            _ => {
                out.push((file, bytes));
                continue;
            }
        };
        let pieces = n.div_ceil(share);
        for i in 0..pieces {
            let (start, end) = (n * i / pieces, n * (i + 1) / pieces);
            let share_of_bytes = u128::from(bytes) * u128::from(end - start) / u128::from(n);
            out.push((rows_of(&file, start, end, n), share_of_bytes as u64));
        }
    }
    out
}

/// The piece of `file` (of `total` rows) that reads its rows `start..end`, with statistics to
/// match: that many rows exactly, the file's column statistics as bounds.
fn rows_of(file: &PartitionedFile, start: u64, end: u64, total: u64) -> PartitionedFile {
    let selectors = [
        RowSelector::skip(start as usize),
        RowSelector::select((end - start) as usize),
        RowSelector::skip((total - end) as usize),
    ];
    let selection: RowSelection =
        selectors.into_iter().filter(|s| s.row_count > 0).collect::<Vec<_>>().into();
    let mut piece = file.clone().with_extension(ParquetRowSelection::new(selection));
    if let Some(stats) = file.statistics.as_deref() {
        let share = (end - start) as f64 / total as f64;
        piece.statistics = Some(Arc::new(Statistics {
            num_rows: Precision::Exact((end - start) as usize),
            total_byte_size: stats.total_byte_size.with_estimated_selectivity(share),
            column_statistics: stats
                .column_statistics
                .iter()
                .map(|c| c.clone().to_inexact())
                .collect(),
        }));
    }
    piece
}

/// `files` (each with the bytes it stands for) in `groups` groups of about the same number of
/// bytes.
fn group_by_size(files: Vec<(PartitionedFile, u64)>, groups: usize) -> Vec<FileGroup> {
    let groups = groups.max(1).min(files.len().max(1));
    let mut sorted = files;
    sorted.sort_by_key(|(_, bytes)| std::cmp::Reverse(*bytes));
    let mut bins: Vec<(u64, Vec<PartitionedFile>)> = vec![(0, Vec::new()); groups];
    for (file, bytes) in sorted {
        let smallest = bins.iter_mut().min_by_key(|(b, _)| *b).expect("at least one bin");
        smallest.0 += bytes;
        smallest.1.push(file);
    }
    bins.into_iter().filter(|(_, f)| !f.is_empty()).map(|(_, f)| FileGroup::new(f)).collect()
}

#[async_trait]
impl TableProvider for DeltaScan {
    fn schema(&self) -> SchemaRef {
        self.files.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        // Every filter prunes files and row groups; DataFusion still applies it to the rows.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    fn statistics(&self) -> Option<Statistics> {
        let stats = &self.files.statistics;
        Some(Statistics {
            num_rows: stats.num_rows,
            total_byte_size: stats.total_byte_size,
            column_statistics: self
                .files
                .to_scan
                .iter()
                .map(|&i| stats.column_statistics[i].clone())
                .collect(),
        })
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let files = &self.files;
        let projection: Vec<usize> = match projection {
            Some(columns) => columns.iter().map(|&i| files.to_scan[i]).collect(),
            None => files.to_scan.clone(),
        };
        let predicate = self.predicate(state, filters);
        let selected = self.select(state, predicate.as_ref(), !filters.is_empty(), limit);
        if selected.is_empty() {
            let schema = Arc::new(files.scan_schema.project(&projection)?);
            return Ok(Arc::new(EmptyExec::new(schema)));
        }
        let statistics = files.statistics_of(&selected)?;
        let chosen: Vec<PartitionedFile> =
            selected.iter().map(|&i| files.files[i].clone()).collect();
        let partitions = state.config().target_partitions();
        // A scan with a limit, or with filters estimated to keep few rows (a lookup by key),
        // reads a few pages: its files stay whole, each opened once.
        let few_rows = || {
            let estimate = predicate.as_ref().and_then(|p| self.estimated_rows(p, &statistics));
            estimate.is_some_and(|rows| rows < MIN_SPLIT_ROWS)
        };
        let pieces = if self.split_files && limit.is_none() && !few_rows() {
            split_large_files(chosen, partitions)
        } else {
            chosen
                .into_iter()
                .map(|f| {
                    let bytes = f.object_meta.size;
                    (f, bytes)
                })
                .collect()
        };
        let groups = group_by_size(pieces, partitions);
        state.runtime_env().register_object_store(self.store_url.as_ref(), self.store.clone());
        let table_schema = TableSchema::builder(files.file_schema.clone())
            .with_table_partition_cols(files.partition_fields.clone())
            .build();
        let config = FileScanConfigBuilder::new(
            self.store_url.clone(),
            Arc::new(ParquetSource::new(table_schema)),
        )
        .with_file_groups(groups)
        .with_statistics(statistics)
        .with_projection_indices(Some(projection))?
        .with_limit(limit)
        .build();
        ParquetFormat::default()
            .with_options(state.table_options().parquet.clone())
            .create_physical_plan(state, config)
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::common::stats::Precision;
    use datafusion::common::{ColumnStatistics, ScalarValue, Statistics};
    use datafusion::datasource::listing::PartitionedFile;
    use datafusion::datasource::physical_plan::parquet::ParquetRowSelection;

    use super::{group_by_size, split_large_files, MIN_SPLIT_ROWS};

    fn file(path: &str, rows: Option<usize>, bytes: u64) -> PartitionedFile {
        let mut file = PartitionedFile::new(path, bytes);
        if let Some(rows) = rows {
            file.statistics = Some(Arc::new(Statistics {
                num_rows: Precision::Exact(rows),
                total_byte_size: Precision::Exact(bytes as usize),
                column_statistics: vec![ColumnStatistics {
                    min_value: Precision::Exact(ScalarValue::Int64(Some(0))),
                    ..ColumnStatistics::new_unknown()
                }],
            }));
        }
        file
    }

    /// The rows a piece reads, as `(start, end)`; the whole file when it is not a piece.
    fn range(file: &PartitionedFile, total: usize) -> (usize, usize) {
        let Some(selection) = file.extension::<ParquetRowSelection>() else {
            return (0, total);
        };
        let mut at = 0;
        let mut selected = None;
        for s in selection.selection().iter() {
            if !s.skip {
                assert!(selected.is_none(), "one run of rows per piece");
                selected = Some((at, at + s.row_count));
            }
            at += s.row_count;
        }
        assert_eq!(at, total, "a selection covers the whole file");
        selected.expect("a piece reads rows")
    }

    /// A file with more than a partition's share of the rows becomes pieces that read each row
    /// once, with exact row counts and the file's column statistics as bounds; small files and
    /// files without a row count stay whole.
    #[test]
    fn large_files_become_pieces_of_rows() {
        let files = vec![
            file("big", Some(1_000_000), 40_000_000),
            file("mid", Some(450_000), 18_000_000),
            file("small", Some(1_000), 100_000),
            file("unknown", None, 5_000_000),
        ];
        let pieces = split_large_files(files, 2);
        let of = |path: &str| -> Vec<_> {
            pieces.iter().filter(|(f, _)| f.object_meta.location.as_ref() == path).collect()
        };
        // The share is (1,000,000 + 450,000 + 1,000) / 2 = 725,500 rows.
        let big = of("big");
        assert_eq!(big.len(), 2);
        assert_eq!(range(&big[0].0, 1_000_000), (0, 500_000));
        assert_eq!(range(&big[1].0, 1_000_000), (500_000, 1_000_000));
        assert_eq!(big[0].1 + big[1].1, 40_000_000, "the bytes are shared out");
        let stats = big[1].0.statistics.as_deref().unwrap();
        assert_eq!(stats.num_rows, Precision::Exact(500_000));
        assert_eq!(
            stats.column_statistics[0].min_value,
            Precision::Inexact(ScalarValue::Int64(Some(0)))
        );
        for path in ["mid", "small", "unknown"] {
            let whole = of(path);
            assert_eq!(whole.len(), 1, "{path}");
            assert!(whole[0].0.extension::<ParquetRowSelection>().is_none(), "{path}");
        }
        // One partition: nothing to share out.
        let one = split_large_files(vec![file("big", Some(1_000_000), 1)], 1);
        assert_eq!(one.len(), 1);
        // Below the smallest size worth splitting, a file stays whole.
        let rows = MIN_SPLIT_ROWS as usize;
        assert_eq!(split_large_files(vec![file("f", Some(rows), 1)], 8).len(), 1);
        assert_eq!(split_large_files(vec![file("f", Some(4 * rows), 1)], 8).len(), 4);
        // The pieces go to groups by the bytes they stand for.
        let groups = group_by_size(pieces, 2);
        assert_eq!(groups.len(), 2);
    }
}
