//! What a table is: definition, columns and statistics.

use futures::TryStreamExt;
use object_store::path::Path;
use serde::Serialize;
use tarn_lake::TableStats;

use super::store::external_url;
use super::Catalog;
use crate::contract::COMMENT_KEY;
use crate::{
    type_name, ColumnInfo, Error, ExternalFormat, ExternalSource, Result, TableDefinition,
    TableName,
};

/// A table as the catalog API shows it: definition, columns and statistics.
#[derive(Debug, Clone, Serialize)]
pub struct TableInfo {
    /// The catalog entry.
    #[serde(flatten)]
    pub definition: TableDefinition,
    /// The table's full URL (`file:///...`, `s3://...`).
    pub url: String,
    /// Columns from the Delta schema.
    pub columns: Vec<ColumnInfo>,
    /// Statistics from the Delta log.
    pub stats: TableStats,
}

impl Catalog {
    /// Definition, columns and statistics of `name`.
    ///
    /// For an external table of files, the columns are those the crawler stored and the
    /// statistics come from listing its files now (count, bytes, newest modification; rows
    /// are unknown).
    pub async fn describe(&self, name: &TableName) -> Result<TableInfo> {
        let definition = self.definition(name).await?;
        if let Some(external) =
            definition.external.as_ref().filter(|e| e.format != ExternalFormat::Delta)
        {
            return self.describe_files(definition.as_ref().clone(), external).await;
        }
        let (definition, table) = self.open(name).await?;
        let schema = table.schema()?;
        let spec = &definition.spec;
        let columns = schema
            .fields()
            .iter()
            .map(|f| {
                let declared = spec.columns.iter().find(|c| c.name == *f.name());
                let derived = spec.derived.iter().find(|d| d.name == *f.name());
                let origin = match (declared, derived) {
                    (Some(_), _) => "declared",
                    (None, Some(_)) => "derived",
                    (None, None) if spec.is_declared() => "added",
                    (None, None) => "inferred",
                };
                ColumnInfo {
                    name: f.name().clone(),
                    data_type: match declared {
                        Some(column) => column.data_type.to_string(),
                        None => type_name(f.data_type()),
                    },
                    nullable: f.is_nullable(),
                    comment: declared
                        .and_then(|c| c.comment.clone())
                        .or_else(|| derived.and_then(|d| d.comment.clone()))
                        .or_else(|| f.metadata().get(COMMENT_KEY).cloned()),
                    origin: origin.to_string(),
                }
            })
            .collect();
        let url = match &definition.external {
            Some(external) => external.url.clone(),
            None => self.lake.table_url(&definition.location)?.to_string(),
        };
        Ok(TableInfo { url, definition, columns, stats: table.stats() })
    }

    async fn describe_files(
        &self,
        definition: TableDefinition,
        external: &ExternalSource,
    ) -> Result<TableInfo> {
        let url = external_url(external)?;
        let store = self.lake.store_for_url(&url)?;
        let prefix = Path::from_url_path(url.path()).map_err(|e| Error::InvalidDefinition {
            reason: format!("the external URL {url} is not a valid path: {e}"),
        })?;
        let extension = external.file_extension.clone().unwrap_or_default();
        let (mut files, mut bytes, mut newest) = (0usize, 0u64, None);
        let mut listing = store.list(Some(&prefix));
        while let Some(meta) = listing.try_next().await? {
            let relative = meta.location.as_ref().strip_prefix(prefix.as_ref()).unwrap_or("");
            if !crate::definition::is_data_file(relative, &extension) {
                continue;
            }
            files += 1;
            bytes += meta.size;
            newest = newest.max(Some(meta.last_modified));
        }
        let origin = |_| "crawled".to_string();
        let columns = external
            .columns
            .iter()
            .map(|c| (c, false))
            .chain(external.partition_columns.iter().map(|c| (c, true)))
            .map(|(c, partition)| ColumnInfo {
                name: c.name.clone(),
                data_type: c.type_name.clone(),
                nullable: c.nullable,
                comment: partition.then(|| "partition column (key=value/ directories)".into()),
                origin: origin(()),
            })
            .collect();
        Ok(TableInfo {
            url: external.url.clone(),
            definition,
            columns,
            stats: TableStats { version: 0, files, bytes, rows: None, last_commit: newest },
        })
    }
}
