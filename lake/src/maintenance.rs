//! Table maintenance: compaction (optimize), checkpoints and vacuum.

use std::time::Duration;

use deltalake::parquet::basic::{Compression, ZstdLevel};
use deltalake::parquet::file::properties::WriterProperties;
use serde::Serialize;

use crate::{LakeTable, Result};

/// Rows per row group in files written by compaction.
const COMPACTION_ROW_GROUP_ROWS: usize = 128 * 1024;

/// What a compaction did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Compaction {
    /// Live files before.
    pub files_before: usize,
    /// Live files after.
    pub files_after: usize,
    /// Files the commit removed (rewritten into larger ones).
    pub files_removed: u64,
    /// Files it added.
    pub files_added: u64,
    /// The table version after compaction.
    pub version: u64,
}

/// What a vacuum did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Vacuum {
    /// Data files no longer referenced and older than the retention, deleted (or, in a dry
    /// run, that would be).
    pub files: Vec<String>,
    /// True when nothing was deleted because it was a dry run.
    pub dry_run: bool,
}

/// How compaction writes its files: row groups of `COMPACTION_ROW_GROUP_ROWS` and zstd level 1.
pub(crate) fn compaction_writer() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).expect("valid level")))
        .set_max_row_group_row_count(Some(COMPACTION_ROW_GROUP_ROWS))
        .set_data_page_row_count_limit(PAGE_ROWS)
        .set_dictionary_page_size_limit(DICTIONARY_PAGE_BYTES)
        .build()
}

/// Rows in a data page of the files Tarn writes (Parquet's default is 20,000; the writer ends a
/// page after the first 1,024-row batch that reaches this many, so a page holds at most
/// 3,071). A page is what the page index prunes and what a scan decodes whole: a lookup that
/// finds its key in one page decodes about this many rows of every column it reads.
pub(crate) const PAGE_ROWS: usize = 2048;

/// Largest dictionary page of a column chunk (Parquet's default is 1 MiB). A scan reads a
/// chunk's dictionary page whichever of its pages it needs; a column with more distinct values
/// than fit falls back to plain encoding.
pub(crate) const DICTIONARY_PAGE_BYTES: usize = 64 * 1024;

/// How Tarn's appends write Parquet: as deltalake's appends (snappy), with pages of about
/// [`PAGE_ROWS`] rows and dictionaries of at most [`DICTIONARY_PAGE_BYTES`].
pub(crate) fn append_writer() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_data_page_row_count_limit(PAGE_ROWS)
        .set_dictionary_page_size_limit(DICTIONARY_PAGE_BYTES)
        .build()
}

impl LakeTable {
    /// Live files smaller than `bytes`: the candidates for compaction.
    pub fn small_files(&self, bytes: u64) -> usize {
        self.delta()
            .snapshot()
            .map(|state| {
                state.log_data().iter().filter(|f| (f.size().max(0) as u64) < bytes).count()
            })
            .unwrap_or(0)
    }

    /// Writes a checkpoint of the current version, so that readers load the table state from
    /// one Parquet file instead of replaying every JSON commit.
    pub async fn checkpoint(&self) -> Result<()> {
        deltalake::checkpoints::create_checkpoint(self.delta(), None).await?;
        Ok(())
    }

    /// Deletes data files that no version newer than `retention` references any more.
    pub async fn vacuum(self, retention: Duration, dry_run: bool) -> Result<(LakeTable, Vacuum)> {
        let retention = chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
        let (table, metrics) = self
            .into_delta()
            .vacuum()
            .with_retention_period(retention)
            // Tarn's own retention setting decides; the Delta table property's minimum (7 days
            // by default) would otherwise refuse shorter ones.
            .with_enforce_retention_duration(false)
            .with_dry_run(dry_run)
            .await?;
        Ok((
            LakeTable::new(table),
            Vacuum { files: metrics.files_deleted, dry_run: metrics.dry_run },
        ))
    }
}
