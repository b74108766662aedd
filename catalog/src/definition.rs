//! What the catalog stores about a table.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{Result, TableName};

/// A catalog entry, stored as JSON at `_tarn/catalog/tables/<namespace>/<table>.json`.
///
/// The Delta log stays the source of truth for schema and data; the definition records what
/// Tarn needs beyond it. Later versions add columns' comments, rules and derived columns here;
/// unknown fields are kept out by `deny_unknown_fields` only at the API, not in stored documents,
/// so an older Tarn can still read a newer document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableDefinition {
    /// The namespace (`default` unless given).
    pub namespace: String,
    /// The table name within the namespace.
    pub name: String,
    /// Where the Delta table lives, relative to the lake root (`namespace/table`).
    pub location: String,
    /// Partition columns, in order.
    #[serde(default)]
    pub partition_by: Vec<String>,
    /// A free-text description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// When the entry was created.
    pub created_at: DateTime<Utc>,
    /// How it was created: `auto` (first ingest with an inferred schema) or `api`.
    pub created_by: String,
}

impl TableDefinition {
    /// The table's qualified name.
    pub fn name(&self) -> TableName {
        TableName::new(&self.namespace, &self.name).expect("stored names were validated")
    }

    pub(crate) fn parse_name(&self) -> Result<TableName> {
        TableName::new(&self.namespace, &self.name)
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
}
