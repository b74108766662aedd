//! The catalog: table definitions in the lake, table handles, statistics.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arrow::datatypes::Schema;
use bytes::Bytes;
use chrono::Utc;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::Serialize;
use tarn_lake::{Lake, LakeTable, TableStats};

use crate::{type_name, ColumnInfo, Error, Result, TableDefinition, TableName};

/// Where catalog documents live, relative to the lake root.
const TABLES_PREFIX: &str = "_tarn/catalog/tables";

/// How many open table handles are kept. Each holds the table's current Delta snapshot, so
/// reopening a busy table only reads the commits since the last request.
const MAX_CACHED_TABLES: usize = 256;

/// The catalog of one lake.
pub struct Catalog {
    lake: Arc<Lake>,
    /// Loaded tables by name; bounded by [`MAX_CACHED_TABLES`].
    tables: Mutex<HashMap<TableName, LakeTable>>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog").field("lake", &self.lake).finish_non_exhaustive()
    }
}

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
    /// The catalog of `lake`.
    pub fn new(lake: Arc<Lake>) -> Self {
        Catalog { lake, tables: Mutex::new(HashMap::new()) }
    }

    /// The lake this catalog describes.
    pub fn lake(&self) -> &Arc<Lake> {
        &self.lake
    }

    fn document_path(name: &TableName) -> Path {
        Path::from(format!("{TABLES_PREFIX}/{}/{}.json", name.namespace(), name.name()))
    }

    /// All tables, sorted by name.
    pub async fn list(&self) -> Result<Vec<TableDefinition>> {
        let store = self.lake.store().clone();
        let prefix = Path::from(TABLES_PREFIX);
        let mut definitions: Vec<TableDefinition> = store
            .list(Some(&prefix))
            .try_filter(|meta| futures::future::ready(meta.location.as_ref().ends_with(".json")))
            .map(|meta| {
                let store = store.clone();
                async move {
                    let meta = meta?;
                    read_document(store.as_ref(), &meta.location).await
                }
            })
            .buffer_unordered(16)
            .try_filter_map(|doc| futures::future::ready(Ok(doc)))
            .try_collect()
            .await?;
        definitions.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        Ok(definitions)
    }

    /// The names of all tables, read from the catalog's listing alone (no document is opened).
    pub async fn names(&self) -> Result<Vec<TableName>> {
        let prefix = Path::from(TABLES_PREFIX);
        let mut names: Vec<TableName> = self
            .lake
            .store()
            .list(Some(&prefix))
            .try_filter_map(|meta| {
                let name = meta
                    .location
                    .as_ref()
                    .strip_prefix(TABLES_PREFIX)
                    .and_then(|rest| rest.trim_start_matches('/').strip_suffix(".json"))
                    .and_then(|rest| rest.split_once('/'))
                    .and_then(|(namespace, table)| TableName::new(namespace, table).ok());
                futures::future::ready(Ok(name))
            })
            .try_collect()
            .await?;
        names.sort();
        Ok(names)
    }

    /// The definition of `name`.
    pub async fn get(&self, name: &TableName) -> Result<TableDefinition> {
        let path = Self::document_path(name);
        let definition = read_document(self.lake.store().as_ref(), &path)
            .await?
            .ok_or_else(|| Error::TableNotFound { name: name.to_string() })?;
        definition.parse_name()?;
        Ok(definition)
    }

    /// Creates the Delta table and its catalog entry.
    ///
    /// The Delta table is created first (idempotently), then the entry with a conditional put:
    /// if another process registered the same name meanwhile, this returns
    /// [`Error::TableExists`] and the other entry stays as it was.
    pub async fn create(
        &self,
        name: &TableName,
        schema: &Schema,
        partition_by: &[String],
        created_by: &str,
    ) -> Result<(TableDefinition, LakeTable)> {
        let path = Self::document_path(name);
        if self.lake.store().head(&path).await.is_ok() {
            return Err(Error::TableExists { name: name.to_string() });
        }
        let table = self.lake.create_table(&name.path(), schema, partition_by).await?;
        let definition = TableDefinition {
            namespace: name.namespace().to_string(),
            name: name.name().to_string(),
            location: name.path(),
            partition_by: table.partition_columns()?,
            comment: None,
            created_at: Utc::now(),
            created_by: created_by.to_string(),
        };
        let body = serde_json::to_vec_pretty(&definition).expect("definitions serialize");
        let put = PutOptions { mode: PutMode::Create, ..Default::default() };
        match self.lake.store().put_opts(&path, PutPayload::from(Bytes::from(body)), put).await {
            Ok(_) => {}
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => {
                return Err(Error::TableExists { name: name.to_string() })
            }
            Err(e) => return Err(e.into()),
        }
        tracing::info!(table = %name, url = %self.lake.table_url(&name.path())?, "created table");
        self.remember(name, &table);
        Ok((definition, table))
    }

    /// The definition of `name` and its Delta table at the latest version.
    ///
    /// Handles are cached; a cached handle is brought up to date by reading only the commits
    /// made since (by this or any other process).
    pub async fn open(&self, name: &TableName) -> Result<(TableDefinition, LakeTable)> {
        let definition = self.get(name).await?;
        let cached = self.tables.lock().expect("table cache lock").get(name).cloned();
        let table = match cached {
            Some(mut table) => {
                table.refresh().await?;
                table
            }
            None => match self.lake.open_table(&definition.location).await {
                Ok(table) => table,
                Err(tarn_lake::Error::TableNotFound { .. }) => {
                    return Err(Error::TableNotFound { name: name.to_string() })
                }
                Err(e) => return Err(e.into()),
            },
        };
        self.remember(name, &table);
        Ok((definition, table))
    }

    /// The cached handle of `name` as it is (no storage access), or, when none is cached,
    /// [`Catalog::open`]. For hot paths that need the schema, not the latest version.
    pub async fn open_cached(&self, name: &TableName) -> Result<LakeTable> {
        if let Some(table) = self.tables.lock().expect("table cache lock").get(name) {
            return Ok(table.clone());
        }
        Ok(self.open(name).await?.1)
    }

    /// Keeps `table` as the newest known handle for `name` (after an append, for instance).
    pub fn remember(&self, name: &TableName, table: &LakeTable) {
        let mut tables = self.tables.lock().expect("table cache lock");
        if let Some(known) = tables.get(name) {
            if known.version() > table.version() {
                return;
            }
        } else if tables.len() >= MAX_CACHED_TABLES {
            // Evict the handle of the table with the oldest version: a cheap stand-in for
            // "least recently written" that needs no extra bookkeeping.
            if let Some(victim) =
                tables.iter().min_by_key(|(_, t)| t.version()).map(|(n, _)| n.clone())
            {
                tables.remove(&victim);
            }
        }
        tables.insert(name.clone(), table.clone());
    }

    /// Definition, columns and statistics of `name`.
    pub async fn describe(&self, name: &TableName) -> Result<TableInfo> {
        let (definition, table) = self.open(name).await?;
        let schema = table.schema()?;
        let columns = schema
            .fields()
            .iter()
            .map(|f| ColumnInfo {
                name: f.name().clone(),
                data_type: type_name(f.data_type()),
                nullable: f.is_nullable(),
            })
            .collect();
        Ok(TableInfo {
            url: self.lake.table_url(&definition.location)?.to_string(),
            definition,
            columns,
            stats: table.stats(),
        })
    }

    /// Removes `name` from the catalog. With `purge`, its data is deleted as well; without,
    /// the Delta table stays in the lake and can be registered again.
    pub async fn delete(&self, name: &TableName, purge: bool) -> Result<()> {
        let definition = self.get(name).await?;
        self.lake.store().delete(&Self::document_path(name)).await?;
        self.tables.lock().expect("table cache lock").remove(name);
        if purge {
            let removed = self.lake.delete_prefix(&definition.location).await?;
            tracing::info!(table = %name, files = removed, "dropped table and purged its data");
        } else {
            tracing::info!(table = %name, "dropped table from the catalog; data kept");
        }
        Ok(())
    }
}

async fn read_document(store: &dyn ObjectStore, path: &Path) -> Result<Option<TableDefinition>> {
    let bytes = match store.get(path).await {
        Ok(result) => result.bytes().await?,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| Error::Document { path: path.to_string(), source })
}
