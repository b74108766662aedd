//! Reading a file chunk by chunk, each chunk checked against the table's contract.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use arrow::array::RecordBatch;
use bytes::Bytes;
use tarn_lake::deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::plan::TablePlan;
use crate::prepare::{prepare, prepare_batch, Prepared};
use crate::{DecodeError, Error, FileFormat, Format, LoadProgress, Result};

/// Records per commit of a load. Fixed, because a resumed load must cut the file into the same
/// chunks as the interrupted one.
pub const LOAD_CHUNK_ROWS: usize = 256 * 1024;

/// Bytes of NDJSON per commit at most (a chunk ends at [`LOAD_CHUNK_ROWS`] records or here,
/// whichever comes first). Fixed, like the records.
pub const LOAD_CHUNK_BYTES: usize = 64 * 1024 * 1024;

/// The longest line of an NDJSON file.
pub const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// The largest JSON file (an array or values one after another, parsed whole): larger ones
/// go as NDJSON, which is read in chunks.
pub const MAX_JSON_FILE_BYTES: u64 = 256 * 1024 * 1024;

/// One chunk, checked.
pub(crate) struct Chunk {
    pub number: i64,
    pub prepared: Prepared,
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

pub(crate) fn io(path: &Path, e: std::io::Error) -> Error {
    Error::Decode(DecodeError {
        line: None,
        column: None,
        message: format!("cannot read {}: {e}", path.display()),
    })
}

/// The schema a new table gets from a file.
pub(crate) fn infer_file_schema(
    path: &Path,
    format: FileFormat,
) -> Result<arrow::datatypes::Schema> {
    let file = File::open(path).map_err(|e| io(path, e))?;
    Ok(match format {
        FileFormat::Csv => crate::csv::infer_table(file)?,
        FileFormat::Ndjson => {
            let mut sample = Vec::new();
            let mut reader = BufReader::new(file);
            for line_no in 1..=1000 {
                if read_line(&mut reader, &mut sample, line_no, path)? == 0 {
                    break;
                }
            }
            crate::infer_schema(&sample, Format::Ndjson)?
        }
        FileFormat::Json => {
            json_fits(path)?;
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

/// Appends the next line of `reader` (number `line_no`) to `out`, with its `\n`; answers its
/// length, 0 at the end. A line longer than [`MAX_LINE_BYTES`] is an error.
fn read_line(
    reader: &mut impl BufRead,
    out: &mut Vec<u8>,
    line_no: usize,
    path: &Path,
) -> Result<usize> {
    let start = out.len();
    let n =
        reader.take(MAX_LINE_BYTES as u64 + 1).read_until(b'\n', out).map_err(|e| io(path, e))?;
    if out.len() - start > MAX_LINE_BYTES {
        return Err(Error::FileTooLarge(format!(
            "line {line_no} is longer than {MAX_LINE_BYTES} bytes, the longest line of NDJSON a \
             load reads"
        )));
    }
    if n > 0 && !out.ends_with(b"\n") {
        out.push(b'\n');
    }
    Ok(n)
}

/// Refuses a JSON file larger than [`MAX_JSON_FILE_BYTES`] before it is read.
fn json_fits(path: &Path) -> Result<()> {
    let size = std::fs::metadata(path).map_err(|e| io(path, e))?.len();
    if size > MAX_JSON_FILE_BYTES {
        return Err(Error::FileTooLarge(format!(
            "the JSON file has {size} bytes: a JSON file is parsed whole, and may have at most \
             {MAX_JSON_FILE_BYTES}; send it as NDJSON (one record per line), which is read in \
             chunks"
        )));
    }
    Ok(())
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
pub(crate) fn read_chunks(
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
            loop {
                let start = chunk.len();
                let n = read_line(&mut lines, &mut chunk, line_no + 1, path)?;
                if n > 0 {
                    line_no += 1;
                    if chunk[start..].iter().any(|b| !b.is_ascii_whitespace()) {
                        records += 1;
                    }
                }
                if (n == 0 && records > 0)
                    || records >= LOAD_CHUNK_ROWS
                    || (records > 0 && chunk.len() >= LOAD_CHUNK_BYTES)
                {
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
            json_fits(path)?;
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
