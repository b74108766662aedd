//! Result formats, chosen by the `Accept` header, encoded batch by batch.

use arrow::array::RecordBatch;
use arrow::csv::WriterBuilder as CsvWriterBuilder;
use arrow::datatypes::{Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::ipc::writer::StreamWriter;
use arrow::json::writer::{
    make_encoder, EncoderOptions, LineDelimited, WriterBuilder as JsonWriterBuilder,
};
use serde_json::json;

/// A result format of `POST /v1/sql`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// `application/json` (default): `{"columns": [{"name", "type"}], "rows": [[...], ...]}`.
    Json,
    /// `application/x-ndjson`: one JSON object per row, nulls written out.
    Ndjson,
    /// `text/csv`: RFC 4180 with a header line.
    Csv,
    /// `application/vnd.apache.arrow.stream`: an Arrow IPC stream.
    ArrowStream,
    /// `application/vnd.apache.parquet`: a Parquet file (zstd), streamed row group by row
    /// group.
    Parquet,
}

/// What the end of a result says besides its rows. The JSON format writes it into the
/// document; every format's answer also carries it in headers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trailer {
    /// The result was cut at the row cap.
    pub truncated: bool,
    /// Where the next page of an async query's results starts.
    pub next_page_token: Option<String>,
}

impl OutputFormat {
    /// Every format with its media type, in order of preference for `*/*`.
    const ALL: [(OutputFormat, &'static str); 5] = [
        (OutputFormat::Json, "application/json"),
        (OutputFormat::Ndjson, "application/x-ndjson"),
        (OutputFormat::Csv, "text/csv"),
        (OutputFormat::ArrowStream, "application/vnd.apache.arrow.stream"),
        (OutputFormat::Parquet, "application/vnd.apache.parquet"),
    ];

    /// Picks the format from an `Accept` header: the supported type with the highest `q`
    /// (first listed on ties); no header or `*/*` means JSON. `None` if nothing acceptable is
    /// supported.
    pub fn from_accept(accept: Option<&str>) -> Option<Self> {
        let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
            return Some(OutputFormat::Json);
        };
        let mut best: Option<(f32, OutputFormat)> = None;
        for entry in accept.split(',') {
            let mut parts = entry.split(';');
            let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            if q <= 0.0 {
                continue;
            }
            let format = match media.as_str() {
                "*/*" | "application/*" => Some(OutputFormat::Json),
                "text/*" => Some(OutputFormat::Csv),
                "application/jsonl" | "application/ndjson" => Some(OutputFormat::Ndjson),
                "application/vnd.apache.arrow.file" => None,
                "application/parquet" | "application/x-parquet" => Some(OutputFormat::Parquet),
                media => Self::ALL.iter().find(|(_, m)| *m == media).map(|(f, _)| *f),
            };
            if let Some(format) = format {
                if best.is_none_or(|(best_q, _)| q > best_q) {
                    best = Some((q, format));
                }
            }
        }
        best.map(|(_, f)| f)
    }

    /// The media types Tarn can answer with, for error messages.
    pub fn supported() -> String {
        Self::ALL.iter().map(|(_, m)| *m).collect::<Vec<_>>().join(", ")
    }

    /// The `Content-Type` of answers in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            OutputFormat::Json => "application/json",
            OutputFormat::Ndjson => "application/x-ndjson",
            OutputFormat::Csv => "text/csv; charset=utf-8; header=present",
            OutputFormat::ArrowStream => "application/vnd.apache.arrow.stream",
            OutputFormat::Parquet => "application/vnd.apache.parquet",
        }
    }

    /// Whether a client must hold the whole answer before it can use it: such answers are
    /// cut at the row cap (the other formats stream as long as the result goes).
    pub fn is_buffered(self) -> bool {
        self == OutputFormat::Json
    }

    /// A fresh encoder for one result.
    pub fn encoder(self, schema: SchemaRef) -> Box<dyn BatchEncoder> {
        match self {
            OutputFormat::Json => Box::new(JsonRows { rows: 0 }),
            OutputFormat::Ndjson => Box::new(Ndjson),
            OutputFormat::Csv => Box::new(Csv),
            OutputFormat::ArrowStream => Box::new(ArrowStream { schema, writer: None }),
            OutputFormat::Parquet => Box::new(Parquet { schema, writer: None }),
        }
    }
}

/// Encodes a result batch by batch, so it can stream: `begin`, then `batch` for each batch,
/// then `finish`; each returns the bytes to send next.
pub trait BatchEncoder: Send {
    /// Bytes before the first batch (headers, the schema).
    fn begin(&mut self, schema: &Schema) -> Result<Vec<u8>, ArrowError>;
    /// The bytes of one batch.
    fn batch(&mut self, batch: &RecordBatch) -> Result<Vec<u8>, ArrowError>;
    /// Bytes after the last batch.
    fn finish(&mut self, trailer: &Trailer) -> Result<Vec<u8>, ArrowError>;
}

/// `{"columns": [...], "rows": [[...], ...]}` with typed JSON values.
struct JsonRows {
    rows: usize,
}

impl BatchEncoder for JsonRows {
    fn begin(&mut self, schema: &Schema) -> Result<Vec<u8>, ArrowError> {
        let columns: Vec<_> = schema
            .fields()
            .iter()
            .map(|f| json!({"name": f.name(), "type": tarn_catalog::type_name(f.data_type())}))
            .collect();
        let mut out = b"{\"columns\":".to_vec();
        serde_json::to_writer(&mut out, &columns)
            .map_err(|e| ArrowError::JsonError(e.to_string()))?;
        out.extend_from_slice(b",\"rows\":[");
        Ok(out)
    }

    fn batch(&mut self, batch: &RecordBatch) -> Result<Vec<u8>, ArrowError> {
        let options = EncoderOptions::default();
        let schema = batch.schema();
        let mut encoders = schema
            .fields()
            .iter()
            .zip(batch.columns())
            .map(|(field, column)| make_encoder(field, column.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()?;
        let mut out = Vec::with_capacity(batch.get_array_memory_size() * 2);
        for row in 0..batch.num_rows() {
            if self.rows > 0 {
                out.push(b',');
            }
            self.rows += 1;
            out.push(b'[');
            for (i, encoder) in encoders.iter_mut().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                if encoder.is_null(row) {
                    out.extend_from_slice(b"null");
                } else {
                    encoder.encode(row, &mut out);
                }
            }
            out.push(b']');
        }
        Ok(out)
    }

    fn finish(&mut self, trailer: &Trailer) -> Result<Vec<u8>, ArrowError> {
        let mut out = b"]".to_vec();
        if trailer.truncated {
            out.extend_from_slice(b",\"truncated\":true");
        }
        if let Some(token) = &trailer.next_page_token {
            out.extend_from_slice(b",\"next_page_token\":");
            serde_json::to_writer(&mut out, token)
                .map_err(|e| ArrowError::JsonError(e.to_string()))?;
        }
        out.extend_from_slice(b"}\n");
        Ok(out)
    }
}

struct Ndjson;

impl BatchEncoder for Ndjson {
    fn begin(&mut self, _schema: &Schema) -> Result<Vec<u8>, ArrowError> {
        Ok(Vec::new())
    }

    fn batch(&mut self, batch: &RecordBatch) -> Result<Vec<u8>, ArrowError> {
        let mut writer = JsonWriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, LineDelimited>(Vec::new());
        writer.write(batch)?;
        writer.finish()?;
        Ok(writer.into_inner())
    }

    fn finish(&mut self, _trailer: &Trailer) -> Result<Vec<u8>, ArrowError> {
        Ok(Vec::new())
    }
}

struct Csv;

impl BatchEncoder for Csv {
    fn begin(&mut self, schema: &Schema) -> Result<Vec<u8>, ArrowError> {
        // The header comes first even when the result has no rows.
        let mut writer = CsvWriterBuilder::new().with_header(true).build(Vec::new());
        writer.write(&RecordBatch::new_empty(std::sync::Arc::new(schema.clone())))?;
        Ok(writer.into_inner())
    }

    fn batch(&mut self, batch: &RecordBatch) -> Result<Vec<u8>, ArrowError> {
        let mut writer = CsvWriterBuilder::new().with_header(false).build(Vec::new());
        writer.write(batch)?;
        Ok(writer.into_inner())
    }

    fn finish(&mut self, _trailer: &Trailer) -> Result<Vec<u8>, ArrowError> {
        Ok(Vec::new())
    }
}

struct ArrowStream {
    schema: SchemaRef,
    writer: Option<StreamWriter<Vec<u8>>>,
}

impl ArrowStream {
    fn take(&mut self) -> Vec<u8> {
        self.writer.as_mut().map(|w| std::mem::take(w.get_mut())).unwrap_or_default()
    }
}

impl BatchEncoder for ArrowStream {
    fn begin(&mut self, _schema: &Schema) -> Result<Vec<u8>, ArrowError> {
        self.writer = Some(StreamWriter::try_new(Vec::new(), &self.schema)?);
        Ok(self.take())
    }

    fn batch(&mut self, batch: &RecordBatch) -> Result<Vec<u8>, ArrowError> {
        if let Some(writer) = self.writer.as_mut() {
            writer.write(batch)?;
        }
        Ok(self.take())
    }

    fn finish(&mut self, _trailer: &Trailer) -> Result<Vec<u8>, ArrowError> {
        if let Some(writer) = self.writer.as_mut() {
            writer.finish()?;
        }
        Ok(self.take())
    }
}

/// Rows per Parquet row group of an answer: what the encoder holds before it sends bytes.
const PARQUET_ROW_GROUP_ROWS: usize = 65_536;

struct Parquet {
    schema: SchemaRef,
    writer: Option<parquet::arrow::ArrowWriter<Vec<u8>>>,
}

impl Parquet {
    fn take(&mut self) -> Vec<u8> {
        self.writer.as_mut().map(|w| std::mem::take(w.inner_mut())).unwrap_or_default()
    }
}

fn parquet_error(e: parquet::errors::ParquetError) -> ArrowError {
    ArrowError::ExternalError(Box::new(e))
}

impl BatchEncoder for Parquet {
    fn begin(&mut self, _schema: &Schema) -> Result<Vec<u8>, ArrowError> {
        let properties = parquet::file::properties::WriterProperties::builder()
            .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
            .set_max_row_group_row_count(Some(PARQUET_ROW_GROUP_ROWS))
            .build();
        let writer =
            parquet::arrow::ArrowWriter::try_new(Vec::new(), self.schema.clone(), Some(properties))
                .map_err(parquet_error)?;
        self.writer = Some(writer);
        Ok(self.take())
    }

    fn batch(&mut self, batch: &RecordBatch) -> Result<Vec<u8>, ArrowError> {
        if let Some(writer) = self.writer.as_mut() {
            writer.write(batch).map_err(parquet_error)?;
        }
        Ok(self.take())
    }

    fn finish(&mut self, _trailer: &Trailer) -> Result<Vec<u8>, ArrowError> {
        if let Some(writer) = self.writer.as_mut() {
            writer.finish().map_err(parquet_error)?;
        }
        Ok(self.take())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float64Array, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field};
    use std::sync::Arc;

    fn batch() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
            Field::new("price", DataType::Float64, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![Some(1), Some(2)])),
                Arc::new(StringArray::from(vec![Some("a,b"), None])),
                Arc::new(Float64Array::from(vec![Some(2.5), None])),
            ],
        )
        .unwrap()
    }

    fn encode(format: OutputFormat, batches: &[RecordBatch]) -> Vec<u8> {
        let schema = batches[0].schema();
        let mut encoder = format.encoder(schema.clone());
        let mut out = encoder.begin(&schema).unwrap();
        for b in batches {
            out.extend(encoder.batch(b).unwrap());
        }
        out.extend(encoder.finish(&Trailer::default()).unwrap());
        out
    }

    #[test]
    fn json_rows_are_typed_arrays() {
        let out = encode(OutputFormat::Json, &[batch(), batch()]);
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            value,
            json!({
                "columns": [
                    {"name": "id", "type": "int64"},
                    {"name": "name", "type": "string"},
                    {"name": "price", "type": "float64"}
                ],
                "rows": [[1, "a,b", 2.5], [2, null, null], [1, "a,b", 2.5], [2, null, null]]
            })
        );
    }

    #[test]
    fn ndjson_and_csv() {
        let out = String::from_utf8(encode(OutputFormat::Ndjson, &[batch()])).unwrap();
        assert_eq!(
            out,
            "{\"id\":1,\"name\":\"a,b\",\"price\":2.5}\n{\"id\":2,\"name\":null,\"price\":null}\n"
        );
        let out = String::from_utf8(encode(OutputFormat::Csv, &[batch(), batch()])).unwrap();
        assert_eq!(out, "id,name,price\n1,\"a,b\",2.5\n2,,\n1,\"a,b\",2.5\n2,,\n");
    }

    #[test]
    fn arrow_stream_round_trips() {
        let out = encode(OutputFormat::ArrowStream, &[batch(), batch()]);
        let reader =
            arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(out), None).unwrap();
        let batches: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[1], batch());
    }

    #[test]
    fn parquet_round_trips_and_json_says_when_cut() {
        let out = encode(OutputFormat::Parquet, &[batch(), batch()]);
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            bytes::Bytes::from(out),
        )
        .unwrap()
        .build()
        .unwrap();
        let batches: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
        assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 4);
        assert_eq!(batches[0].slice(0, 2), batch());

        let schema = batch().schema();
        let mut encoder = OutputFormat::Json.encoder(schema.clone());
        let mut out = encoder.begin(&schema).unwrap();
        out.extend(encoder.batch(&batch().slice(0, 1)).unwrap());
        let trailer = Trailer { truncated: true, next_page_token: Some("p2".into()) };
        out.extend(encoder.finish(&trailer).unwrap());
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(value["rows"], json!([[1, "a,b", 2.5]]));
        assert_eq!(value["truncated"], json!(true));
        assert_eq!(value["next_page_token"], json!("p2"));
    }

    #[test]
    fn accept_negotiation() {
        use OutputFormat::*;
        assert_eq!(OutputFormat::from_accept(None), Some(Json));
        assert_eq!(OutputFormat::from_accept(Some("*/*")), Some(Json));
        assert_eq!(OutputFormat::from_accept(Some("text/csv")), Some(Csv));
        assert_eq!(
            OutputFormat::from_accept(Some(
                "application/json;q=0.5, application/vnd.apache.arrow.stream"
            )),
            Some(ArrowStream)
        );
        assert_eq!(OutputFormat::from_accept(Some("application/x-ndjson")), Some(Ndjson));
        assert_eq!(OutputFormat::from_accept(Some("image/png")), None);
        assert_eq!(
            OutputFormat::from_accept(Some("application/vnd.apache.parquet")),
            Some(Parquet)
        );
    }
}
