//! Request bodies to Arrow batches: JSON, NDJSON and CSV, with errors that say where.
//!
//! | file | what |
//! |---|---|
//! | `format.rs` | [`Format`]: how a body is framed, from its `Content-Type` |
//! | `nesting.rs` | the nesting limit every JSON reader is protected by |
//! | `json.rs` | JSON and NDJSON with arrow-json: strict ([`decode`]) and lenient ([`decode_lenient`]) |
//! | `infer.rs` | schemas of tables created on first write ([`infer_schema`]) |
//! | `names.rs` | the column names such tables may have |
//! | `csv.rs` | CSV with arrow-csv: header, text batches, strict decoding |
//! | `parquet.rs` | Parquet footers whose schema nests too deep for the parquet reader |
//! | `error.rs` | [`DecodeError`]: what is wrong, at which line and column |
//!
//! Files depend one way: `json`, `infer` and `csv` use `error`, `format` and `nesting`, never
//! each other's callers; this file only dispatches by format.

use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};

pub(crate) mod csv;
mod error;
mod format;
mod infer;
mod json;
mod names;
pub(crate) mod nesting;
mod parquet;
#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;

pub use error::DecodeError;
pub use format::Format;
pub use json::{decode_lenient, Lenient};
pub use nesting::MAX_NESTING;
pub use parquet::check_footer as check_parquet_footer;

/// Decodes `body` into batches with exactly `schema`.
///
/// Fields not in the schema, values that cannot be converted to the column's type and missing
/// values of non-nullable columns are errors; numbers and booleans are accepted for string
/// columns, and strings holding numbers for numeric columns. JSON nested deeper than
/// [`MAX_NESTING`] levels is refused before it is decoded.
pub fn decode(
    body: &[u8],
    format: Format,
    schema: SchemaRef,
) -> Result<Vec<RecordBatch>, DecodeError> {
    match format {
        Format::Csv => csv::decode_strict(body, &schema),
        Format::Json | Format::Ndjson => json::decode(body, format, schema),
    }
}

/// Infers a table schema from the records of `body`, for tables created on first write.
///
/// JSON: integers become `int64`, other numbers `float64`, nested objects structs, arrays
/// lists; columns that are null in every record become strings. CSV: see
/// [`csv::storable`]. Every column is nullable. Names other engines could not read back (empty,
/// with spaces, differing only in case) are refused, and so are records without fields.
pub fn infer_schema(body: &[u8], format: Format) -> Result<Schema, DecodeError> {
    match format {
        Format::Csv => csv::infer_table(body),
        Format::Json | Format::Ndjson => infer::infer_schema(body, format),
    }
}
