//! Table plans kept on local disk, beside the write-ahead log.
//!
//! A server that restarts while storage is unreachable cannot read the catalog, but its
//! clients keep sending records. For each table it wrote to, the definition (JSON) and the
//! Delta table's schema (an Arrow IPC stream without rows) are kept in
//! `<wal dir>/tables/<namespace>.<table>.{json,arrows}`, rewritten when the definition
//! changes, so ingest goes on into the write-ahead log, checked against the same contract,
//! until storage answers again. The files are a cache: losing them only means a restart
//! during an outage refuses those tables until storage is back.

use std::path::PathBuf;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use tarn_catalog::{TableDefinition, TableName};

/// The directory of kept plans.
pub(crate) struct Snapshots {
    dir: PathBuf,
}

impl Snapshots {
    pub fn new(dir: PathBuf) -> Self {
        Snapshots { dir }
    }

    fn paths(&self, name: &TableName) -> (PathBuf, PathBuf) {
        let stem = format!("{}.{}", name.namespace(), name.name());
        (self.dir.join(format!("{stem}.json")), self.dir.join(format!("{stem}.arrows")))
    }

    /// Keeps `definition` and `schema` for `name` (best effort: a failure is logged).
    pub fn save(&self, name: &TableName, definition: &TableDefinition, schema: &SchemaRef) {
        if let Err(e) = self.try_save(name, definition, schema) {
            tracing::warn!(table = %name, error = %e, "cannot keep the table's definition on local disk");
        }
    }

    fn try_save(
        &self,
        name: &TableName,
        definition: &TableDefinition,
        schema: &SchemaRef,
    ) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let (json, arrows) = self.paths(name);
        let mut ipc = Vec::new();
        arrow::ipc::writer::StreamWriter::try_new(&mut ipc, schema)
            .and_then(|mut w| w.finish())
            .map_err(std::io::Error::other)?;
        write_aside(&arrows, &ipc)?;
        write_aside(&json, &serde_json::to_vec(definition)?)
    }

    /// The definition and schema kept for `name`, if any (and readable).
    pub fn load(&self, name: &TableName) -> Option<(TableDefinition, SchemaRef)> {
        let (json, arrows) = self.paths(name);
        let definition = serde_json::from_slice(&std::fs::read(json).ok()?).ok()?;
        let bytes = std::fs::read(arrows).ok()?;
        let reader =
            arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None).ok()?;
        Some((definition, Arc::clone(&reader.schema())))
    }
}

/// Writes `bytes` to `path` through a file beside it, so a crash never leaves half a file.
fn write_aside(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let aside = path.with_extension("new");
    std::fs::write(&aside, bytes)?;
    std::fs::rename(&aside, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{DataType, Field, Schema};

    #[test]
    fn a_kept_plan_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let snapshots = Snapshots::new(dir.path().join("tables"));
        let name = TableName::parse("web.clicks").unwrap();
        assert!(snapshots.load(&name).is_none());
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("page", DataType::Utf8, true),
        ]));
        let definition: TableDefinition = serde_json::from_value(serde_json::json!({
            "namespace": "web", "name": "clicks", "location": "web/clicks",
            "created_at": "2026-11-30T10:00:00Z", "created_by": "auto"
        }))
        .unwrap();
        snapshots.save(&name, &definition, &schema);
        let (read, read_schema) = snapshots.load(&name).unwrap();
        assert_eq!(read, definition);
        assert_eq!(read_schema, schema);
    }
}
