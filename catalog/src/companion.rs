//! The tables Tarn keeps beside a declared table: `<table>_rejected` (rows that broke the
//! contract, with the reason) and `<table>_raw` (every request's original payload, with
//! `raw_backup`). They are ordinary Delta tables, queryable with SQL; only Tarn writes to them.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::spec::UTC;
use crate::{Result, TableName};

/// `<table>_rejected`.
pub fn rejected_name(table: &TableName) -> Result<TableName> {
    TableName::new(table.namespace(), &format!("{}_rejected", table.name()))
}

/// `<table>_raw`.
pub fn raw_name(table: &TableName) -> Result<TableName> {
    TableName::new(table.namespace(), &format!("{}_raw", table.name()))
}

fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into()))
}

/// Columns of `<table>_rejected`:
///
/// | column | what |
/// |---|---|
/// | `record` | the original record as JSON (a CSV row as an object of its fields) |
/// | `rule` | what it broke: a rule's name, `type` (a value that cannot be coerced), `required` (a missing non-nullable value), `schema` (an unknown field), `derived` (a derived column that could not be computed) |
/// | `field` | the column concerned, when there is one |
/// | `reason` | for humans |
/// | `source` | where the record came from: `http`, `form`, `file:<name>`, ... |
/// | `rejected_at` | when |
pub fn rejected_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("record", DataType::Utf8, false),
        Field::new("rule", DataType::Utf8, false),
        Field::new("field", DataType::Utf8, true),
        Field::new("reason", DataType::Utf8, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("rejected_at", timestamp(), false),
    ]))
}

/// Columns of `<table>_raw`: `payload` (the request body or form as received, decompressed),
/// `object` (for files: where in the lake the original file is kept), `content_type`,
/// `source`, `received_at`.
pub fn raw_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("payload", DataType::Utf8, true),
        Field::new("object", DataType::Utf8, true),
        Field::new("content_type", DataType::Utf8, true),
        Field::new("source", DataType::Utf8, false),
        Field::new("received_at", timestamp(), false),
    ]))
}
