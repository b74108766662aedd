//! The file formats Tarn loads, and how their names and content types say which.

use serde::Serialize;

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
