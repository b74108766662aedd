//! Stored results: a Parquet file per query in the lake, with its status beside it, written
//! as the query streams and read back page by page.

use std::sync::Arc;

use arrow::array::RecordBatch;
use datafusion::execution::SendableRecordBatchStream;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use parquet::arrow::{AsyncArrowWriter, ParquetRecordBatchStreamBuilder};

use super::status::{QueryState, QueryStatus};
use super::QueryManager;
use crate::provider::TableRead;
use crate::{Error, Result};

/// Where async query results live in the lake.
pub const RESULTS_PREFIX: &str = "_tarn/results";

/// Rows per row group of a stored result: the unit a page read starts from.
pub(super) const RESULT_ROW_GROUP_ROWS: usize = 65_536;

impl QueryManager {
    /// Opens a page of a succeeded query's result: rows `offset..offset + max_rows`.
    pub async fn page(
        &self,
        id: &str,
        offset: u64,
        max_rows: Option<u64>,
    ) -> Result<(QueryStatus, SendableRecordBatchStream)> {
        let status = self.status(id).await?;
        match status.state {
            QueryState::Succeeded => {}
            QueryState::Queued | QueryState::Running => {
                return Err(Error::NotReady(format!(
                    "query '{id}' is {}; its results can be read once it has succeeded",
                    if status.state == QueryState::Queued { "queued" } else { "running" }
                )))
            }
            QueryState::Failed => {
                let reason = status.error.as_ref().map(|e| e.message.as_str()).unwrap_or("");
                return Err(Error::NotReady(format!("query '{id}' failed: {reason}")));
            }
            QueryState::Cancelled => {
                return Err(Error::NotReady(format!("query '{id}' was cancelled")))
            }
        }
        let Some(path) = status.result_path.clone() else {
            return Err(Error::QueryNotFound(id.to_string()));
        };
        // Deprecated in parquet 59 in favour of a hand-written `AsyncFileReader`; it is the
        // same code, and DataFusion's own reader is not public.
        #[allow(deprecated)]
        let reader = parquet::arrow::async_reader::ParquetObjectReader::new(
            self.store.clone(),
            Path::from(path),
        );
        let builder = match ParquetRecordBatchStreamBuilder::new(reader).await {
            Ok(builder) => builder,
            // Deleted meanwhile (expired, or the query whose result this reused was deleted).
            Err(parquet::errors::ParquetError::External(e))
                if matches!(
                    e.downcast_ref::<object_store::Error>(),
                    Some(object_store::Error::NotFound { .. })
                ) =>
            {
                return Err(Error::QueryNotFound(id.to_string()))
            }
            Err(e) => return Err(datafusion::error::DataFusionError::from(e).into()),
        };
        // Only the row groups the page touches are read.
        let mut groups = Vec::new();
        let mut skip = offset;
        let mut first_start = None;
        let mut start = 0u64;
        let end = max_rows.map(|n| offset.saturating_add(n));
        for (i, group) in builder.metadata().row_groups().iter().enumerate() {
            let rows = group.num_rows() as u64;
            let group_end = start + rows;
            if group_end > offset && end.is_none_or(|end| start < end) {
                first_start.get_or_insert(start);
                groups.push(i);
            }
            start = group_end;
        }
        if let Some(first) = first_start {
            skip = offset - first;
        }
        let mut builder = builder.with_row_groups(groups).with_offset(skip as usize);
        if let Some(n) = max_rows {
            builder = builder.with_limit(n as usize);
        }
        let schema = builder.schema().clone();
        let stream = builder
            .build()
            .map_err(|e| Error::from(datafusion::error::DataFusionError::from(e)))?
            .map_err(datafusion::error::DataFusionError::from);
        Ok((
            status,
            Box::pin(datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(
                schema, stream,
            )),
        ))
    }

    /// Stores the status, or logs why it could not (the query goes on either way).
    pub(super) async fn persist_best_effort(&self, status: &QueryStatus) {
        if let Err(e) = self.persist(status).await {
            tracing::warn!(query = %status.id, error = %e, "could not store the query's status");
        }
    }

    pub(super) async fn persist(&self, status: &QueryStatus) -> Result<()> {
        let path = Path::from(format!("{RESULTS_PREFIX}/{}/query.json", status.id));
        let bytes = serde_json::to_vec_pretty(status).expect("a status serializes");
        self.store.put(&path, PutPayload::from(bytes)).await.map_err(lake_error)?;
        Ok(())
    }

    pub(super) async fn delete_result(&self, id: &str) -> Result<()> {
        let prefix = Path::from(format!("{RESULTS_PREFIX}/{id}"));
        let files: Vec<_> =
            self.store.list(Some(&prefix)).try_collect().await.map_err(lake_error)?;
        for file in files {
            match self.store.delete(&file.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(lake_error(e)),
            }
        }
        Ok(())
    }
}

pub(super) fn lake_error(e: object_store::Error) -> Error {
    Error::Catalog(tarn_catalog::Error::ObjectStore(e))
}

pub(super) fn check_id(id: &str) -> Result<()> {
    if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(Error::QueryNotFound(id.to_string()))
    }
}

pub(super) fn result_path(id: &str) -> Path {
    Path::from(format!("{RESULTS_PREFIX}/{id}/result.parquet"))
}

pub(super) fn reuse_key(sql: &str, reads: &[TableRead]) -> u128 {
    let mut text = sql.trim().to_string();
    for read in reads {
        text.push('\0');
        text.push_str(&read.table);
        text.push('#');
        text.push_str(&read.table_id);
        text.push('@');
        text.push_str(&read.version.to_string());
    }
    xxhash_rust::xxh3::xxh3_128(text.as_bytes())
}

/// Streams the query's batches into one Parquet file at `path`; returns rows and bytes.
pub(super) async fn write_result(
    store: Arc<dyn ObjectStore>,
    path: &Path,
    stream: &mut SendableRecordBatchStream,
) -> Result<(u64, u64)> {
    let properties = parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
        .set_max_row_group_row_count(Some(RESULT_ROW_GROUP_ROWS))
        .build();
    // Storage failing under the writer is an outage; anything else the writer says is a bug.
    let parquet_error = |e: parquet::errors::ParquetError| match crate::error::store_cause(&e) {
        Some(store) if tarn_lake::is_transient_store_error(store) => {
            Error::StorageUnavailable(e.to_string())
        }
        _ => Error::Engine(datafusion::error::DataFusionError::from(e)),
    };
    let mut writer = AsyncArrowWriter::try_new(
        object_store::buffered::BufWriter::new(store.clone(), path.clone()),
        stream.schema(),
        Some(properties),
    )
    .map_err(parquet_error)?;
    let mut rows = 0u64;
    while let Some(batch) = stream.next().await {
        let batch: RecordBatch = batch?;
        rows += batch.num_rows() as u64;
        writer.write(&batch).await.map_err(parquet_error)?;
    }
    writer.close().await.map_err(parquet_error)?;
    let bytes = store.head(path).await.map_err(lake_error)?.size;
    Ok((rows, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuse_keys_change_with_sql_and_versions() {
        let read = |v, id: &str| TableRead {
            table: "default.events".into(),
            version: v,
            time_travel: false,
            files: false,
            table_id: id.into(),
        };
        let a = reuse_key("SELECT 1 FROM events", &[read(1, "t1")]);
        assert_eq!(a, reuse_key(" SELECT 1 FROM events\n", &[read(1, "t1")]));
        assert_ne!(a, reuse_key("SELECT 1 FROM events", &[read(2, "t1")]));
        assert_ne!(a, reuse_key("SELECT 2 FROM events", &[read(1, "t1")]));
        // The same name and version of a table dropped and created again.
        assert_ne!(a, reuse_key("SELECT 1 FROM events", &[read(1, "t2")]));
    }

    #[test]
    fn ids_are_checked_before_they_name_a_path() {
        assert!(check_id("0123456789abcdef0123456789abcdef").is_ok());
        assert!(check_id("../../etc/passwd").is_err());
        assert!(check_id("").is_err());
    }
}
