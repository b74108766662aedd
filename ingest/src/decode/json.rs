//! JSON and NDJSON bodies to Arrow batches, with arrow-json.
//!
//! The fast path hands the whole body to arrow-json's decoder once. Only when that fails is the
//! body walked record by record to find the first bad one, so an error names its line (and for
//! syntax errors its column) and the field arrow-json complains about.
//!
//! Every body is first checked for its [nesting](super::nesting): nothing deeper than
//! [`MAX_NESTING`](super::nesting::MAX_NESTING) levels reaches a decoder that recurses.

use std::collections::BTreeMap;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow::json::reader::{Decoder, ReaderBuilder};
use serde_json::value::RawValue;

use super::error::{library_message, truncate, DecodeError};
use super::format::Format;
use super::nesting;

/// Rows per decoded batch.
const BATCH_ROWS: usize = 8192;

/// One record of the body and the line it starts on.
pub(super) struct Record<'a> {
    /// The record's text.
    pub bytes: &'a [u8],
    /// 1-based line of the body where it starts.
    pub line: usize,
}

/// How the body is laid out, found without decoding it.
enum Layout<'a> {
    /// Objects one after another (NDJSON, or a JSON object stream): the body can be fed to
    /// arrow-json as it is.
    Stream,
    /// A JSON array: its elements, located by serde_json without building values.
    Array(Vec<Record<'a>>),
}

/// Checks the body's nesting and finds its layout.
fn layout(body: &[u8], format: Format) -> Result<Layout<'_>, DecodeError> {
    let first = body.iter().position(|b| !b.is_ascii_whitespace());
    let Some(first) = first else {
        return Err(DecodeError::at(Some(1), "the body holds no records"));
    };
    nesting::check(body).map_err(|at| DecodeError::too_deep(at, 1))?;
    if format == Format::Json && body[first] == b'[' {
        let elements: Vec<&RawValue> =
            serde_json::from_slice(body).map_err(|e| DecodeError::syntax(e, 1))?;
        let records = with_lines(body, elements.into_iter().map(Ok))?;
        if records.is_empty() {
            return Err(DecodeError::at(Some(1), "the array holds no records"));
        }
        return Ok(Layout::Array(records));
    }
    Ok(Layout::Stream)
}

/// Records for JSON values that serde_json found in `body` (in order), with the line each
/// starts on.
fn with_lines<'a>(
    body: &'a [u8],
    values: impl IntoIterator<Item = Result<&'a RawValue, serde_json::Error>>,
) -> Result<Vec<Record<'a>>, DecodeError> {
    let mut records = Vec::new();
    let (mut line, mut scanned) = (1, 0);
    for value in values {
        let bytes = value.map_err(|e| DecodeError::syntax(e, 1))?.get().as_bytes();
        // The value borrows from `body`, so its position is a pointer difference.
        let offset = bytes.as_ptr() as usize - body.as_ptr() as usize;
        line += body[scanned..offset].iter().filter(|b| **b == b'\n').count();
        scanned = offset;
        records.push(Record { bytes, line });
    }
    Ok(records)
}

/// Splits the body into records with their line numbers (the slow path).
pub(super) fn records(body: &[u8], format: Format) -> Result<Vec<Record<'_>>, DecodeError> {
    match (format, layout(body, format)?) {
        (Format::Csv, _) => Err(DecodeError::at(None, "CSV is not split into JSON records")),
        (_, Layout::Array(records)) => Ok(records),
        (Format::Ndjson, Layout::Stream) => Ok(body
            .split(|b| *b == b'\n')
            .enumerate()
            .filter(|(_, line)| line.iter().any(|b| !b.is_ascii_whitespace()))
            .map(|(i, bytes)| Record { bytes, line: i + 1 })
            .collect()),
        (Format::Json, Layout::Stream) => {
            with_lines(body, serde_json::Deserializer::from_slice(body).into_iter::<&RawValue>())
        }
    }
}

/// A syntax error in `record`, if it is not one JSON value.
pub(super) fn check_syntax(record: &Record) -> Result<(), DecodeError> {
    serde_json::from_slice::<&RawValue>(record.bytes)
        .map(|_| ())
        .map_err(|e| DecodeError::syntax(e, record.line))
}

fn decoder(schema: SchemaRef) -> Result<Decoder, ArrowError> {
    ReaderBuilder::new(schema)
        .with_batch_size(BATCH_ROWS)
        .with_strict_mode(true)
        .with_coerce_primitive(true)
        .build_decoder()
}

/// Feeds `chunks` to a fresh decoder and collects the batches.
fn run<'a>(
    schema: &SchemaRef,
    chunks: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Vec<RecordBatch>, ArrowError> {
    let mut decoder = decoder(schema.clone())?;
    let mut batches = Vec::new();
    for chunk in chunks {
        let mut offset = 0;
        while offset < chunk.len() {
            let consumed = decoder.decode(&chunk[offset..])?;
            offset += consumed;
            if consumed == 0 || decoder.len() >= BATCH_ROWS {
                if let Some(batch) = decoder.flush()? {
                    batches.push(batch);
                }
            }
        }
        // Separate records fed one by one (array elements are not contiguous in the body).
        decoder.decode(b"\n")?;
    }
    if let Some(batch) = decoder.flush()? {
        batches.push(batch);
    }
    Ok(batches)
}

/// Decodes a JSON or NDJSON body into batches with exactly `schema` (see [`super::decode`]).
pub(super) fn decode(
    body: &[u8],
    format: Format,
    schema: SchemaRef,
) -> Result<Vec<RecordBatch>, DecodeError> {
    let result = match layout(body, format)? {
        Layout::Stream => run(&schema, [body]),
        Layout::Array(ref records) => run(&schema, records.iter().map(|r| r.bytes)),
    };
    match result {
        Ok(batches) if row_count(&batches) == 0 => {
            Err(DecodeError::at(Some(1), "the body holds no records"))
        }
        Ok(batches) => Ok(batches),
        Err(error) => Err(locate(body, format, &schema, &error)),
    }
}

/// Finds the first record that fails on its own, for an error that says where.
fn locate(body: &[u8], format: Format, schema: &SchemaRef, error: &ArrowError) -> DecodeError {
    let records = match records(body, format) {
        Ok(records) => records,
        Err(syntax) => return syntax,
    };
    for record in &records {
        if let Err(e) = check_syntax(record) {
            return e;
        }
        if let Err(e) = run(schema, [record.bytes]) {
            return DecodeError::at(Some(record.line), library_message(&e));
        }
    }
    DecodeError::at(None, library_message(error))
}

/// What [`decode_lenient`] made of a body.
#[derive(Debug)]
pub struct Lenient<'a> {
    /// The records arrow-json took, in order.
    pub batches: Vec<RecordBatch>,
    /// For each row of `batches`, the index of its record in the body.
    pub rows: Vec<usize>,
    /// Records refused on their own: index, rule (`type` or `schema`), field, reason.
    pub refused: Vec<(usize, &'static str, Option<String>, String)>,
    /// Every record of the body, in order.
    pub records: Vec<&'a [u8]>,
}

impl Lenient<'_> {
    /// The text of record `index`.
    pub fn text(&self, index: usize) -> String {
        String::from_utf8_lossy(self.records[index]).into_owned()
    }
}

/// The rows of `batches`.
fn row_count(batches: &[RecordBatch]) -> usize {
    batches.iter().map(RecordBatch::num_rows).sum()
}

/// Why a record that is valid JSON still does not make exactly one row.
const NOT_ONE_OBJECT: &str = "each record must be one JSON object";

/// Decodes the body of a table with a declared contract. Unlike [`super::decode`], a record
/// that does not fit the schema (a value of the wrong type, an unknown field) is refused on its
/// own and the others are kept; only a body that is not JSON at all fails as a whole, naming
/// the line and column. Columns named in `json_columns` take any JSON value, kept as its text.
pub fn decode_lenient<'a>(
    body: &'a [u8],
    format: Format,
    schema: SchemaRef,
    json_columns: &[String],
) -> Result<Lenient<'a>, DecodeError> {
    let records = records(body, format)?;
    if records.is_empty() {
        return Err(DecodeError::at(Some(1), "the body holds no records"));
    }
    // `json` columns: hand arrow-json the value's text as a JSON string.
    let rewritten: Vec<Vec<u8>>;
    let chunks: Vec<&[u8]> = if json_columns.is_empty() {
        records.iter().map(|r| r.bytes).collect()
    } else {
        rewritten = records
            .iter()
            .map(|r| stringify_fields(r.bytes, json_columns).unwrap_or_else(|| r.bytes.to_vec()))
            .collect();
        rewritten.iter().map(Vec::as_slice).collect()
    };
    let mut refused = Vec::new();
    let mut rows: Vec<usize> = (0..chunks.len()).collect();
    // Fast path: every record decodes, one row each. A line of NDJSON holding two values
    // decodes to two rows; the slow path refuses it as a syntax error of its line.
    let batches = match run(&schema, chunks.iter().copied()) {
        Ok(batches) if row_count(&batches) == chunks.len() => batches,
        _ => {
            rows.clear();
            for (i, chunk) in chunks.iter().enumerate() {
                check_syntax(&records[i])?;
                match run(&schema, [*chunk]) {
                    Ok(one) if row_count(&one) == 1 => rows.push(i),
                    Ok(_) => return Err(DecodeError::at(Some(records[i].line), NOT_ONE_OBJECT)),
                    Err(e) => {
                        let (rule, field, reason) = classify(&library_message(&e));
                        refused.push((i, rule, field, reason));
                    }
                }
            }
            let batches = run(&schema, rows.iter().map(|&i| chunks[i]))
                .map_err(|e| DecodeError::at(None, library_message(&e)))?;
            if row_count(&batches) != rows.len() {
                return Err(DecodeError::at(None, NOT_ONE_OBJECT));
            }
            batches
        }
    };
    Ok(Lenient { batches, rows, refused, records: records.iter().map(|r| r.bytes).collect() })
}

/// Rewrites a JSON object so the fields in `names` hold their value's JSON text as a string:
/// the text as it was sent (numbers keep every digit; serde_json's default number parsing is
/// not exact), without the spaces and line breaks between tokens.
fn stringify_fields(record: &[u8], names: &[String]) -> Option<Vec<u8>> {
    let object: BTreeMap<String, &RawValue> = serde_json::from_slice(record).ok()?;
    let mut out = Vec::with_capacity(record.len() + 16);
    out.push(b'{');
    for (i, (key, value)) in object.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, key).ok()?;
        out.push(b':');
        let text = value.get();
        if names.contains(key) && text != "null" {
            serde_json::to_writer(&mut out, &compact(text)).ok()?;
        } else {
            out.extend_from_slice(text.as_bytes());
        }
    }
    out.push(b'}');
    Some(out)
}

/// JSON text without whitespace between tokens (strings kept as they are).
fn compact(text: &str) -> String {
    let (mut in_string, mut escaped) = (false, false);
    text.chars()
        .filter(|&c| {
            if in_string {
                match c {
                    _ if escaped => escaped = false,
                    '\\' => escaped = true,
                    '"' => in_string = false,
                    _ => {}
                }
                return true;
            }
            in_string = c == '"';
            !matches!(c, ' ' | '\t' | '\n' | '\r')
        })
        .collect()
}

/// Turns arrow-json's complaint about one record into (rule, field, reason).
fn classify(message: &str) -> (&'static str, Option<String>, String) {
    let quoted = |after: &str| {
        message.split(after).nth(1).and_then(|rest| rest.split('\'').next()).map(String::from)
    };
    if let Some(column) = quoted("column '").filter(|_| message.contains("missing from schema")) {
        return (
            "schema",
            Some(column.clone()),
            format!("unknown field '{column}': the table has no such column"),
        );
    }
    if message.starts_with("expected {") {
        return (
            "type",
            None,
            format!(
                "a record must be a JSON object, got {}",
                message.trim_start_matches("expected { got ")
            ),
        );
    }
    let field = quoted("whilst decoding field '");
    let detail = message.rsplit(": ").next().unwrap_or(message);
    ("type", field, truncate(detail))
}
