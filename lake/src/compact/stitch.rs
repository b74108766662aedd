//! Stitching: files whose row groups are already large are compacted by copying their
//! encoded row groups, byte for byte, into one new file, with a new footer. Nothing is
//! decoded or compressed again, so the cost is reading and writing the bytes once; the
//! statistics of the new file's `add` action are merged from the log's (see [`super::stats`]).
//!
//! Pages, dictionaries, compression and the page index stay as the files were written. The
//! new file takes the first file's Arrow schema (Parquet key-value metadata); files are only
//! stitched together when their Parquet schemas and Arrow schemas are equal. Bloom filters
//! would not be carried over, so files that have them are rewritten instead.

use std::ops::Range;
use std::sync::Arc;

use bytes::{Buf, Bytes};
use deltalake::parquet::arrow::async_reader::MetadataFetch;
use deltalake::parquet::column::writer::ColumnCloseResult;
use deltalake::parquet::errors::{ParquetError, Result as ParquetResult};
use deltalake::parquet::file::metadata::{
    PageIndexPolicy, ParquetMetaData, ParquetMetaDataReader, RowGroupMetaData,
};
use deltalake::parquet::file::properties::{WriterProperties, WriterVersion};
use deltalake::parquet::file::reader::{ChunkReader, Length};
use deltalake::parquet::file::writer::SerializedFileWriter;
use deltalake::DeltaTableError;
use futures::future::BoxFuture;
use futures::FutureExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};

use crate::Result;

/// Smallest row group a file may have to be stitched; files with smaller ones are rewritten
/// (into row groups of the compaction writer's size). Half of those.
pub(crate) const MIN_ROW_GROUP_ROWS: i64 = 64 * 1024;

/// Size of the parts a stitched file is uploaded in (S3 wants at least 5 MiB).
const UPLOAD_PART_BYTES: usize = 8 * 1024 * 1024;

/// Parts uploaded at once.
const UPLOAD_CONCURRENCY: usize = 2;

/// The Parquet footer of a file, with its page index when it has one.
pub(crate) async fn footer(
    store: Arc<dyn ObjectStore>,
    path: &Path,
    size: u64,
) -> Result<Arc<ParquetMetaData>> {
    let fetch = Fetch { store, path: path.clone() };
    let metadata = ParquetMetaDataReader::new()
        .with_page_index_policy(PageIndexPolicy::Optional)
        .load_and_finish(fetch, size)
        .await
        .map_err(DeltaTableError::from)?;
    Ok(Arc::new(metadata))
}

/// Reads byte ranges of one object, for the footer reader.
struct Fetch {
    store: Arc<dyn ObjectStore>,
    path: Path,
}

impl MetadataFetch for Fetch {
    fn fetch(&mut self, range: Range<u64>) -> BoxFuture<'_, ParquetResult<Bytes>> {
        async move {
            self.store
                .get_range(&self.path, range)
                .await
                .map_err(|e| ParquetError::External(Box::new(e)))
        }
        .boxed()
    }
}

/// Whether the row groups of a file can be copied as they are: every one holds at least
/// [`MIN_ROW_GROUP_ROWS`] rows and no column has a Bloom filter.
pub(crate) fn stitchable(metadata: &ParquetMetaData) -> bool {
    metadata.num_row_groups() > 0
        && metadata.row_groups().iter().all(|group| {
            group.num_rows() >= MIN_ROW_GROUP_ROWS
                && group.columns().iter().all(|c| c.bloom_filter_offset().is_none())
        })
}

/// Whether two files can be stitched into one: the same Parquet schema and Arrow schema.
pub(crate) fn same_layout(a: &ParquetMetaData, b: &ParquetMetaData) -> bool {
    a.file_metadata().schema() == b.file_metadata().schema() && arrow_schema(a) == arrow_schema(b)
}

fn arrow_schema(metadata: &ParquetMetaData) -> Option<&str> {
    metadata
        .file_metadata()
        .key_value_metadata()?
        .iter()
        .find(|kv| kv.key == "ARROW:schema")
        .and_then(|kv| kv.value.as_deref())
}

/// A file to stitch: where it is and its footer.
pub(crate) struct Part {
    pub(crate) path: Path,
    pub(crate) footer: Arc<ParquetMetaData>,
}

/// Copies the row groups of `parts`, in order, into a new file at `location` (uploaded in
/// parts as it is written, so memory holds about one row group), and returns its size.
pub(crate) async fn stitch(
    store: &Arc<dyn ObjectStore>,
    parts: &[Part],
    location: &Path,
) -> Result<u64> {
    let first = parts.first().expect("a bin has files").footer.file_metadata();
    let version =
        if first.version() >= 2 { WriterVersion::PARQUET_2_0 } else { WriterVersion::PARQUET_1_0 };
    let properties = WriterProperties::builder()
        .set_writer_version(version)
        .set_key_value_metadata(first.key_value_metadata().cloned())
        .build();
    let schema = first.schema_descr().root_schema_ptr();
    let mut writer = SerializedFileWriter::new(Vec::new(), schema, Arc::new(properties))
        .map_err(DeltaTableError::from)?;
    let mut upload = WriteMultipart::new_with_chunk_size(
        store.put_multipart(location).await?,
        UPLOAD_PART_BYTES,
    );
    let copied = async {
        for part in parts {
            for (index, group) in part.footer.row_groups().iter().enumerate() {
                let chunk = Chunk::read(store, &part.path, group).await?;
                copy_row_group(&mut writer, &chunk, &part.footer, index)
                    .map_err(DeltaTableError::from)?;
                writer.flush().map_err(|e| DeltaTableError::from(ParquetError::from(e)))?;
                upload.wait_for_capacity(UPLOAD_CONCURRENCY).await?;
                upload.write(&std::mem::take(writer.inner_mut()));
            }
        }
        let size = writer.bytes_written() as u64;
        // The footer (and page index) is what `into_inner` writes.
        let rest = writer.into_inner().map_err(DeltaTableError::from)?;
        upload.write(&rest);
        Ok::<u64, crate::Error>(size + rest.len() as u64)
    }
    .await;
    match copied {
        Ok(size) => {
            upload.finish().await?;
            Ok(size)
        }
        Err(e) => {
            // The partial upload is discarded; the error is the copy's.
            let _ = upload.abort().await;
            Err(e)
        }
    }
}

/// Appends row group `index` of a file, whose bytes `chunk` holds, to `writer`.
fn copy_row_group(
    writer: &mut SerializedFileWriter<Vec<u8>>,
    chunk: &Chunk,
    footer: &ParquetMetaData,
    index: usize,
) -> ParquetResult<()> {
    let group = footer.row_group(index);
    let column_indexes = footer.column_index().and_then(|c| c.get(index));
    let offset_indexes = footer.offset_index().and_then(|o| o.get(index));
    let mut out = writer.next_row_group()?;
    for (i, column) in group.columns().iter().enumerate() {
        let close = ColumnCloseResult {
            bytes_written: column.compressed_size() as u64,
            rows_written: group.num_rows() as u64,
            metadata: column.clone(),
            bloom_filter: None,
            column_index: column_indexes.and_then(|c| c.get(i)).cloned(),
            offset_index: offset_indexes.and_then(|o| o.get(i)).cloned(),
        };
        out.append_column(chunk, close)?;
    }
    out.close()?;
    Ok(())
}

/// The bytes of one row group's column chunks, read at once, at their offsets in the file.
struct Chunk {
    start: u64,
    bytes: Bytes,
}

impl Chunk {
    async fn read(
        store: &Arc<dyn ObjectStore>,
        path: &Path,
        group: &RowGroupMetaData,
    ) -> Result<Chunk> {
        let spans = group.columns().iter().map(|c| {
            let start = c.dictionary_page_offset().unwrap_or_else(|| c.data_page_offset()) as u64;
            (start, start + c.compressed_size() as u64)
        });
        let (start, end) = spans.fold((u64::MAX, 0), |(s, e), (a, b)| (s.min(a), e.max(b)));
        let bytes = store.get_range(path, start..end).await?;
        Ok(Chunk { start, bytes })
    }

    fn slice(&self, start: u64, length: u64) -> ParquetResult<Bytes> {
        let from = start.checked_sub(self.start).map(|f| f as usize);
        match from {
            Some(from) if from as u64 + length <= self.bytes.len() as u64 => {
                Ok(self.bytes.slice(from..from + length as usize))
            }
            _ => Err(ParquetError::General(format!(
                "bytes {start}..{} are outside the row group read ({}..{})",
                start + length,
                self.start,
                self.start + self.bytes.len() as u64
            ))),
        }
    }
}

impl Length for Chunk {
    fn len(&self) -> u64 {
        self.start + self.bytes.len() as u64
    }
}

impl ChunkReader for Chunk {
    type T = bytes::buf::Reader<Bytes>;

    fn get_read(&self, start: u64) -> ParquetResult<Self::T> {
        let length = self.len().saturating_sub(start);
        Ok(self.slice(start, length)?.reader())
    }

    fn get_bytes(&self, start: u64, length: usize) -> ParquetResult<Bytes> {
        self.slice(start, length as u64)
    }
}
