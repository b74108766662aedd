//! Table schemas inferred from JSON and NDJSON records, for tables created on first write.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Fields, Schema};
use arrow::json::reader::infer_json_schema_from_iterator;

use super::error::{library_message, DecodeError};
use super::format::Format;
use super::json::records;

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
        return Err(DecodeError::at(None, "the body holds no records"));
    }
    let schema = infer_json_schema_from_iterator(values.iter().map(Ok))
        .map_err(|e| DecodeError::at(None, library_message(&e)))?;
    check_names(schema.fields(), "")?;
    Ok(Schema::new(schema.fields().iter().map(|f| Arc::new(storable(f))).collect::<Fields>()))
}

/// Characters Spark and Hive refuse in Parquet column names (Delta without column mapping).
const FORBIDDEN_IN_NAMES: &[char] = &[' ', ',', ';', '{', '}', '(', ')', '\n', '\t', '='];

/// Refuses field names other engines could not read back.
fn check_names(fields: &Fields, parent: &str) -> Result<(), DecodeError> {
    for field in fields {
        let path = format!("{parent}{}", field.name());
        if field.name().is_empty() || field.name().contains(FORBIDDEN_IN_NAMES) {
            return Err(DecodeError::at(
                None,
                format!(
                    "field '{path}' cannot be a column name: names must be non-empty and free of \
                     spaces and any of , ; {{ }} ( ) = tab newline"
                ),
            ));
        }
        check_nested(field.data_type(), &path)?;
    }
    Ok(())
}

/// [`check_names`] for the fields inside a struct or a list (of lists) of structs.
fn check_nested(data_type: &DataType, path: &str) -> Result<(), DecodeError> {
    match data_type {
        DataType::Struct(children) => check_names(children, &format!("{path}.")),
        DataType::List(item) => check_nested(item.data_type(), &format!("{path}[]")),
        _ => Ok(()),
    }
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
