//! Table schemas inferred from JSON and NDJSON records, for tables created on first write.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Fields, Schema};
use arrow::json::reader::infer_json_schema_from_iterator;

use super::error::{library_message, DecodeError};
use super::format::Format;
use super::json::{self, records};
use super::names;

/// Infers a table schema from the records of a JSON or NDJSON `body`.
///
/// Integers become `int64`, other numbers `float64`, nested objects structs, arrays lists;
/// columns that are null in every record become strings. Every column is nullable.
pub(super) fn infer_schema(body: &[u8], format: Format) -> Result<Schema, DecodeError> {
    let records = records(body, format)?;
    let mut values = Vec::with_capacity(records.len());
    for record in &records {
        // The body's nesting was checked (by `records`), so building values stays shallow.
        let value: serde_json::Value = serde_json::from_slice(record.bytes)
            .map_err(|e| DecodeError::syntax(e, record.line))?;
        if !value.is_object() {
            return Err(DecodeError::at(
                Some(record.line),
                format!("expected a JSON object, got {}", kind(&value)),
            ));
        }
        values.push(value);
    }
    if values.is_empty() {
        return Err(DecodeError::at(Some(1), "the body holds no records"));
    }
    let schema = infer_json_schema_from_iterator(values.iter().map(Ok)).map_err(|e| {
        // The first record the types of the ones before it conflict with.
        let line = first_failing(&values, |prefix| {
            infer_json_schema_from_iterator(prefix.iter().map(Ok)).is_err()
        })
        .map(|i| records[i].line);
        DecodeError::at(line, library_message(&e))
    })?;
    names::check(schema.fields()).map_err(|mut e| {
        // The first record with that field.
        e.line = first_failing(&values, |prefix| {
            infer_json_schema_from_iterator(prefix.iter().map(Ok))
                .is_ok_and(|s| names::check_names(s.fields()).is_err())
        })
        .map_or(e.line, |i| Some(records[i].line));
        e
    })?;
    let schema =
        Schema::new(schema.fields().iter().map(|f| Arc::new(storable(f))).collect::<Fields>());
    // arrow-json makes a field that is an array in one record and a scalar in another a list,
    // which the scalar then does not decode as. Refuse such a body here (the error names the
    // record), before a table is created for it.
    json::decode(body, format, Arc::new(schema.clone()))?;
    Ok(schema)
}

/// The index of the first value whose prefix `values[..=i]` `fails`, when all of them fail
/// (once a prefix fails, longer ones do too): a binary search, for errors that name a line.
fn first_failing(
    values: &[serde_json::Value],
    fails: impl Fn(&[serde_json::Value]) -> bool,
) -> Option<usize> {
    if !fails(values) {
        return None;
    }
    // The shortest failing prefix has between `short` and `long` values.
    let (mut short, mut long) = (1, values.len());
    while short < long {
        let mid = (short + long) / 2;
        if fails(&values[..mid]) {
            long = mid;
        } else {
            short = mid + 1;
        }
    }
    Some(short - 1)
}

fn kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Replaces types Delta cannot store (the null type of all-null columns) with strings.
fn storable(field: &Field) -> Field {
    let data_type = match field.data_type() {
        DataType::Null => DataType::Utf8,
        DataType::List(item) => DataType::List(Arc::new(storable(item))),
        DataType::Struct(fields) => {
            DataType::Struct(fields.iter().map(|f| Arc::new(storable(f))).collect())
        }
        other => other.clone(),
    };
    Field::new(field.name(), data_type, true)
}
