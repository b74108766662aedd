//! Loading files: CSV, NDJSON, JSON arrays and Parquet, from `tarn load`, uploads to
//! `POST /v1/tables/{table}/files` and the drop zone.
//!
//! A file is read in chunks of [`LOAD_CHUNK_ROWS`] records, each checked against the table's
//! contract like any request ([`crate::prepare`]) and committed straight to Delta (the file
//! itself is the durable copy, so no write-ahead log is needed: a [`Loader`] needs only the
//! catalog). Every commit carries a Delta `txn` whose application id names the load and whose
//! version is the chunk's number: a load that is interrupted and started again with the same
//! load id skips the chunks the table already holds, so a file is never loaded twice. Reading
//! the next chunk overlaps with committing the current one; memory stays at about two chunks
//! (of at most [`LOAD_CHUNK_BYTES`] of NDJSON) whatever the file's size. JSON files, which
//! cannot be split without parsing them whole, are the exception: they are read whole, up to
//! [`MAX_JSON_FILE_BYTES`].

mod chunks;
mod format;
mod report;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::RecordBatch;
use futures::StreamExt;
use tarn_catalog::TableName;
use tokio::io::AsyncWriteExt;

pub use chunks::{LOAD_CHUNK_BYTES, LOAD_CHUNK_ROWS, MAX_JSON_FILE_BYTES, MAX_LINE_BYTES};
pub use format::FileFormat;
pub use report::{load_app_id, load_id_for, FileLoad, LoadProgress, LoadReport, Upload};

use crate::contract::{self, Rejection};
use crate::plan::Tables;
use crate::prepare::Prepared;
use crate::{Error, Result, Source};
use chunks::Chunk;

/// Settings of a [`Loader`].
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Where uploads and dropped files are copied while they load (local disk).
    pub spool_dir: PathBuf,
    /// Largest accepted upload, in bytes.
    pub max_upload_bytes: u64,
}

/// Loads files into tables, straight to Delta (see the module documentation).
pub struct Loader {
    tables: Arc<Tables>,
    config: LoadConfig,
}

impl Loader {
    /// A loader writing through `tables`. Files a crashed upload or drop left in the spool
    /// directory are removed.
    pub fn new(tables: Arc<Tables>, config: LoadConfig) -> Self {
        match std::fs::remove_dir_all(&config.spool_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(dir = %config.spool_dir.display(), error = %e, "cannot clear the upload spool")
            }
        }
        Loader { tables, config }
    }

    /// The tables it writes through.
    pub fn tables(&self) -> &Arc<Tables> {
        &self.tables
    }

    /// Where uploads and dropped files are copied while they load.
    pub fn spool_dir(&self) -> &Path {
        &self.config.spool_dir
    }

    /// A fresh file name in the spool directory (created when missing).
    pub async fn spool_file(&self, prefix: &str) -> Result<PathBuf> {
        let dir = &self.config.spool_dir;
        tokio::fs::create_dir_all(dir).await.map_err(|e| spool_error(dir, e))?;
        Ok(dir.join(format!("{prefix}-{}", uuid::Uuid::new_v4().simple())))
    }

    /// Loads an upload: its bytes are spooled to local disk (at most
    /// [`LoadConfig::max_upload_bytes`]), then loaded like a file. With a key, a retried upload
    /// resumes the earlier load instead of loading the file twice.
    pub async fn load_upload(&self, upload: Upload) -> Result<LoadReport> {
        let Upload { table, file_name, format, key, mut body } = upload;
        if file_name.contains(['/', '\\']) {
            return Err(Error::BadForm("name= is a file name, not a path".into()));
        }
        let load_id = match &key {
            Some(key) => format!("upload-{}", load_id_for(&format!("{table}|{key}"))),
            None => format!("upload-{}", uuid::Uuid::new_v4().simple()),
        };
        let local = self.spool_file(&load_id).await?;
        let limit = self.config.max_upload_bytes;
        let spool = self.config.spool_dir.clone();
        let received = async {
            let mut file =
                tokio::fs::File::create(&local).await.map_err(|e| spool_error(&spool, e))?;
            let mut size = 0u64;
            while let Some(chunk) = body.next().await {
                let chunk =
                    chunk.map_err(|e| Error::BadForm(format!("the upload broke off: {e}")))?;
                size += chunk.len() as u64;
                if size > limit {
                    return Err(Error::TooLarge { limit: limit as usize });
                }
                file.write_all(&chunk).await.map_err(|e| spool_error(&spool, e))?;
            }
            file.flush().await.map_err(|e| spool_error(&spool, e))
        }
        .await;
        let loaded = match received {
            Ok(()) => {
                let load = FileLoad {
                    table,
                    path: local.clone(),
                    format,
                    load_id,
                    source: Source::File(file_name),
                    progress: Arc::new(LoadProgress::default()),
                    raw_object: None,
                };
                self.load_file(load).await
            }
            Err(e) => Err(e),
        };
        let _ = tokio::fs::remove_file(&local).await;
        loaded
    }

    /// Loads a local file into a table (see the module documentation and [`FileLoad`]).
    pub async fn load_file(&self, load: FileLoad) -> Result<LoadReport> {
        let FileLoad { table, path, format, load_id, source, progress, raw_object } = load;
        let (name, path, load_id) = (&table, path.as_path(), load_id.as_str());
        let started = Instant::now();
        let size = std::fs::metadata(path).map_err(|e| chunks::io(path, e))?.len();
        let (plan, created) = {
            let path = path.to_path_buf();
            let infer = async move {
                tokio::task::spawn_blocking(move || chunks::infer_file_schema(&path, format))
                    .await
                    .map_err(|e| Error::Internal(format!("schema inference failed: {e}")))?
            };
            self.tables.plan_for_write(name, infer).await?
        };
        let app_id = load_app_id(load_id);
        let (_, table) = self.tables.catalog().open(name).await?;
        let done_main = table.txn_version(&app_id).await?.unwrap_or(0);
        let done_rejected = match &plan.rejected {
            Some(rejected) => {
                let (_, t) = self.tables.catalog().open(rejected).await?;
                t.txn_version(&app_id).await?.unwrap_or(0)
            }
            None => 0,
        };
        let source_name = source.to_string();
        let (sender, mut receiver) = tokio::sync::mpsc::channel::<Result<Chunk>>(1);
        let reader = {
            let (plan, path, progress) = (plan.clone(), path.to_path_buf(), progress.clone());
            let skip_below = done_main;
            tokio::task::spawn_blocking(move || {
                let result = chunks::read_chunks(
                    &plan,
                    &path,
                    format,
                    &progress,
                    skip_below,
                    &mut |chunk| sender.blocking_send(Ok(chunk)).is_ok(),
                );
                if let Err(e) = result {
                    let _ = sender.blocking_send(Err(e));
                }
            })
        };
        let mut report = LoadReport {
            table: name.to_string(),
            file: source_name.clone(),
            bytes: size,
            created,
            ..LoadReport::default()
        };
        let at = chrono::Utc::now().timestamp_micros();
        // Per chunk, rejected rows are committed before the table's rows: once the table's
        // `txn` says chunk k is in, everything of chunks up to k is, and a resumed load reads
        // past them. A chunk's rejected rows carry their own `txn`, for chunks that had no rows
        // for the table.
        while let Some(chunk) = receiver.recv().await {
            let Chunk { number, prepared } = chunk?;
            if number <= done_main {
                report.skipped_chunks += 1;
            }
            let Prepared { valid, rejected } = prepared;
            if number > done_rejected && !rejected.is_empty() {
                let table = plan.rejected.as_ref().expect("only declared tables reject rows");
                report.rejected += rejected.len() as u64;
                if let Some(first) = rejected.first() {
                    self.tables.events().emit(crate::IngestEvent::RowsRejected {
                        table: plan.name.clone(),
                        rows: rejected.len() as u64,
                        first_error: first.summary(),
                        source: source_name.clone(),
                    });
                }
                let room = 5usize.saturating_sub(report.errors.len());
                report.errors.extend(rejected.iter().take(room).map(Rejection::summary));
                let batch = contract::rejected_batch(&rejected, &source_name, at);
                self.commit_chunk(table, vec![batch], &app_id, number).await?;
                report.commits += 1;
            }
            if number > done_main {
                let (valid, duplicates, admitted) = self.tables.admit(&plan, valid).await?;
                report.duplicates += duplicates as u64;
                let rows: usize = valid.iter().map(|b| b.num_rows()).sum();
                if rows > 0 {
                    match self.commit_chunk(name, valid, &app_id, number).await {
                        Ok(dropped) => {
                            // Rows whose key another writer committed first are duplicates too.
                            report.duplicates += dropped as u64;
                            report.rows += rows.saturating_sub(dropped) as u64;
                        }
                        Err(e) => {
                            self.tables.unique_keys().forget(name, &admitted);
                            return Err(e);
                        }
                    }
                    report.commits += 1;
                }
            }
        }
        // A reader that panicked (a bug) ended the chunks early: the load failed.
        reader.await.map_err(|e| Error::Internal(format!("reading the file failed: {e}")))?;
        if let Some(raw) = &plan.raw {
            let (_, raw_table) = self.tables.catalog().open(raw).await?;
            if raw_table.txn_version(&app_id).await?.unwrap_or(0) < 1 {
                let object = match raw_object {
                    Some(object) => object,
                    None => self.keep_raw_file(name, path, load_id).await?,
                };
                let batch = contract::raw_batch(
                    None,
                    Some(&object),
                    Some(&format!("{format:?}").to_lowercase()),
                    &source_name,
                    at,
                );
                self.commit_chunk(raw, vec![batch], &app_id, 1).await?;
                report.commits += 1;
            }
        }
        report.seconds = started.elapsed().as_secs_f64();
        self.tables.stats().received(name, report.rows, report.rejected, report.bytes);
        tracing::info!(
            table = %name,
            file = %report.file,
            rows = report.rows,
            rejected = report.rejected,
            duplicates = report.duplicates,
            skipped_chunks = report.skipped_chunks,
            seconds = report.seconds,
            "loaded a file"
        );
        Ok(report)
    }

    /// Copies a loaded file into the lake for the raw backup; returns its path there.
    async fn keep_raw_file(&self, name: &TableName, path: &Path, load_id: &str) -> Result<String> {
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "file".into());
        let location = object_store::path::Path::from(format!(
            "_tarn/raw/{}/{}/{load_id}/{file_name}",
            name.namespace(),
            name.name()
        ));
        let store = self.tables.catalog().lake().store().clone();
        let mut writer = object_store::buffered::BufWriter::new(store, location.clone());
        let mut file = tokio::fs::File::open(path).await.map_err(|e| chunks::io(path, e))?;
        tokio::io::copy(&mut file, &mut writer).await.map_err(|e| chunks::io(path, e))?;
        tokio::io::AsyncWriteExt::shutdown(&mut writer).await.map_err(|e| chunks::io(path, e))?;
        Ok(location.to_string())
    }

    /// Appends one chunk to `name` with the load's `txn`; answers the rows left out (rows
    /// whose unique key another writer committed first).
    async fn commit_chunk(
        &self,
        name: &TableName,
        batches: Vec<RecordBatch>,
        app_id: &str,
        number: i64,
    ) -> Result<usize> {
        let started = Instant::now();
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        let (definition, table) = self.tables.catalog().open(name).await?;
        let batches = tarn_lake::cluster::sort_rows(batches, &definition.spec.cluster_by)?;
        let (committed, dropped) =
            self.tables.append(name, &definition, table, batches, app_id, number).await?;
        let stats = self.tables.stats();
        stats.committed(
            name,
            committed.version(),
            rows.saturating_sub(dropped) as u64,
            started.elapsed(),
        );
        Ok(dropped)
    }
}

/// The spool directory cannot be written (a full disk, most likely): retryable.
fn spool_error(dir: &Path, source: std::io::Error) -> Error {
    Error::Spool { dir: dir.display().to_string(), source }
}
