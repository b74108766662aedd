//! What a found table looks like: its columns, partition columns and files.
//!
//! A Delta table's schema comes from its log. The schema of a table of files is inferred with
//! DataFusion's readers (Parquet footers; the first records of CSV, with a header line, and of
//! NDJSON) over all files, so a column that only newer files have shows up: CSV and NDJSON
//! schemas are merged with [`merge_widening`] (a column typed differently in two files takes
//! the wider type), Parquet footers with DataFusion's own merge (which refuses a column whose
//! type differs between files). Every column of an external table is nullable: Tarn does not control what is
//! written there next. Partition columns are typed from their values ([`partition_type`]).

use std::collections::BTreeSet;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use chrono::Utc;
use datafusion::datasource::file_format::csv::CsvFormat;
use datafusion::datasource::file_format::json::JsonFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::file_format::FileFormat;
use datafusion::prelude::SessionContext;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore};
use tarn_lake::Lake;
use url::Url;

use super::discover::{format_of, FoundKind, PartitionedFile};
use crate::{ExternalColumn, ExternalFormat, ExternalSource};

/// What the crawler learned about one table.
pub(crate) struct Inferred {
    /// The table's source, as it will be stored.
    pub(crate) source: ExternalSource,
    /// How many data files it has.
    pub(crate) files: usize,
    /// What to know (files ignored, columns inferred from a sample).
    pub(crate) notes: Vec<String>,
}

/// Files of a CSV or NDJSON table whose columns are inferred one by one.
const MAX_FILES_INFERRED: usize = 1000;

/// Reads the schema of a table found at `url` (in `store`).
pub(crate) async fn infer(
    lake: &Lake,
    url: &Url,
    store: &Arc<dyn ObjectStore>,
    kind: FoundKind,
) -> tarn_lake::Result<Inferred> {
    match kind {
        FoundKind::Delta => infer_delta(lake, url).await,
        FoundKind::Files { extension, files, notes } => {
            infer_files(url, store, extension, files, notes).await
        }
    }
}

async fn infer_delta(lake: &Lake, url: &Url) -> tarn_lake::Result<Inferred> {
    let crawled_at = Utc::now();
    let table = lake.open_table_url(url).await?;
    let schema = table.schema()?;
    let partition_names = table.partition_columns()?;
    let (partitions, columns): (Vec<_>, Vec<_>) =
        schema.fields().iter().partition(|f| partition_names.contains(f.name()));
    let partition_columns = partition_names
        .iter()
        .filter_map(|n| partitions.iter().find(|f| f.name() == n))
        .map(|f| ExternalColumn::from_field(f))
        .collect();
    Ok(Inferred {
        source: ExternalSource {
            url: url.to_string(),
            format: ExternalFormat::Delta,
            file_extension: None,
            partition_columns,
            columns: columns.iter().map(|f| ExternalColumn::from_field(f)).collect(),
            partitions: 0,
            crawled_at,
        },
        files: table.stats().files,
        notes: vec![],
    })
}

async fn infer_files(
    url: &Url,
    store: &Arc<dyn ObjectStore>,
    extension: String,
    files: Vec<PartitionedFile>,
    mut notes: Vec<String>,
) -> tarn_lake::Result<Inferred> {
    let crawled_at = Utc::now();
    let format = format_of(&format!("x{extension}")).expect("known extension").0;
    let file_format: Arc<dyn FileFormat> = match format {
        ExternalFormat::Parquet => Arc::new(ParquetFormat::default()),
        ExternalFormat::Csv => Arc::new(CsvFormat::default().with_has_header(true)),
        _ => Arc::new(JsonFormat::default()),
    };
    let mut values: Vec<(String, BTreeSet<String>)> = Vec::new();
    let mut partitions: BTreeSet<Vec<(String, String)>> = BTreeSet::new();
    for (_, parts) in &files {
        for (i, (key, value)) in parts.iter().enumerate() {
            if values.len() <= i {
                values.push((key.clone(), BTreeSet::new()));
            }
            values[i].1.insert(value.clone());
        }
        if !parts.is_empty() {
            partitions.insert(parts.clone());
        }
    }
    let objects: Vec<ObjectMeta> =
        files.iter().map(|(m, _)| m.clone()).filter(|m| m.size > 0).collect();
    if objects.is_empty() {
        return Err(tarn_lake::Error::SchemaMismatch(
            "its files are all empty; there is no schema to infer".into(),
        ));
    }
    let ctx = SessionContext::new();
    let infer = |objects: Vec<ObjectMeta>| {
        let (state, file_format) = (ctx.state(), file_format.clone());
        async move {
            file_format.infer_schema(&state, store, &objects).await.map_err(|e| {
                tarn_lake::Error::SchemaMismatch(format!(
                    "cannot infer a schema from its {format} files: {}",
                    e.find_root()
                ))
            })
        }
    };
    let schema = match format {
        // Parquet footers name and type every column of every file.
        ExternalFormat::Parquet | ExternalFormat::Delta => infer(objects).await?,
        // DataFusion samples CSV and JSON across files up to a number of records in all:
        // infer each file, so a column only newer files have is seen.
        ExternalFormat::Csv | ExternalFormat::Ndjson => {
            let mut schemas = Vec::new();
            for object in objects.iter().take(MAX_FILES_INFERRED) {
                schemas.push((object.location.clone(), infer(vec![object.clone()]).await?));
            }
            if objects.len() > MAX_FILES_INFERRED {
                notes.push(format!(
                    "columns inferred from the first {MAX_FILES_INFERRED} of {} files",
                    objects.len()
                ));
            }
            if format == ExternalFormat::Csv {
                same_csv_headers(&schemas)?;
            }
            Arc::new(merge_widening(schemas.iter().map(|(_, s)| s.as_ref())))
        }
    };
    let partition_columns: Vec<ExternalColumn> = values
        .iter()
        .map(|(key, values)| {
            ExternalColumn::from_field(&Field::new(key, partition_type(values), true))
        })
        .collect();
    let columns: Vec<ExternalColumn> = schema
        .fields()
        .iter()
        .filter(|f| !values.iter().any(|(k, _)| k == f.name()))
        .map(|f| ExternalColumn::from_field(&f.as_ref().clone().with_nullable(true)))
        .collect();
    Ok(Inferred {
        source: ExternalSource {
            url: url.to_string(),
            format,
            file_extension: Some(extension),
            partition_columns,
            columns,
            partitions: partitions.len() as u64,
            crawled_at,
        },
        files: files.len(),
        notes,
    })
}

/// The type of a partition column from its values: `int64` when every value is an integer
/// (without leading zeros), `date` when every value is a `YYYY-MM-DD` date, `string` otherwise.
pub(crate) fn partition_type(values: &BTreeSet<String>) -> DataType {
    let integer = |v: &str| {
        v.parse::<i64>().is_ok() && !(v.len() > 1 && (v.starts_with('0') || v.starts_with("-0")))
    };
    let date = |v: &str| chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d").is_ok() && v.len() == 10;
    if !values.is_empty() && values.iter().all(|v| integer(v)) {
        DataType::Int64
    } else if !values.is_empty() && values.iter().all(|v| date(v)) {
        DataType::Date32
    } else {
        DataType::Utf8
    }
}

/// CSV files are read by column position: files with other headers than the first would
/// silently put values under the wrong columns, so such a prefix is not one table.
fn same_csv_headers(schemas: &[(Path, SchemaRef)]) -> tarn_lake::Result<()> {
    let names = |schema: &Schema| -> Vec<String> {
        schema.fields().iter().map(|f| f.name().clone()).collect()
    };
    let Some((first_path, first)) = schemas.first() else { return Ok(()) };
    match schemas.iter().find(|(_, schema)| names(schema) != names(first)) {
        None => Ok(()),
        Some((path, schema)) => Err(tarn_lake::Error::SchemaMismatch(format!(
            "its CSV files have different headers ({first_path}: {}; {path}: {}); CSV columns are read by position, so they cannot be one table",
            names(first).join(","),
            names(schema).join(",")
        ))),
    }
}

/// One schema for all files: every column of any file, in order of appearance; where files
/// disagree on a column's type, integers and floats widen to float, anything else to string.
fn merge_widening<'a>(schemas: impl Iterator<Item = &'a Schema>) -> Schema {
    let mut fields: Vec<Field> = Vec::new();
    for schema in schemas {
        for field in schema.fields() {
            match fields.iter_mut().find(|f| f.name() == field.name()) {
                None => fields.push(field.as_ref().clone().with_nullable(true)),
                Some(known) if known.data_type() == field.data_type() => {}
                Some(known) => {
                    let numeric = |t: &DataType| t.is_integer() || t.is_floating();
                    let wider = match (known.data_type(), field.data_type()) {
                        (DataType::Null, other) | (other, DataType::Null) => other.clone(),
                        (a, b) if numeric(a) && numeric(b) => DataType::Float64,
                        _ => DataType::Utf8,
                    };
                    *known = known.clone().with_data_type(wider);
                }
            }
        }
    }
    Schema::new(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_files_must_share_their_header_and_types_widen() {
        let schema = |fields: &[(&str, DataType)]| {
            Arc::new(Schema::new(
                fields.iter().map(|(n, t)| Field::new(*n, t.clone(), true)).collect::<Vec<_>>(),
            ))
        };
        let a = schema(&[("page", DataType::Utf8), ("ms", DataType::Int64)]);
        let b = schema(&[("page", DataType::Utf8), ("ms", DataType::Float64)]);
        let swapped = schema(&[("ms", DataType::Int64), ("page", DataType::Utf8)]);
        assert!(same_csv_headers(&[
            (Path::from("a.csv"), a.clone()),
            (Path::from("b.csv"), b.clone())
        ])
        .is_ok());
        let err =
            same_csv_headers(&[(Path::from("a.csv"), a.clone()), (Path::from("c.csv"), swapped)])
                .unwrap_err()
                .to_string();
        assert!(err.contains("different headers") && err.contains("c.csv: ms,page"), "{err}");

        let newer = schema(&[("page", DataType::Boolean), ("channel", DataType::Utf8)]);
        let merged = merge_widening([a.as_ref(), b.as_ref(), newer.as_ref()].into_iter());
        let got: Vec<(String, DataType)> =
            merged.fields().iter().map(|f| (f.name().clone(), f.data_type().clone())).collect();
        assert_eq!(
            got,
            vec![
                ("page".to_string(), DataType::Utf8),
                ("ms".to_string(), DataType::Float64),
                ("channel".to_string(), DataType::Utf8),
            ]
        );
    }

    #[test]
    fn partition_types() {
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        assert_eq!(partition_type(&set(&["2025", "2026"])), DataType::Int64);
        assert_eq!(partition_type(&set(&["01234"])), DataType::Utf8);
        assert_eq!(partition_type(&set(&["2025-01-02"])), DataType::Date32);
        assert_eq!(partition_type(&set(&["1", "__HIVE_DEFAULT_PARTITION__"])), DataType::Utf8);
    }
}
