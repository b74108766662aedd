//! Loading files: CSV, NDJSON, JSON arrays and Parquet, from `tarn load`, uploads to
//! `POST /v1/tables/{table}/files` and the drop zone.
//!
//! A file is read in chunks of [`LOAD_CHUNK_ROWS`] records, each checked against the table's
//! contract like any request and committed straight to Delta (the file itself is the durable
//! copy, so no write-ahead log is needed). Every commit carries a Delta `txn` whose application
//! id names the load and whose version is the chunk's number: a load that is interrupted and
//! started again with the same load id skips the chunks the table already holds, so a file is
//! never loaded twice. Reading the next chunk overlaps with committing the current one; memory
//! stays at about two chunks whatever the file's size (JSON arrays, which cannot be split
//! without parsing them whole, are the exception and are read whole).

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::RecordBatch;
use arrow::compute::filter_record_batch;
use bytes::Bytes;
use serde::Serialize;
use tarn_catalog::TableName;
use tarn_lake::deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::contract::{self, Rejection};
use crate::ingestor::{prepare, prepare_batch, Prepared, TablePlan};
use crate::{DecodeError, Error, Format, Ingestor, Result, Source};

/// Records per commit of a load. Fixed, because a resumed load must cut the file into the same
/// chunks as the interrupted one.
pub const LOAD_CHUNK_ROWS: usize = 256 * 1024;

/// How a file is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    /// Comma-separated values with a header row.
    Csv,
    /// One JSON object per line.
    Ndjson,
    /// A JSON array of objects (or one object).
    Json,
    /// Apache Parquet.
    Parquet,
}

impl FileFormat {
    /// From a file name's extension (`.csv`, `.ndjson`/`.jsonl`, `.json`, `.parquet`), in any
    /// case.
    pub fn from_name(name: &str) -> Option<FileFormat> {
        let lower = name.to_ascii_lowercase();
        let ext = lower.rsplit('.').next()?;
        Some(match ext {
            "csv" => FileFormat::Csv,
            "ndjson" | "jsonl" => FileFormat::Ndjson,
            "json" => FileFormat::Json,
            "parquet" | "pq" => FileFormat::Parquet,
            _ => return None,
        })
    }

    /// From a content type (`text/csv`, `application/x-ndjson`, `application/json`,
    /// `application/vnd.apache.parquet`).
    pub fn from_content_type(content_type: &str) -> Option<FileFormat> {
        let essence = content_type.split(';').next()?.trim().to_ascii_lowercase();
        Some(match essence.as_str() {
            "text/csv" | "application/csv" => FileFormat::Csv,
            "application/x-ndjson" | "application/ndjson" | "application/jsonl" => {
                FileFormat::Ndjson
            }
            "application/json" => FileFormat::Json,
            "application/vnd.apache.parquet" | "application/parquet" | "application/x-parquet" => {
                FileFormat::Parquet
            }
            _ => return None,
        })
    }

    /// From a name given on the command line (`csv`, `ndjson`, `json`, `parquet`).
    pub fn parse(name: &str) -> Option<FileFormat> {
        Self::from_name(&format!("x.{name}"))
    }
}

/// How far a load has come; shared with a progress display.
#[derive(Debug, Default)]
pub struct LoadProgress {
    /// Bytes of the file read so far.
    pub bytes: AtomicU64,
    /// Records read so far.
    pub records: AtomicU64,
}

/// What a load did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LoadReport {
    /// The qualified table name.
    pub table: String,
    /// The file, as named by its source.
    pub file: String,
    /// Rows appended.
    pub rows: u64,
    /// Rows that broke the contract (in `<table>_rejected`).
    pub rejected: u64,
    /// Rows whose unique key was in the table already.
    pub duplicates: u64,
    /// The first few rejection reasons.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// Delta commits made.
    pub commits: u64,
    /// Chunks found committed by an earlier attempt of the same load and skipped.
    pub skipped_chunks: u64,
    /// Size of the file.
    pub bytes: u64,
    /// How long it took.
    pub seconds: f64,
    /// True when this load created the table.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub created: bool,
}

impl LoadReport {
    /// Rows (appended, rejected and duplicate) per second.
    pub fn rows_per_second(&self) -> f64 {
        (self.rows + self.rejected + self.duplicates) as f64 / self.seconds.max(1e-9)
    }
}

/// One load of a local file.
#[derive(Debug, Clone)]
pub struct FileLoad {
    /// The table to load into.
    pub table: TableName,
    /// The file, on local disk.
    pub path: std::path::PathBuf,
    /// How it is laid out.
    pub format: FileFormat,
    /// Names the load: the same id resumes an interrupted load of the same file.
    pub load_id: String,
    /// Where the records come from, as `<table>_rejected` and `<table>_raw` record it.
    pub source: Source,
    /// Updated as the file is read.
    pub progress: Arc<LoadProgress>,
    /// For the raw backup (`raw_backup`): where in the lake the original file is kept. `None`
    /// copies it to `_tarn/raw/<namespace>/<table>/<load id>/`.
    pub raw_object: Option<String>,
}

/// One chunk, checked.
struct Chunk {
    number: i64,
    prepared: Prepared,
}

/// Counts bytes read.
struct Counting<R> {
    inner: R,
    progress: Arc<LoadProgress>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.bytes.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// The load id of one version of a file, from what identifies it (its place, size, time...):
/// the same version loaded again gets the same id, so the load resumes instead of doubling.
pub fn load_id_for(identity: &str) -> String {
    format!("{:032x}", xxhash_rust::xxh3::xxh3_128(identity.as_bytes()))
}

/// The Delta `txn` application id of a load.
pub fn load_app_id(load_id: &str) -> String {
    format!("tarn-load-{load_id}")
}

impl Ingestor {
    /// Loads a local file into a table (see the module documentation and [`FileLoad`]).
    pub async fn load_file(self: &Arc<Self>, load: FileLoad) -> Result<LoadReport> {
        let FileLoad { table, path, format, load_id, source, progress, raw_object } = load;
        let (name, path, load_id) = (&table, path.as_path(), load_id.as_str());
        let started = Instant::now();
        let size = std::fs::metadata(path).map_err(|e| io(path, e))?.len();
        let (plan, created) = self.plan_for_file(name, path, format).await?;
        if let Some(owner) = &plan.definition.owner {
            return Err(Error::Forbidden(format!(
                "table '{name}' is kept by Tarn for '{owner}'; only Tarn writes to it"
            )));
        }
        let app_id = load_app_id(load_id);
        let (_, table) = self.catalog().open(name).await?;
        let done_main = table.txn_version(&app_id).await?.unwrap_or(0);
        let done_rejected = match &plan.rejected {
            Some(rejected) => {
                let (_, t) = self.catalog().open(rejected).await?;
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
                let result =
                    read_chunks(&plan, &path, format, &progress, skip_below, &mut |chunk| {
                        sender.blocking_send(Ok(chunk)).is_ok()
                    });
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
                let room = 5usize.saturating_sub(report.errors.len());
                report.errors.extend(rejected.iter().take(room).map(Rejection::summary));
                let batch = contract::rejected_batch(&rejected, &source_name, at);
                self.commit_chunk(table, vec![batch], &app_id, number).await?;
                report.commits += 1;
            }
            if number > done_main {
                let (valid, duplicates) = self.dedupe(&plan, valid).await?;
                report.duplicates += duplicates as u64;
                let rows: usize = valid.iter().map(|b| b.num_rows()).sum();
                if rows > 0 {
                    self.commit_chunk(name, valid, &app_id, number).await?;
                    report.rows += rows as u64;
                    report.commits += 1;
                }
            }
        }
        reader.await.expect("the reader does not panic");
        if let Some(raw) = &plan.raw {
            let (_, raw_table) = self.catalog().open(raw).await?;
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
        let store = self.catalog().lake().store().clone();
        let mut writer = object_store::buffered::BufWriter::new(store, location.clone());
        let mut file = tokio::fs::File::open(path).await.map_err(|e| io(path, e))?;
        tokio::io::copy(&mut file, &mut writer).await.map_err(|e| io(path, e))?;
        tokio::io::AsyncWriteExt::shutdown(&mut writer).await.map_err(|e| io(path, e))?;
        Ok(location.to_string())
    }

    /// Keeps the rows whose unique key is new.
    async fn dedupe(
        &self,
        plan: &TablePlan,
        valid: Vec<RecordBatch>,
    ) -> Result<(Vec<RecordBatch>, usize)> {
        let Some(contract) = plan.contract.as_ref().filter(|c| !c.unique_key.is_empty()) else {
            return Ok((valid, 0));
        };
        if valid.iter().all(|b| b.num_rows() == 0) {
            return Ok((valid, 0));
        }
        let table = self.catalog().open_cached(&plan.name).await?;
        let batch = contract::concat(&contract.table_schema, &valid);
        let admission = self
            .unique_keys()
            .admit(&plan.name, plan.definition.created_at, &table, &batch, &contract.unique_key)
            .await?;
        let kept = filter_record_batch(&batch, &admission.keep).map_err(tarn_lake::Error::from)?;
        Ok((vec![kept], admission.duplicates))
    }

    async fn commit_chunk(
        &self,
        name: &TableName,
        batches: Vec<RecordBatch>,
        app_id: &str,
        number: i64,
    ) -> Result<()> {
        let (_, table) = self.catalog().open(name).await?;
        let committed = table.append_txn(batches, app_id, number).await?;
        self.catalog().remember(name, &committed);
        Ok(())
    }

    /// The table's plan, creating the table from the file's schema when it is unknown and
    /// auto-create is on.
    async fn plan_for_file(
        &self,
        name: &TableName,
        path: &Path,
        format: FileFormat,
    ) -> Result<(Arc<TablePlan>, bool)> {
        match self.plan(name).await {
            Ok(plan) => return Ok((plan, false)),
            Err(Error::Catalog(tarn_catalog::Error::TableNotFound { .. }))
                if self.config().auto_create => {}
            Err(Error::Catalog(tarn_catalog::Error::TableNotFound { .. })) => {
                return Err(Error::TableNotFound { name: name.to_string() })
            }
            Err(e) => return Err(e),
        }
        let path = path.to_path_buf();
        let schema = tokio::task::spawn_blocking(move || infer_file_schema(&path, format))
            .await
            .expect("schema inference does not panic")?;
        self.create_table(name, &schema).await
    }
}

fn io(path: &Path, e: std::io::Error) -> Error {
    Error::Decode(DecodeError {
        line: None,
        column: None,
        message: format!("cannot read {}: {e}", path.display()),
    })
}

/// The schema a new table gets from a file.
fn infer_file_schema(path: &Path, format: FileFormat) -> Result<arrow::datatypes::Schema> {
    let file = File::open(path).map_err(|e| io(path, e))?;
    Ok(match format {
        FileFormat::Csv => crate::csv::infer_table(file)?,
        FileFormat::Ndjson => {
            let mut sample = Vec::new();
            for line in BufReader::new(file).lines().take(1000) {
                sample.extend_from_slice(line.map_err(|e| io(path, e))?.as_bytes());
                sample.push(b'\n');
            }
            crate::infer_schema(&sample, Format::Ndjson)?
        }
        FileFormat::Json => {
            let body = std::fs::read(path).map_err(|e| io(path, e))?;
            crate::infer_schema(&body, Format::Json)?
        }
        FileFormat::Parquet => {
            crate::decode::check_parquet_footer(&file).map_err(|e| parquet_error(path, e))?;
            let builder = ParquetRecordBatchReaderBuilder::try_new(file)
                .map_err(|e| parquet_error(path, e))?;
            let fields: Vec<arrow::datatypes::Field> = builder
                .schema()
                .fields()
                .iter()
                .map(|f| {
                    let t = tarn_catalog::storable(f.data_type())
                        .unwrap_or_else(|| f.data_type().clone());
                    arrow::datatypes::Field::new(f.name(), t, true)
                })
                .collect();
            arrow::datatypes::Schema::new(fields)
        }
    })
}

fn parquet_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Decode(DecodeError {
        line: None,
        column: None,
        message: format!("{} is not a readable Parquet file: {e}", path.display()),
    })
}

/// Numbers the chunks of a load and hands them on.
struct Emitter<'a> {
    number: i64,
    skip_below: i64,
    progress: &'a LoadProgress,
    emit: &'a mut dyn FnMut(Chunk) -> bool,
}

impl Emitter<'_> {
    /// True when the next chunk was committed by an earlier attempt: read past, not checked.
    fn skipping(&self) -> bool {
        self.number < self.skip_below
    }

    /// Hands on the next chunk; false when the receiver is gone (stop reading).
    fn send(&mut self, prepared: Prepared, records: usize) -> bool {
        self.number += 1;
        self.progress.records.fetch_add(records as u64, Ordering::Relaxed);
        (self.emit)(Chunk { number: self.number, prepared })
    }
}

/// Reads the file chunk by chunk, checks each, and hands it to `emit` (which answers false to
/// stop). Chunks numbered at or below `skip_below` were committed by an earlier attempt: they
/// are read past (to keep the numbering) but not checked.
fn read_chunks(
    plan: &TablePlan,
    path: &Path,
    format: FileFormat,
    progress: &Arc<LoadProgress>,
    skip_below: i64,
    emit: &mut dyn FnMut(Chunk) -> bool,
) -> Result<()> {
    let file = File::open(path).map_err(|e| io(path, e))?;
    let reader = Counting { inner: file, progress: progress.clone() };
    let mut out = Emitter { number: 0, skip_below, progress, emit };
    match format {
        FileFormat::Csv => {
            let header = crate::csv::infer(File::open(path).map_err(|e| io(path, e))?, 0)?;
            if header.fields().is_empty() {
                return Err(DecodeError {
                    line: Some(1),
                    column: None,
                    message: "the CSV has no header row".into(),
                }
                .into());
            }
            if let Some(contract) = &plan.contract {
                if let Some(unknown) = header
                    .fields()
                    .iter()
                    .find(|f| contract.declared_schema.field_with_name(f.name()).is_err())
                {
                    return Err(DecodeError {
                        line: Some(1),
                        column: None,
                        message: format!(
                            "column '{}' of the CSV is not a column of the table",
                            unknown.name()
                        ),
                    }
                    .into());
                }
            }
            let schema = crate::csv::text_schema(&header);
            let mut pending: Vec<RecordBatch> = Vec::new();
            let mut rows = 0usize;
            let mut first_line = 2usize;
            let batches =
                crate::csv::text_batches(BufReader::with_capacity(1 << 20, reader), schema)?;
            let mut iter = batches.peekable();
            while let Some(batch) = iter.next() {
                let batch = batch.map_err(|e| DecodeError { line: e.line.map(|l| l + 1), ..e })?;
                rows += batch.num_rows();
                pending.push(batch);
                if rows >= LOAD_CHUNK_ROWS || iter.peek().is_none() {
                    let mut prepared = Prepared::default();
                    for batch in &pending {
                        if !out.skipping() {
                            let one = prepare_batch(plan, batch, true, &|row| {
                                crate::csv::row_json(batch, row)
                            })
                            .map_err(|e| at_line(e, first_line))?;
                            prepared.extend(one);
                        }
                        first_line += batch.num_rows();
                    }
                    pending.clear();
                    if !out.send(prepared, std::mem::take(&mut rows)) {
                        return Ok(());
                    }
                }
            }
        }
        FileFormat::Ndjson => {
            let mut lines = BufReader::with_capacity(1 << 20, reader);
            let mut chunk = Vec::new();
            let (mut records, mut first_line, mut line_no) = (0usize, 1usize, 0usize);
            let mut line = Vec::new();
            loop {
                line.clear();
                let n = lines.read_until(b'\n', &mut line).map_err(|e| io(path, e))?;
                if n > 0 {
                    line_no += 1;
                    if line.iter().any(|b| !b.is_ascii_whitespace()) {
                        records += 1;
                    }
                    chunk.extend_from_slice(&line);
                    if !line.ends_with(b"\n") {
                        chunk.push(b'\n');
                    }
                }
                if (n == 0 && records > 0) || records >= LOAD_CHUNK_ROWS {
                    let body = std::mem::take(&mut chunk);
                    let prepared = if out.skipping() {
                        Prepared::default()
                    } else {
                        prepare(plan, &body, Format::Ndjson).map_err(|e| at_line(e, first_line))?
                    };
                    if !out.send(prepared, records) {
                        return Ok(());
                    }
                    records = 0;
                    first_line = line_no + 1;
                }
                if n == 0 {
                    break;
                }
            }
        }
        FileFormat::Json => {
            let mut body = Vec::new();
            let mut reader = reader;
            reader.read_to_end(&mut body).map_err(|e| io(path, e))?;
            let body = Bytes::from(body);
            let prepared = if out.skipping() {
                Prepared::default()
            } else {
                prepare(plan, &body, Format::Json)?
            };
            let records = prepared.valid.iter().map(|b| b.num_rows()).sum::<usize>()
                + prepared.rejected.len();
            out.send(prepared, records);
        }
        FileFormat::Parquet => {
            let file = File::open(path).map_err(|e| io(path, e))?;
            let size = file.metadata().map(|m| m.len()).unwrap_or(0);
            crate::decode::check_parquet_footer(&file).map_err(|e| parquet_error(path, e))?;
            let builder = ParquetRecordBatchReaderBuilder::try_new(file)
                .map_err(|e| parquet_error(path, e))?;
            let total = builder.metadata().file_metadata().num_rows().max(1) as u64;
            let parquet =
                builder.with_batch_size(8192).build().map_err(|e| parquet_error(path, e))?;
            let mut prepared = Prepared::default();
            let (mut rows, mut read) = (0usize, 0u64);
            for batch in parquet {
                let batch = batch.map_err(|e| parquet_error(path, e))?;
                read += batch.num_rows() as u64;
                // Parquet is read by row groups, not as a stream of bytes: estimate.
                progress.bytes.store(size * read.min(total) / total, Ordering::Relaxed);
                rows += batch.num_rows();
                if !out.skipping() {
                    let text = |row: usize| row_json(&batch, row);
                    prepared.extend(prepare_batch(plan, &batch, false, &text)?);
                }
                if rows >= LOAD_CHUNK_ROWS
                    && !out.send(std::mem::take(&mut prepared), std::mem::take(&mut rows))
                {
                    return Ok(());
                }
            }
            if rows > 0 {
                out.send(prepared, rows);
            }
        }
    }
    Ok(())
}

/// Shifts an error's line by the chunk's first line.
fn at_line(e: Error, first_line: usize) -> Error {
    match e {
        Error::Decode(mut d) => {
            d.line = d.line.map(|l| l + first_line - 1);
            Error::Decode(d)
        }
        other => other,
    }
}

/// A row of any batch as a JSON object (how rejected Parquet rows are kept).
fn row_json(batch: &RecordBatch, row: usize) -> String {
    let mut out = Vec::new();
    let mut writer = arrow::json::LineDelimitedWriter::new(&mut out);
    if writer.write(&batch.slice(row, 1)).and_then(|()| writer.finish()).is_err() {
        return "{}".into();
    }
    String::from_utf8_lossy(&out).trim_end().to_string()
}
