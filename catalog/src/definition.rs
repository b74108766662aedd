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
    /// The declared contract (empty for tables created with an inferred schema).
    #[serde(flatten)]
    pub spec: TableSpec,
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
    /// The declared comment, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// `declared`, `derived`, or `inferred` (tables created from their first records).
    pub origin: String,
}
