//! Request bodies to Arrow batches.
//!
//! The fast path hands the whole body to arrow-json's decoder once. Only when that fails is the
//! body walked record by record to find the first bad one, so an error names its line (and for
//! syntax errors its column) and the field arrow-json complains about.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};
use arrow::json::reader::{infer_json_schema_from_iterator, Decoder, ReaderBuilder};
use serde_json::value::RawValue;

use crate::Error;

/// Rows per decoded batch.
const BATCH_ROWS: usize = 8192;

/// How a request body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `application/json`: one object, an array of objects, or objects one after another.
    Json,
    /// `application/x-ndjson` (also `application/jsonl`): one object per line.
    Ndjson,
    /// `text/csv`: a header row, then one record per row.
    Csv,
}

impl Format {
    /// Picks the format from a `Content-Type` header value.
    ///
    /// A missing content type is read as JSON. `application/x-www-form-urlencoded` — what
    /// `curl -d` sends when no type is given — is read as JSON when the body is clearly JSON
    /// (starts with `{` or `[`).
    pub fn from_content_type(content_type: Option<&str>, body: &[u8]) -> Result<Format, Error> {
        let Some(content_type) = content_type else {
            return Ok(Format::Json);
        };
        let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        match essence.as_str() {
            "" | "application/json" | "text/json" => Ok(Format::Json),
            "application/x-ndjson"
            | "application/ndjson"
            | "application/jsonl"
            | "application/x-jsonlines"
            | "application/jsonlines" => Ok(Format::Ndjson),
            "application/x-www-form-urlencoded" if looks_like_json(body) => Ok(Format::Json),
            "text/csv" | "application/csv" => Ok(Format::Csv),
            other => Err(Error::UnsupportedMediaType(format!(
                "content type '{other}' is not supported for ingest; send application/json \
                 (an object or an array of objects), application/x-ndjson (one object per \
                 line), text/csv (with a header row) or a form"
            ))),
        }
    }
}

fn looks_like_json(body: &[u8]) -> bool {
    matches!(body.iter().find(|b| !b.is_ascii_whitespace()), Some(b'{') | Some(b'['))
}

/// A body that could not be decoded, with where.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}", self.render())]
pub struct DecodeError {
    /// 1-based line of the offending record, when known.
    pub line: Option<usize>,
    /// 1-based column, for syntax errors.
    pub column: Option<usize>,
    /// What is wrong, e.g. `whilst decoding field 'price': failed to parse "abc" as Float64`.
    pub message: String,
}

impl DecodeError {
    fn at(line: Option<usize>, message: impl Into<String>) -> Self {
        DecodeError { line, column: None, message: message.into() }
    }

    fn render(&self) -> String {
        match (self.line, self.column) {
            (Some(line), Some(column)) => format!("line {line}, column {column}: {}", self.message),
            (Some(line), None) => format!("line {line}: {}", self.message),
            _ => self.message.clone(),
        }
    }
}

/// One record of the body and the line it starts on.
struct Record<'a> {
    bytes: &'a [u8],
    line: usize,
}

/// How the body is laid out, found without decoding it.
enum Layout<'a> {
    /// Objects one after another (NDJSON, or a JSON object stream): the body can be fed to
    /// arrow-json as it is.
    Stream,
    /// A JSON array: its elements, located by serde_json without building values.
    Array(Vec<Record<'a>>),
}

fn layout(body: &[u8], format: Format) -> Result<Layout<'_>, DecodeError> {
    let first = body.iter().position(|b| !b.is_ascii_whitespace());
    let Some(first) = first else {
        return Err(DecodeError::at(None, "the body holds no records"));
    };
    if format == Format::Json && body[first] == b'[' {
        let elements: Vec<&RawValue> = serde_json::from_slice(body).map_err(syntax_error)?;
        let records = with_lines(body, elements.into_iter().map(Ok))?;
        if records.is_empty() {
            return Err(DecodeError::at(None, "the array holds no records"));
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
        let bytes = value.map_err(syntax_error)?.get().as_bytes();
        // The value borrows from `body`, so its position is a pointer difference.
        let offset = bytes.as_ptr() as usize - body.as_ptr() as usize;
        line += body[scanned..offset].iter().filter(|b| **b == b'\n').count();
        scanned = offset;
        records.push(Record { bytes, line });
    }
    Ok(records)
}

fn syntax_error(e: serde_json::Error) -> DecodeError {
    DecodeError {
        line: Some(e.line()),
        column: Some(e.column()),
        message: format!("malformed JSON: {}", strip_position(&e.to_string())),
    }
}

/// serde_json appends " at line L column C"; we report those separately.
fn strip_position(message: &str) -> &str {
    message.rfind(" at line ").map_or(message, |i| &message[..i])
}

fn decoder(schema: SchemaRef) -> Result<Decoder, DecodeError> {
    ReaderBuilder::new(schema)
        .with_batch_size(BATCH_ROWS)
        .with_strict_mode(true)
        .with_coerce_primitive(true)
        .build_decoder()
        .map_err(|e| DecodeError::at(None, arrow_message(&e)))
}

fn arrow_message(e: &arrow::error::ArrowError) -> String {
    use arrow::error::ArrowError;
    match e {
        ArrowError::JsonError(m) | ArrowError::ParseError(m) | ArrowError::CastError(m) => {
            m.clone()
        }
        other => other.to_string(),
    }
}

/// Feeds `chunks` to a fresh decoder and collects the batches.
fn run<'a>(
    schema: &SchemaRef,
    chunks: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Vec<RecordBatch>, arrow::error::ArrowError> {
    let mut decoder =
        decoder(schema.clone()).map_err(|e| arrow::error::ArrowError::JsonError(e.message))?;
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

/// Decodes `body` into batches with exactly `schema`.
///
/// Fields not in the schema, values that cannot be converted to the column's type and missing
/// values of non-nullable columns are errors; numbers and booleans are accepted for string
/// columns, and strings holding numbers for numeric columns.
pub fn decode(
    body: &[u8],
    format: Format,
    schema: SchemaRef,
) -> Result<Vec<RecordBatch>, DecodeError> {
    if format == Format::Csv {
        return crate::csv::decode_strict(body, &schema);
    }
    let result = match layout(body, format)? {
        Layout::Stream => run(&schema, [body]),
        Layout::Array(ref records) => run(&schema, records.iter().map(|r| r.bytes)),
    };
    match result {
        Ok(batches) if batches.iter().map(|b| b.num_rows()).sum::<usize>() == 0 => {
            Err(DecodeError::at(None, "the body holds no records"))
        }
        Ok(batches) => Ok(batches),
        Err(error) => Err(locate(body, format, &schema, &error)),
    }
}

/// Finds the first record that fails on its own, for an error that says where.
fn locate(
    body: &[u8],
    format: Format,
    schema: &SchemaRef,
    error: &arrow::error::ArrowError,
) -> DecodeError {
    let records = match records(body, format) {
        Ok(records) => records,
        Err(syntax) => return syntax,
    };
    for record in &records {
        if let Err(e) = serde_json::from_slice::<&RawValue>(record.bytes) {
            let mut err = syntax_error(e);
            err.line = Some(record.line + err.line.unwrap_or(1) - 1);
            return err;
        }
        if let Err(e) = run(schema, [record.bytes]) {
            return DecodeError::at(Some(record.line), arrow_message(&e));
        }
    }
    DecodeError::at(None, arrow_message(error))
}

/// Splits the body into records with their line numbers (the slow path).
fn records(body: &[u8], format: Format) -> Result<Vec<Record<'_>>, DecodeError> {
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

/// Decodes the body of a table with a declared contract. Unlike [`decode`], a record that does
/// not fit the schema (a value of the wrong type, an unknown field) is refused on its own and
/// the others are kept; only a body that is not JSON at all fails as a whole, naming the line
/// and column. Columns named in `json_columns` take any JSON value, kept as its text.
pub fn decode_lenient<'a>(
    body: &'a [u8],
    format: Format,
    schema: SchemaRef,
    json_columns: &[String],
) -> Result<Lenient<'a>, DecodeError> {
    let records = records(body, format)?;
    if records.is_empty() {
        return Err(DecodeError::at(None, "the body holds no records"));
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
    let batches = match run(&schema, chunks.iter().copied()) {
        Ok(batches) => batches,
        Err(_) => {
            rows.clear();
            for (i, chunk) in chunks.iter().enumerate() {
                if let Err(e) = serde_json::from_slice::<&RawValue>(records[i].bytes) {
                    let mut err = syntax_error(e);
                    err.line = Some(records[i].line + err.line.unwrap_or(1) - 1);
                    return Err(err);
                }
                match run(&schema, [*chunk]) {
                    Ok(_) => rows.push(i),
                    Err(e) => {
                        let (rule, field, reason) = classify(&arrow_message(&e));
                        refused.push((i, rule, field, reason));
                    }
                }
            }
            run(&schema, rows.iter().map(|&i| chunks[i]))
                .map_err(|e| DecodeError::at(None, arrow_message(&e)))?
        }
    };
    Ok(Lenient { batches, rows, refused, records: records.iter().map(|r| r.bytes).collect() })
}

/// Rewrites a JSON object so the fields in `names` hold their value's JSON text as a string.
fn stringify_fields(record: &[u8], names: &[String]) -> Option<Vec<u8>> {
    let mut object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(record).ok()?;
    for name in names {
        if let Some(value) = object.get_mut(name) {
            if !value.is_null() {
                *value = serde_json::Value::String(value.to_string());
            }
        }
    }
    serde_json::to_vec(&object).ok()
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
    let detail = message.rsplit(": ").next().unwrap_or(message).to_string();
    ("type", field, detail)
}

/// Infers a table schema from the records of `body`, for tables created on first write.
///
/// Integers become `int64`, other numbers `float64`, nested objects structs, arrays lists;
/// columns that are null in every record become strings. Every column is nullable.
pub fn infer_schema(body: &[u8], format: Format) -> Result<Schema, DecodeError> {
    if format == Format::Csv {
        return Ok(crate::csv::storable(&crate::csv::infer(body, 1000)?));
    }
    let records = records(body, format)?;
    let mut values = Vec::with_capacity(records.len());
    for record in &records {
        let value: serde_json::Value = serde_json::from_slice(record.bytes).map_err(|e| {
            let mut err = syntax_error(e);
            err.line = Some(record.line + err.line.unwrap_or(1) - 1);
            err
        })?;
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
        .map_err(|e| DecodeError::at(None, arrow_message(&e)))?;
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
        match field.data_type() {
            DataType::Struct(children) => check_names(children, &format!("{path}."))?,
            DataType::List(item) => {
                if let DataType::Struct(children) = item.data_type() {
                    check_names(children, &format!("{path}[]."))?
                }
            }
            _ => {}
        }
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::util::pretty::pretty_format_batches;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
            Field::new("price", DataType::Float64, true),
        ]))
    }

    fn table(batches: &[RecordBatch]) -> String {
        pretty_format_batches(batches).unwrap().to_string()
    }

    #[test]
    fn object_array_and_ndjson_decode_alike() {
        let one =
            decode(br#"{"id": 1, "name": "a", "price": 2.5}"#, Format::Json, schema()).unwrap();
        let array = decode(
            b"[\n {\"id\": 1, \"name\": \"a\", \"price\": 2.5},\n {\"id\": \"2\", \"name\": 7}\n]",
            Format::Json,
            schema(),
        )
        .unwrap();
        let ndjson = decode(
            b"{\"id\": 1, \"name\": \"a\", \"price\": 2.5}\r\n\n{\"id\": 2, \"name\": \"7\"}\n",
            Format::Ndjson,
            schema(),
        )
        .unwrap();
        assert_eq!(table(&one).lines().count(), 5);
        assert_eq!(table(&array), table(&ndjson));
        assert!(table(&array).contains("| 2  | 7    |       |"), "{}", table(&array));
    }

    #[test]
    fn type_error_names_line_and_field() {
        let body = b"{\"id\": 1}\n{\"id\": 2}\n{\"id\": 3, \"price\": \"cheap\"}\n";
        let err = decode(body, Format::Ndjson, schema()).unwrap_err();
        assert_eq!(err.line, Some(3));
        let text = err.to_string();
        assert!(text.starts_with("line 3: "), "{text}");
        assert!(text.contains("price"), "{text}");
        assert!(text.contains("cheap"), "{text}");
    }

    #[test]
    fn syntax_error_names_line_and_column() {
        let body = b"{\"id\": 1}\n{\"id\" 2}\n";
        let err = decode(body, Format::Ndjson, schema()).unwrap_err();
        assert_eq!((err.line, err.column), (Some(2), Some(7)), "{err}");
        assert!(err.to_string().contains("malformed JSON"), "{err}");

        let err = decode(b"[{\"id\": 1},\n {\"id\": 2]", Format::Json, schema()).unwrap_err();
        assert_eq!(err.line, Some(2), "{err}");
    }

    #[test]
    fn array_element_error_names_its_line() {
        let body = b"[\n{\"id\": 1},\n{\"id\": 2},\n{\"id\": 3, \"price\": [1]}\n]";
        let err = decode(body, Format::Json, schema()).unwrap_err();
        assert_eq!(err.line, Some(4), "{err}");
    }

    #[test]
    fn unknown_field_and_missing_required_are_errors() {
        let err = decode(b"{\"id\": 1, \"colour\": \"red\"}", Format::Json, schema()).unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");
        let err = decode(b"{\"id\": 1}\n{\"name\": \"x\"}", Format::Ndjson, schema()).unwrap_err();
        assert_eq!(err.line, Some(2), "{err}");
    }

    #[test]
    fn empty_bodies_are_refused() {
        for body in [&b""[..], b"  \n", b"[]"] {
            let err = decode(body, Format::Json, schema()).unwrap_err();
            assert!(err.to_string().contains("no records"), "{err}");
        }
    }

    #[test]
    fn inference() {
        let body = b"{\"a\": 1, \"b\": 1.5, \"c\": \"x\", \"d\": null, \"e\": {\"f\": true}, \"g\": [1]}\n{\"a\": 2}";
        let schema = infer_schema(body, Format::Ndjson).unwrap();
        let types: Vec<String> =
            schema.fields().iter().map(|f| format!("{}:{}", f.name(), f.data_type())).collect();
        assert_eq!(types[0], "a:Int64");
        assert_eq!(types[1], "b:Float64");
        assert_eq!(types[2], "c:Utf8");
        assert_eq!(types[3], "d:Utf8");
        assert!(types[4].starts_with("e:Struct"), "{types:?}");
        assert!(types[5].starts_with("g:List"), "{types:?}");
        let err = infer_schema(b"{\"a\": 1}\n42\n", Format::Ndjson).unwrap_err();
        assert_eq!(err.to_string(), "line 2: expected a JSON object, got a number");
    }

    #[test]
    fn content_types() {
        assert_eq!(Format::from_content_type(None, b"").unwrap(), Format::Json);
        assert_eq!(
            Format::from_content_type(Some("application/json; charset=utf-8"), b"").unwrap(),
            Format::Json
        );
        assert_eq!(
            Format::from_content_type(Some("application/x-ndjson"), b"").unwrap(),
            Format::Ndjson
        );
        assert_eq!(
            Format::from_content_type(Some("application/x-www-form-urlencoded"), b" {\"a\":1}")
                .unwrap(),
            Format::Json
        );
        assert_eq!(Format::from_content_type(Some("text/csv"), b"a,b").unwrap(), Format::Csv);
        let err = Format::from_content_type(Some("image/png"), b"").unwrap_err();
        assert!(err.to_string().contains("'image/png' is not supported"), "{err}");
    }
}
