//! What the catalog stores about a table.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{Result, TableName, TableSpec};

/// A catalog entry, stored as JSON at
/// `_tarn/catalog/tables/<namespace>/<table>/<revision>.json`.
///
/// The Delta log stays the source of truth for schema and data; the definition records what
/// Tarn needs beyond it: the declared contract ([`TableSpec`]) and where the table came from.
/// Unknown fields are refused at the API, not in stored documents, so an older Tarn can still
/// read a newer document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableDefinition {
    /// The namespace (`default` unless given).
    pub namespace: String,
    /// The table name within the namespace.
    pub name: String,
    /// Where the Delta table lives, relative to the lake root (`namespace/table`).
    pub location: String,
    /// When the entry was created.
    pub created_at: DateTime<Utc>,
    /// How it was created: `auto` (first ingest, inferred schema), `api` (`PUT`), `config`
    /// (`tarn.toml`) or `tarn` (a table Tarn keeps for another: `_rejected`, `_raw`).
    pub created_by: String,
    /// When the definition last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<DateTime<Utc>>,
    /// Revision of the definition: 0 when created, one more with each change.
    #[serde(default)]
    pub revision: u64,
    /// For tables Tarn keeps on behalf of another (`leads_rejected`, `leads_raw`): the
    /// qualified name of that table. Only Tarn writes to them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// For tables the crawler registered over data Tarn does not own (a Delta table written
    /// by another tool, a prefix of Parquet / CSV / NDJSON files): where the data is and what
    /// the crawler found. Tarn only reads such tables; it never writes or deletes their data.
    /// Absent in documents of Tarn's own tables (and in documents older than the crawler).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalSource>,
    /// The declared contract (empty for tables created with an inferred schema).
    #[serde(flatten)]
    pub spec: TableSpec,
}

/// The data behind an external table, as the crawler found it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExternalSource {
    /// The data's absolute URL, ending with `/` (`file:///data/sales/`, `s3://bucket/sales/`).
    pub url: String,
    /// How the data is stored.
    pub format: ExternalFormat,
    /// For file formats: the extension of the data files (`.parquet`, `.csv`, `.ndjson`, ...);
    /// other files under the prefix are not read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_extension: Option<String>,
    /// Hive-style partition columns (`key=value/` path segments), outermost first, with the
    /// type inferred from their values. For Delta tables, the table's partition columns.
    #[serde(default)]
    pub partition_columns: Vec<ExternalColumn>,
    /// The columns read from the data files, merged over all files (partition columns not
    /// included). For Delta tables, the table's schema when it was crawled (queries read the
    /// current schema from the Delta log).
    #[serde(default)]
    pub columns: Vec<ExternalColumn>,
    /// How many partitions (distinct `key=value/` directories) the last crawl found.
    #[serde(default)]
    pub partitions: u64,
    /// When the data was last crawled.
    pub crawled_at: DateTime<Utc>,
}

/// The storage format of an external table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExternalFormat {
    /// A Delta Lake table (a directory with `_delta_log/`).
    Delta,
    /// Parquet files.
    Parquet,
    /// CSV files with a header line.
    Csv,
    /// Newline-delimited JSON files.
    Ndjson,
}

impl ExternalFormat {
    /// The format's name as the API shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            ExternalFormat::Delta => "delta",
            ExternalFormat::Parquet => "parquet",
            ExternalFormat::Csv => "csv",
            ExternalFormat::Ndjson => "ndjson",
        }
    }
}

impl std::fmt::Display for ExternalFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A column of an external table. The type is stored in Arrow's own spelling (`Int64`,
/// `Utf8`, `Timestamp(µs, "UTC")`), which parses back exactly; `type_name` is Tarn's spelling,
/// for people.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExternalColumn {
    /// Column name.
    pub name: String,
    /// The Arrow type, as `DataType`'s `Display` writes it.
    pub arrow_type: String,
    /// Tarn's name of the type (see [`crate::type_name`]).
    #[serde(rename = "type")]
    pub type_name: String,
    /// Whether the column may hold nulls.
    #[serde(default = "yes")]
    pub nullable: bool,
}

fn yes() -> bool {
    true
}

impl ExternalColumn {
    /// The column of an Arrow field.
    pub fn from_field(field: &arrow::datatypes::Field) -> Self {
        ExternalColumn {
            name: field.name().clone(),
            arrow_type: field.data_type().to_string(),
            type_name: crate::type_name(field.data_type()),
            nullable: field.is_nullable(),
        }
    }

    /// The Arrow field back; fails when the stored type does not parse (a document written
    /// by another Arrow version).
    pub fn to_field(&self) -> Result<arrow::datatypes::Field> {
        let data_type: arrow::datatypes::DataType =
            self.arrow_type.parse().map_err(|e| crate::Error::InvalidDefinition {
                reason: format!(
                    "the stored type '{}' of column '{}' does not parse: {e}; crawl the table again",
                    self.arrow_type, self.name
                ),
            })?;
        Ok(arrow::datatypes::Field::new(&self.name, data_type, self.nullable))
    }
}

/// Names starting with `_` or `.` (`_SUCCESS`, `_tarn/`, `.spark-staging/`) are not data.
pub(crate) fn hidden(segment: &str) -> bool {
    segment.starts_with('_') || segment.starts_with('.')
}

/// True when `relative` (a path below an external table's root) is one of its data files:
/// no hidden segment, and the table's extension.
pub(crate) fn is_data_file(relative: &str, extension: &str) -> bool {
    let relative = relative.trim_start_matches('/');
    !relative.is_empty()
        && !relative.split('/').any(hidden)
        && relative.to_ascii_lowercase().ends_with(extension)
}

impl ExternalSource {
    /// The columns of the data files followed by the partition columns: the table's schema
    /// as queries see it (for file formats).
    pub fn schema(&self) -> Result<arrow::datatypes::Schema> {
        let fields = self
            .columns
            .iter()
            .chain(&self.partition_columns)
            .map(ExternalColumn::to_field)
            .collect::<Result<Vec<_>>>()?;
        Ok(arrow::datatypes::Schema::new(fields))
    }

    /// The schema of the data files alone (without partition columns).
    pub fn file_schema(&self) -> Result<arrow::datatypes::Schema> {
        let fields =
            self.columns.iter().map(ExternalColumn::to_field).collect::<Result<Vec<_>>>()?;
        Ok(arrow::datatypes::Schema::new(fields))
    }

    /// The partition columns as Arrow fields.
    pub fn partition_fields(&self) -> Result<Vec<arrow::datatypes::Field>> {
        self.partition_columns.iter().map(ExternalColumn::to_field).collect()
    }
}

impl TableDefinition {
    /// The table's qualified name.
    pub fn name(&self) -> TableName {
        TableName::stored(&self.namespace, &self.name).expect("names are checked when read")
    }

    /// True for tables the crawler registered over data Tarn does not own.
    pub fn is_external(&self) -> bool {
        self.external.is_some()
    }

    /// The name, checked: definitions read from the lake may have been edited by hand.
    pub(crate) fn parse_name(&self) -> Result<TableName> {
        TableName::stored(&self.namespace, &self.name)
    }
}

/// A column as the catalog API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnInfo {
    /// Column name.
    pub name: String,
    /// Type name, see [`crate::type_name`].
    #[serde(rename = "type")]
    pub data_type: String,
    /// Whether the column may hold nulls.
    pub nullable: bool,
    /// The declared comment, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// `declared`, `derived`, or `inferred` (tables created from their first records).
    pub origin: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{DataType, Field, TimeUnit};

    #[test]
    fn arrow_types_round_trip() {
        for data_type in [
            DataType::Int64,
            DataType::Utf8,
            DataType::Float64,
            DataType::Boolean,
            DataType::Date32,
            DataType::Decimal128(12, 2),
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            DataType::Timestamp(TimeUnit::Nanosecond, None),
            DataType::List(Field::new("item", DataType::Int32, true).into()),
            DataType::Struct(vec![Field::new("a", DataType::Utf8, true)].into()),
        ] {
            let column = ExternalColumn::from_field(&Field::new("c", data_type.clone(), true));
            assert_eq!(column.to_field().unwrap().data_type(), &data_type, "{column:?}");
        }
    }

    #[test]
    fn documents_without_external_still_read() {
        let doc = r#"{"namespace": "default", "name": "events", "location": "default/events",
            "created_at": "2026-01-01T00:00:00Z", "created_by": "auto"}"#;
        let definition: TableDefinition = serde_json::from_str(doc).unwrap();
        assert!(definition.external.is_none());
    }
}
