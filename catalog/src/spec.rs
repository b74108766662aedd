//! What a user declares about a table: its data contract.
//!
//! A [`TableSpec`] is the body of `PUT /v1/tables/{table}` and of a `[[tables]]` entry in
//! `tarn.toml`:
//!
//! ```json
//! {
//!   "columns": [
//!     {"name": "email", "type": "string", "nullable": false, "comment": "lead e-mail"},
//!     {"name": "date_of_birth", "type": "date"},
//!     {"name": "submitted_at", "type": "timestamp"}
//!   ],
//!   "partition_by": ["submitted_date"],
//!   "unique_key": ["email"],
//!   "cluster_by": ["submitted_at"],
//!   "rules": [{"name": "adult", "check": "date_of_birth <= DATE '2004-01-01'",
//!              "message": "applicant must be 18 or older"}],
//!   "derived": [{"name": "submitted_date", "expr": "CAST(submitted_at AS DATE)"}],
//!   "raw_backup": true,
//!   "flush": {"max_age_ms": 1000, "max_rows": 1000000, "max_bytes": 67108864},
//!   "forms": {"allowed_origins": ["https://www.example.com"],
//!             "success_url": "https://www.example.com/thanks", "honeypot": "website"}
//! }
//! ```
//!
//! Rules are SQL boolean expressions with the semantics of a SQL `CHECK` constraint: a row is
//! rejected when the expression is false, not when it is null (a rule about an optional column
//! holds when the column is empty; add `nullable: false` to require it). Derived columns are
//! SQL expressions over the declared columns (and the derived columns before them); their type
//! is what the expression yields. Both are compiled with DataFusion when the definition is
//! stored, so a typo is refused then, not at the first ingest.

use std::fmt;
use std::str::FromStr;

use arrow::datatypes::{DataType, TimeUnit};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{Error, Result};

/// The time zone of every `timestamp` column: instants are stored in UTC.
pub const UTC: &str = "UTC";

/// A column type a definition can declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ColumnType {
    /// UTF-8 text.
    String,
    /// `true` / `false`.
    Boolean,
    /// 32-bit signed integer.
    Int32,
    /// 64-bit signed integer.
    Int64,
    /// 64-bit floating point.
    Float64,
    /// Exact decimal with `precision` digits, `scale` of them after the point.
    Decimal {
        /// Total digits, 1 to 38.
        precision: u8,
        /// Digits after the point, 0 to `precision`.
        scale: i8,
    },
    /// A calendar date.
    Date,
    /// An instant, stored in UTC with microsecond precision.
    Timestamp,
    /// Any JSON value (nested objects, arrays), kept as its JSON text in a string column.
    Json,
}

impl ColumnType {
    /// The Arrow type the column is stored as.
    pub fn arrow(&self) -> DataType {
        match self {
            ColumnType::String | ColumnType::Json => DataType::Utf8,
            ColumnType::Boolean => DataType::Boolean,
            ColumnType::Int32 => DataType::Int32,
            ColumnType::Int64 => DataType::Int64,
            ColumnType::Float64 => DataType::Float64,
            ColumnType::Decimal { precision, scale } => DataType::Decimal128(*precision, *scale),
            ColumnType::Date => DataType::Date32,
            ColumnType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into())),
        }
    }

    /// The declared type a stored Arrow type corresponds to, if any (`json` reads as `string`).
    pub fn from_arrow(data_type: &DataType) -> Option<ColumnType> {
        Some(match data_type {
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => ColumnType::String,
            DataType::Boolean => ColumnType::Boolean,
            DataType::Int32 => ColumnType::Int32,
            DataType::Int64 => ColumnType::Int64,
            DataType::Float64 => ColumnType::Float64,
            DataType::Decimal128(precision, scale) => {
                ColumnType::Decimal { precision: *precision, scale: *scale }
            }
            DataType::Date32 => ColumnType::Date,
            DataType::Timestamp(TimeUnit::Microsecond, Some(tz)) if tz.as_ref() == UTC => {
                ColumnType::Timestamp
            }
            _ => return None,
        })
    }
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ColumnType::String => f.write_str("string"),
            ColumnType::Boolean => f.write_str("boolean"),
            ColumnType::Int32 => f.write_str("int32"),
            ColumnType::Int64 => f.write_str("int64"),
            ColumnType::Float64 => f.write_str("float64"),
            ColumnType::Decimal { precision, scale } => write!(f, "decimal({precision},{scale})"),
            ColumnType::Date => f.write_str("date"),
            ColumnType::Timestamp => f.write_str("timestamp"),
            ColumnType::Json => f.write_str("json"),
        }
    }
}

/// The names [`ColumnType`] accepts, for error messages.
pub const TYPE_NAMES: &str =
    "string, boolean, int32, int64, float64, decimal(p,s), date, timestamp, json";

impl FromStr for ColumnType {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let lower = s.trim().to_ascii_lowercase();
        let t = match lower.as_str() {
            "string" | "text" | "varchar" | "utf8" => ColumnType::String,
            "boolean" | "bool" => ColumnType::Boolean,
            "int32" | "int" | "integer" => ColumnType::Int32,
            "int64" | "bigint" | "long" => ColumnType::Int64,
            "float64" | "double" | "float" => ColumnType::Float64,
            "date" => ColumnType::Date,
            "timestamp" => ColumnType::Timestamp,
            "json" => ColumnType::Json,
            other => {
                let inner = other
                    .strip_prefix("decimal(")
                    .and_then(|r| r.strip_suffix(')'))
                    .ok_or_else(|| format!("unknown type '{s}'; use one of {TYPE_NAMES}"))?;
                let (p, sc) = inner
                    .split_once(',')
                    .ok_or_else(|| format!("'{s}': a decimal is decimal(precision,scale)"))?;
                let precision: u8 =
                    p.trim().parse().map_err(|_| format!("'{s}': bad precision"))?;
                let scale: i8 = sc.trim().parse().map_err(|_| format!("'{s}': bad scale"))?;
                if !(1..=38).contains(&precision) || scale < 0 || scale as u8 > precision {
                    return Err(format!(
                        "'{s}': precision must be 1 to 38 and scale 0 to the precision"
                    ));
                }
                ColumnType::Decimal { precision, scale }
            }
        };
        Ok(t)
    }
}

impl Serialize for ColumnType {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ColumnType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

/// A declared column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnSpec {
    /// Column name: a letter or `_`, then letters, digits or `_`.
    pub name: String,
    /// The type values are coerced to.
    #[serde(rename = "type")]
    pub data_type: ColumnType,
    /// Whether the column may be empty; a row without a value for a non-nullable column is
    /// rejected.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub nullable: bool,
    /// A description, shown in the catalog and stored in the Delta schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// A rule every row must satisfy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Short name, recorded with each rejected row.
    pub name: String,
    /// SQL boolean expression over the row's columns (declared and derived).
    pub check: String,
    /// Human-readable reason recorded with rejected rows (default: the rule's check).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A column computed from the others on ingest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Derived {
    /// Column name.
    pub name: String,
    /// SQL expression over the declared columns and earlier derived columns.
    pub expr: String,
    /// A description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// Per-table flush thresholds; unset values use the server's.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlushSpec {
    /// Commit buffered records at the latest this long after the first arrived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_ms: Option<u64>,
    /// Commit when this many rows are buffered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rows: Option<usize>,
    /// Commit when the buffered request bodies reach this many bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
}

impl FlushSpec {
    fn is_empty(&self) -> bool {
        self == &FlushSpec::default()
    }
}

/// How browser forms may post to the table.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FormSpec {
    /// Origins (`https://www.example.com`) whose pages may post to the table from a browser
    /// (CORS), and to which `?redirect=` may send the browser back.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_origins: Vec<String>,
    /// Where a browser is sent (303) after an accepted form post, unless `?redirect=` says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_url: Option<String>,
    /// Where a browser is sent after a rejected form post, with `?error=<reason>` appended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_url: Option<String>,
    /// A form field that humans leave empty (hidden with CSS); a post that fills it is taken
    /// for a bot's, answered like a success and not stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub honeypot: Option<String>,
}

impl FormSpec {
    fn is_empty(&self) -> bool {
        self == &FormSpec::default()
    }
}

/// A table's declared contract: the body of `PUT /v1/tables/{table}`.
///
/// An empty `columns` list means the schema is not declared: it was inferred from the first
/// records (auto-create), and ingest refuses a whole request that does not fit it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TableSpec {
    /// A description of the table.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// Declared columns, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<ColumnSpec>,
    /// Partition columns (declared or derived), in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub partition_by: Vec<String>,
    /// Columns whose values identify a row: rows whose key is already in the table (or earlier
    /// in the same request) are not appended.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unique_key: Vec<String>,
    /// Columns the rows of each data file are sorted by (in order, nulls last): each flush of
    /// ingest and each chunk of `tarn load` is written in this order, so that files, row
    /// groups and pages cover narrow ranges of these columns and filters on them skip most of
    /// the data. Typically the event time, or the columns queries look up by. Compaction
    /// merges files without sorting them again.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cluster_by: Vec<String>,
    /// Rules every row must satisfy; rows that break one go to `<table>_rejected`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
    /// Columns computed on ingest.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub derived: Vec<Derived>,
    /// Keep every request's original payload in `<table>_raw`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub raw_backup: bool,
    /// Flush thresholds of this table.
    #[serde(skip_serializing_if = "FlushSpec::is_empty")]
    pub flush: FlushSpec,
    /// Browser forms.
    #[serde(skip_serializing_if = "FormSpec::is_empty")]
    pub forms: FormSpec,
}

/// The fields a [`TableSpec`] document may hold.
const SPEC_FIELDS: &[&str] = &[
    "comment",
    "columns",
    "partition_by",
    "unique_key",
    "cluster_by",
    "rules",
    "derived",
    "raw_backup",
    "flush",
    "forms",
];

impl TableSpec {
    /// Reads a spec from a JSON document, refusing unknown fields (a misspelt `unique_key`
    /// must not be silently ignored). `extra` names fields the caller handles itself (`name`
    /// in `tarn.toml`).
    pub fn from_json(value: serde_json::Value, extra: &[&str]) -> Result<TableSpec> {
        let invalid = |reason: String| Error::InvalidDefinition { reason };
        let serde_json::Value::Object(mut map) = value else {
            return Err(invalid("a table definition is a JSON object".into()));
        };
        if let Some(unknown) =
            map.keys().find(|k| !SPEC_FIELDS.contains(&k.as_str()) && !extra.contains(&k.as_str()))
        {
            return Err(invalid(format!(
                "unknown field '{unknown}'; a definition has {}",
                SPEC_FIELDS.join(", ")
            )));
        }
        map.retain(|k, _| SPEC_FIELDS.contains(&k.as_str()));
        serde_json::from_value(serde_json::Value::Object(map)).map_err(|e| invalid(e.to_string()))
    }

    /// True when columns are declared (the table has a contract).
    pub fn is_declared(&self) -> bool {
        !self.columns.is_empty()
    }

    /// Checks everything that can be checked without compiling expressions: names, duplicates,
    /// references of `partition_by` and `unique_key`, thresholds, form URLs.
    pub fn validate(&self) -> Result<()> {
        let invalid = |reason: String| Err(Error::InvalidDefinition { reason });
        let mut names: Vec<&str> = Vec::new();
        for name in self.columns.iter().map(|c| &c.name).chain(self.derived.iter().map(|d| &d.name))
        {
            if let Err(reason) = check_column_name(name) {
                return invalid(format!("column '{name}' {reason}"));
            }
            if names.iter().any(|n| n.eq_ignore_ascii_case(name)) {
                return invalid(format!("column '{name}' is declared twice"));
            }
            names.push(name);
        }
        if !self.is_declared() && (!self.derived.is_empty() || !self.rules.is_empty()) {
            return invalid("rules and derived columns need declared columns".into());
        }
        for (what, list) in [
            ("partition_by", &self.partition_by),
            ("unique_key", &self.unique_key),
            ("cluster_by", &self.cluster_by),
        ] {
            for (i, column) in list.iter().enumerate() {
                if self.is_declared() && !names.contains(&column.as_str()) {
                    return invalid(format!("{what} names '{column}', which is not a column"));
                }
                if list[..i].contains(column) {
                    return invalid(format!("{what} names '{column}' twice"));
                }
            }
        }
        if let Some(column) = self.cluster_by.iter().find(|c| self.partition_by.contains(c)) {
            return invalid(format!(
                "cluster_by names the partition column '{column}': a file holds one value of it"
            ));
        }
        let mut rule_names: Vec<&str> = Vec::new();
        for rule in &self.rules {
            if rule.name.trim().is_empty() || rule.check.trim().is_empty() {
                return invalid("every rule needs a name and a check".into());
            }
            if rule_names.contains(&rule.name.as_str()) {
                return invalid(format!("rule '{}' is declared twice", rule.name));
            }
            rule_names.push(&rule.name);
        }
        let flush = &self.flush;
        if flush.max_age_ms == Some(0) || flush.max_rows == Some(0) || flush.max_bytes == Some(0) {
            return invalid("flush thresholds must be greater than 0".into());
        }
        for origin in &self.forms.allowed_origins {
            if origin != &origin_of(origin).unwrap_or_default() {
                return invalid(format!(
                    "forms.allowed_origins: '{origin}' is not an origin like https://www.example.com \
                     (scheme and host, optional port, no path)"
                ));
            }
        }
        for (what, url) in
            [("success_url", &self.forms.success_url), ("error_url", &self.forms.error_url)]
        {
            if let Some(url) = url {
                if origin_of(url).is_none() {
                    return invalid(format!("forms.{what}: '{url}' is not an http(s) URL"));
                }
            }
        }
        Ok(())
    }
}

/// The origin (`scheme://host[:port]`) of an http(s) URL.
pub fn origin_of(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return None;
    }
    Some(parsed.origin().ascii_serialization())
}

/// Column names: a letter or `_`, then letters, digits or `_`, at most 128 characters — valid
/// SQL identifiers (quote mixed-case ones in rules) and Parquet names every engine reads.
fn check_column_name(name: &str) -> std::result::Result<(), String> {
    let mut chars = name.chars();
    match chars.next() {
        None => return Err("has an empty name".into()),
        Some(c) if !(c.is_ascii_alphabetic() || c == '_') => {
            return Err("must start with a letter or '_'".into())
        }
        _ => {}
    }
    if chars.any(|c| !(c.is_ascii_alphanumeric() || c == '_')) {
        return Err("may only contain letters, digits and '_'".into());
    }
    if name.len() > 128 {
        return Err("is longer than 128 characters".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn types_parse_and_print() {
        for name in ["string", "boolean", "int32", "int64", "float64", "date", "timestamp", "json"]
        {
            assert_eq!(name.parse::<ColumnType>().unwrap().to_string(), name);
        }
        let d: ColumnType = "Decimal(10, 2)".parse().unwrap();
        assert_eq!(d, ColumnType::Decimal { precision: 10, scale: 2 });
        assert_eq!(d.to_string(), "decimal(10,2)");
        assert_eq!(d.arrow(), DataType::Decimal128(10, 2));
        assert!("decimal(40,2)".parse::<ColumnType>().is_err());
        let err = "uuid".parse::<ColumnType>().unwrap_err();
        assert!(err.contains("unknown type 'uuid'"), "{err}");
        assert_eq!(
            ColumnType::from_arrow(&ColumnType::Timestamp.arrow()),
            Some(ColumnType::Timestamp)
        );
    }

    #[test]
    fn specs_refuse_unknown_fields_and_bad_references() {
        let err =
            TableSpec::from_json(json!({"columns": [], "uniqe_key": ["a"]}), &[]).unwrap_err();
        assert!(err.to_string().contains("unknown field 'uniqe_key'"), "{err}");
        let err = TableSpec::from_json(
            json!({"columns": [{"name": "a", "type": "string", "nul": true}]}),
            &[],
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown field `nul`"), "{err}");
        let spec = TableSpec::from_json(
            json!({"columns": [{"name": "a", "type": "string"}], "unique_key": ["b"]}),
            &[],
        )
        .unwrap();
        let err = spec.validate().unwrap_err().to_string();
        assert!(err.contains("unique_key names 'b'"), "{err}");
        let spec = TableSpec::from_json(
            json!({"columns": [{"name": "a", "type": "string"}, {"name": "A", "type": "int64"}]}),
            &[],
        )
        .unwrap();
        assert!(spec.validate().unwrap_err().to_string().contains("declared twice"));
        let spec = TableSpec::from_json(
            json!({"columns": [{"name": "a", "type": "string"}], "forms": {"allowed_origins": ["https://x.com/path"]}}),
            &[],
        )
        .unwrap();
        assert!(spec.validate().unwrap_err().to_string().contains("not an origin"));
    }

    #[test]
    fn round_trip_keeps_only_what_was_said() {
        let spec = TableSpec::from_json(
            json!({"columns": [{"name": "email", "type": "string", "nullable": false}], "raw_backup": true}),
            &[],
        )
        .unwrap();
        spec.validate().unwrap();
        assert_eq!(
            serde_json::to_value(&spec).unwrap(),
            json!({"columns": [{"name": "email", "type": "string", "nullable": false}], "raw_backup": true})
        );
    }
}
