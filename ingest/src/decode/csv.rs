//! CSV bodies and files with a header row, read with arrow-csv.
//!
//! Cells are read as text and coerced to the table's types by [`crate::coerce`], so that a bad
//! cell rejects its row (declared tables) or names its line and column (other tables), instead
//! of arrow-csv failing the whole batch. An empty cell is a missing value.

use std::io::{Cursor, Read};
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::csv::reader::Format as CsvFormat;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use super::error::{library_message, DecodeError};
use super::names;

/// Rows per batch read from CSV.
pub const CSV_BATCH_ROWS: usize = 8192;

/// The header of a CSV text, and types inferred from up to `sample` rows.
pub fn infer(reader: impl Read, sample: usize) -> Result<Schema, DecodeError> {
    let (schema, _) =
        CsvFormat::default().with_header(true).infer_schema(reader, Some(sample)).map_err(|e| {
            let message = library_message(&e);
            // The csv crate says "line: N"; without a sample only the header is read.
            DecodeError {
                line: line_in(&message).or((sample == 0).then_some(1)),
                column: None,
                message,
            }
        })?;
    Ok(schema)
}

/// The line number an error message of arrow-csv ("line N") or the csv crate ("line: N")
/// mentions.
fn line_in(message: &str) -> Option<usize> {
    let (_, rest) = message.split_once("line")?;
    let digits = rest.trim_start_matches([':', ' ']);
    let end = digits.find(|c: char| !c.is_ascii_digit()).unwrap_or(digits.len());
    digits[..end].parse().ok()
}

/// The line of `body` where CSV record `record` (1-based, the header is record 1) starts.
///
/// arrow-csv counts records, not lines: quoted cells holding line breaks and blank lines (which
/// it skips) would make its numbers wrong for the editor the user opens. This walks the body
/// as csv-core does (`"` quotes a cell it opens, `""` inside is a quote; `\r` and `\n` end a
/// record; empty lines are skipped) and counts the lines it passes.
fn line_of_record(body: &[u8], record: usize) -> usize {
    #[derive(PartialEq)]
    enum State {
        StartRecord,
        StartField,
        Unquoted,
        Quoted,
        QuoteInQuoted,
    }
    let (mut state, mut line, mut records) = (State::StartRecord, 1, 0);
    for &b in body {
        let terminator = b == b'\r' || b == b'\n';
        if state == State::StartRecord && !terminator {
            records += 1;
            if records == record {
                return line;
            }
            state = State::StartField;
        }
        state = match (state, b) {
            (State::StartRecord, _) => State::StartRecord,
            (State::Quoted, b'"') => State::QuoteInQuoted,
            (State::Quoted, _) => State::Quoted,
            (State::StartField, b'"') | (State::QuoteInQuoted, b'"') => State::Quoted,
            (_, b',') => State::StartField,
            (_, _) if terminator => State::StartRecord,
            (_, _) => State::Unquoted,
        };
        if b == b'\n' {
            line += 1;
        }
    }
    line
}

/// The schema of a table created from a CSV: the [`storable`] types of up to 1,000 rows,
/// under names every engine reads back.
pub fn infer_table(reader: impl Read) -> Result<Schema, DecodeError> {
    let schema = storable(&infer(reader, 1000)?);
    if schema.fields().is_empty() {
        return Err(DecodeError::at(Some(1), "the CSV has no header row"));
    }
    names::check(schema.fields()).map_err(|e| DecodeError { line: Some(1), ..e })?;
    Ok(schema)
}

/// A schema Tarn can store for columns inferred from CSV: whole numbers `int64`, other numbers
/// `float64`, `true`/`false` booleans, ISO dates `date`, ISO timestamps `timestamp` (UTC),
/// anything else text.
pub fn storable(inferred: &Schema) -> Schema {
    Schema::new(
        inferred
            .fields()
            .iter()
            .map(|f| {
                let t = match f.data_type() {
                    DataType::Int64 => DataType::Int64,
                    DataType::Float64 => DataType::Float64,
                    DataType::Boolean => DataType::Boolean,
                    DataType::Date32 => DataType::Date32,
                    DataType::Timestamp(_, _) => {
                        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
                    }
                    _ => DataType::Utf8,
                };
                Field::new(f.name(), t, true)
            })
            .collect::<Vec<_>>(),
    )
}

/// All columns of `header` as nullable text.
pub fn text_schema(header: &Schema) -> SchemaRef {
    Arc::new(Schema::new(
        header
            .fields()
            .iter()
            .map(|f| Field::new(f.name(), DataType::Utf8, true))
            .collect::<Vec<_>>(),
    ))
}

/// Reads `reader` (CSV with a header row) as text batches of `schema` (from [`text_schema`]).
/// Errors name the record, counting the header as line 1 (see [`decode_text`] for lines).
pub fn text_batches<R: Read>(
    reader: R,
    schema: SchemaRef,
) -> Result<impl Iterator<Item = Result<RecordBatch, DecodeError>>, DecodeError> {
    let reader = arrow::csv::ReaderBuilder::new(schema)
        .with_header(true)
        .with_batch_size(CSV_BATCH_ROWS)
        .build(reader)
        .map_err(|e| DecodeError { line: Some(1), column: None, message: library_message(&e) })?;
    Ok(reader.map(|batch| {
        batch.map_err(|e| {
            let message = library_message(&e);
            DecodeError { line: line_in(&message), column: None, message }
        })
    }))
}

/// The whole of a CSV body as text batches, with its header. Errors name the line of the body.
pub fn decode_text(body: &[u8]) -> Result<(SchemaRef, Vec<RecordBatch>), DecodeError> {
    let header = infer(Cursor::new(body), 0)?;
    if header.fields().is_empty() {
        return Err(DecodeError {
            line: Some(1),
            column: None,
            message: "the CSV has no header row".into(),
        });
    }
    let schema = text_schema(&header);
    let batches =
        text_batches(Cursor::new(body), schema.clone())?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| DecodeError { line: e.line.map(|r| line_of_record(body, r)), ..e })?;
    if batches.iter().all(|b| b.num_rows() == 0) {
        return Err(DecodeError {
            line: Some(line_of_record(body, 2)),
            column: None,
            message: "the CSV holds no rows".into(),
        });
    }
    Ok((schema, batches))
}

/// Refuses a CSV whose header names a column the table does not have.
pub fn check_header(header: &Schema, table: &Schema) -> Result<(), DecodeError> {
    match header.fields().iter().find(|f| table.field_with_name(f.name()).is_err()) {
        Some(unknown) => Err(DecodeError {
            line: Some(1),
            column: None,
            message: format!("column '{}' of the CSV is not a column of the table", unknown.name()),
        }),
        None => Ok(()),
    }
}

/// Decodes a CSV body into batches of `schema` (a table without a declared contract): every
/// row or, when a cell does not fit its column, none, with an error naming the first bad
/// cell's line and column.
pub fn decode_strict(body: &[u8], schema: &SchemaRef) -> Result<Vec<RecordBatch>, DecodeError> {
    let (header, batches) = decode_text(body)?;
    let error =
        |line: usize, message: String| DecodeError { line: Some(line), column: None, message };
    if let Some(unknown) =
        header.fields().iter().find(|f| schema.field_with_name(f.name()).is_err())
    {
        return Err(error(
            1,
            format!("column '{}' of the CSV is not a column of the table", unknown.name()),
        ));
    }
    let mut out = Vec::with_capacity(batches.len());
    // Record number (the header is record 1) of each batch's first row.
    let mut first_record = 2;
    for batch in batches {
        let mut columns = Vec::with_capacity(schema.fields().len());
        // The first bad cell of the batch: (row, column name, reason).
        let mut first_bad: Option<(usize, &str, String)> = None;
        for field in schema.fields() {
            let Some(text) = batch.column_by_name(field.name()) else {
                columns.push(arrow::array::new_null_array(field.data_type(), batch.num_rows()));
                continue;
            };
            let ty = tarn_catalog::ColumnType::from_arrow(field.data_type()).ok_or_else(|| {
                error(
                    1,
                    format!(
                        "column '{}' is {} and cannot be loaded from CSV",
                        field.name(),
                        field.data_type()
                    ),
                )
            })?;
            let (typed, bad) = crate::coerce::coerce(text, ty, true);
            if let Some(bad) = bad.into_iter().next() {
                if first_bad.as_ref().is_none_or(|(row, _, _)| bad.row < *row) {
                    first_bad = Some((bad.row, field.name(), bad.reason));
                }
            }
            columns.push(typed);
        }
        if let Some((row, column, reason)) = first_bad {
            let line = line_of_record(body, first_record + row);
            return Err(error(line, format!("column '{column}': {reason}")));
        }
        first_record += batch.num_rows();
        out.push(
            RecordBatch::try_new(schema.clone(), columns)
                .map_err(|e| error(first_record, e.to_string()))?,
        );
    }
    Ok(out)
}

/// A CSV row as the JSON object of its non-empty cells (how rejected rows are kept).
pub fn row_json(batch: &RecordBatch, row: usize) -> String {
    let mut object = serde_json::Map::new();
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        if column.is_valid(row) {
            if let Some(text) = column.as_string_opt::<i32>() {
                object.insert(
                    field.name().clone(),
                    serde_json::Value::String(text.value(row).to_string()),
                );
            }
        }
    }
    serde_json::Value::Object(object).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_text_and_rows() {
        let body = b"name,age\nAda,36\nBob,\n";
        let (schema, batches) = decode_text(body).unwrap();
        assert_eq!(schema.field(1).name(), "age");
        assert_eq!(batches[0].num_rows(), 2);
        assert_eq!(row_json(&batches[0], 1), r#"{"name":"Bob"}"#);
        let inferred = storable(&infer(Cursor::new(&body[..]), 100).unwrap());
        assert_eq!(inferred.field(1).data_type(), &DataType::Int64);
        let err = decode_text(b"a,b\n1,2\n3\n").unwrap_err();
        assert_eq!(err.line, Some(3), "{err}");
    }
}
