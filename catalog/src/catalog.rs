//! The catalog: table definitions in the lake, table handles, statistics.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::datatypes::{Field, Schema};
use bytes::Bytes;
use chrono::Utc;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::Serialize;
use tarn_lake::{Lake, LakeTable, TableStats};

use crate::contract::COMMENT_KEY;
use crate::{
    companion, type_name, ColumnInfo, Contract, Error, ExternalFormat, ExternalSource, Result,
    TableDefinition, TableName, TableSpec,
};

/// Where catalog documents live, relative to the lake root.
const TABLES_PREFIX: &str = "_tarn/catalog/tables";

/// How many open table handles are kept. Each holds the table's current Delta snapshot, so
/// reopening a busy table only reads the commits since the last request.
const MAX_CACHED_TABLES: usize = 256;

/// How long a definition read from the lake is used before it is read again.
pub const DEFINITION_TTL: Duration = Duration::from_secs(2);

/// How many definitions are cached.
const MAX_CACHED_DEFINITIONS: usize = 4096;

/// Cached definitions: when read, and what (`None`: the table did not exist).
type DefinitionCache = HashMap<TableName, (Instant, Option<Arc<TableDefinition>>)>;

/// The catalog of one lake.
pub struct Catalog {
    lake: Arc<Lake>,
    /// Loaded tables by name; bounded by [`MAX_CACHED_TABLES`].
    tables: Mutex<HashMap<TableName, LakeTable>>,
    /// Definitions by name; bounded by [`MAX_CACHED_DEFINITIONS`].
    definitions: Mutex<DefinitionCache>,
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
        Catalog {
            lake,
            tables: Mutex::new(HashMap::new()),
            definitions: Mutex::new(HashMap::new()),
        }
    }

    /// The lake this catalog describes.
    pub fn lake(&self) -> &Arc<Lake> {
        &self.lake
    }

    /// Every catalog document's path, with the table and revision it holds.
    async fn documents(&self, prefix: &Path) -> Result<Vec<(TableName, u64, Path)>> {
        Ok(self
            .lake
            .store()
            .list(Some(prefix))
            .try_filter_map(|meta| {
                let parsed = parse_document_path(meta.location.as_ref())
                    .map(|(name, revision)| (name, revision, meta.location));
                futures::future::ready(Ok(parsed))
            })
            .try_collect()
            .await?)
    }

    /// The newest document of each table under `prefix`.
    async fn latest(&self, prefix: &Path) -> Result<BTreeMap<TableName, (u64, Path)>> {
        let mut latest: BTreeMap<TableName, (u64, Path)> = BTreeMap::new();
        for (name, revision, path) in self.documents(prefix).await? {
            match latest.get(&name) {
                Some((known, _)) if *known >= revision => {}
                _ => {
                    latest.insert(name, (revision, path));
                }
            }
        }
        Ok(latest)
    }

    /// All tables, sorted by name.
    pub async fn list(&self) -> Result<Vec<TableDefinition>> {
        let store = self.lake.store().clone();
        let latest = self.latest(&Path::from(TABLES_PREFIX)).await?;
        let definitions: Vec<TableDefinition> = futures::stream::iter(latest.into_values())
            .map(|(_, path)| {
                let store = store.clone();
                async move { read_document(store.as_ref(), &path).await }
            })
            .buffered(16)
            .try_filter_map(|doc| futures::future::ready(Ok(doc)))
            .try_collect()
            .await?;
        Ok(definitions)
    }

    /// The names of all tables, read from the catalog's listing alone (no document is opened).
    pub async fn names(&self) -> Result<Vec<TableName>> {
        Ok(self.latest(&Path::from(TABLES_PREFIX)).await?.into_keys().collect())
    }

    /// The definition of `name`.
    pub async fn get(&self, name: &TableName) -> Result<TableDefinition> {
        let mut newest = self.latest(&table_prefix(name)).await?.remove(name);
        if newest.is_none() {
            // Tarn 0.1 kept one document per table beside the revision folders.
            let legacy = legacy_path(name);
            if self.lake.store().head(&legacy).await.is_ok() {
                newest = Some((0, legacy));
            }
        }
        let (_, path) = newest.ok_or_else(|| Error::TableNotFound { name: name.to_string() })?;
        let definition = read_document(self.lake.store().as_ref(), &path)
            .await?
            .ok_or_else(|| Error::TableNotFound { name: name.to_string() })?;
        definition.parse_name()?;
        Ok(definition)
    }

    /// Stores `definition` as its revision; fails with [`Error::Conflict`] when that revision
    /// exists already (another process changed the table meanwhile).
    pub(crate) async fn put_document(&self, definition: &TableDefinition) -> Result<()> {
        let name = definition.name();
        let path = revision_path(&name, definition.revision);
        let body = serde_json::to_vec_pretty(definition).expect("definitions serialize");
        let put = PutOptions { mode: PutMode::Create, ..Default::default() };
        match self.lake.store().put_opts(&path, PutPayload::from(Bytes::from(body)), put).await {
            Ok(_) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => Err(if definition.revision == 0 {
                Error::TableExists { name: name.to_string() }
            } else {
                Error::Conflict {
                    name: name.to_string(),
                    reason: "its definition was changed by someone else meanwhile; read it \
                                 again and retry"
                        .into(),
                }
            }),
            Err(e) => Err(e.into()),
        }
    }

    fn new_definition(name: &TableName, created_by: &str, spec: TableSpec) -> TableDefinition {
        TableDefinition {
            namespace: name.namespace().to_string(),
            name: name.name().to_string(),
            location: name.path(),
            created_at: Utc::now(),
            created_by: created_by.to_string(),
            updated_at: None,
            revision: 0,
            owner: None,
            external: None,
            spec,
        }
    }

    /// Creates a table with a schema of its own (an inferred one, on first ingest): the Delta
    /// table first (idempotently), then the entry with a conditional put. If another process
    /// registered the same name meanwhile, this returns [`Error::TableExists`] and the other
    /// entry stays as it was.
    pub async fn create(
        &self,
        name: &TableName,
        schema: &Schema,
        partition_by: &[String],
        created_by: &str,
    ) -> Result<(TableDefinition, LakeTable)> {
        match self.get(name).await {
            Ok(_) => return Err(Error::TableExists { name: name.to_string() }),
            Err(Error::TableNotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        let table = self.lake.create_table(&name.path(), schema, partition_by).await?;
        let spec = TableSpec { partition_by: table.partition_columns()?, ..TableSpec::default() };
        let definition = Self::new_definition(name, created_by, spec);
        self.put_document(&definition).await?;
        self.cache_definition(name, Some(Arc::new(definition.clone())));
        tracing::info!(table = %name, url = %self.lake.table_url(&name.path())?, "created table");
        self.remember(name, &table);
        Ok((definition, table))
    }

    /// Creates or changes a table from its declared contract (`PUT /v1/tables/{table}`,
    /// `tarn.toml`).
    ///
    /// A new table gets a Delta table with the contract's schema (or, if data was left in the
    /// lake under that name, that data's table, evolved), and `<table>_rejected` (and
    /// `<table>_raw` with `raw_backup`) beside it. A changed definition may add nullable
    /// columns, derived columns and rules, and change everything that is not the shape of
    /// existing data; dropping or retyping a column, tightening its nullability or changing
    /// the partitioning is refused with [`Error::Conflict`], which says why.
    pub async fn define(
        &self,
        name: &TableName,
        spec: TableSpec,
        created_by: &str,
    ) -> Result<Defined> {
        spec.validate()?;
        let existing = match self.get(name).await {
            Ok(definition) => Some(definition),
            Err(Error::TableNotFound { .. }) => None,
            Err(e) => return Err(e),
        };
        if let Some(owner) = existing.as_ref().and_then(|d| d.owner.as_ref()) {
            return Err(Error::Conflict {
                name: name.to_string(),
                reason: format!("it is kept by Tarn for '{owner}' and cannot be redefined"),
            });
        }
        if let Some(external) = existing.as_ref().and_then(|d| d.external.as_ref()) {
            return Err(Error::Conflict {
                name: name.to_string(),
                reason: format!(
                    "it is an external {} table over {}; crawl it again to update it",
                    external.format, external.url
                ),
            });
        }
        let contract = if spec.is_declared() { Some(Contract::compile(&spec)?) } else { None };
        let (definition, table, status) = match existing {
            None => {
                let Some(contract) = contract else {
                    return Err(Error::InvalidDefinition {
                        reason: "declare the table's columns to create it".into(),
                    });
                };
                let table = if self.lake.table_exists(&name.path()).await? {
                    let table = self.lake.open_table(&name.path()).await?;
                    evolve(name, table, &contract, &spec).await?
                } else {
                    self.lake
                        .create_table(&name.path(), &contract.table_schema, &spec.partition_by)
                        .await?
                };
                self.ensure_companions(name, &spec).await?;
                let definition = Self::new_definition(name, created_by, spec);
                self.put_document(&definition).await?;
                tracing::info!(table = %name, "created table from its definition");
                (definition, table, DefineStatus::Created)
            }
            Some(current) if current.spec == spec => {
                let (_, table) = self.open(name).await?;
                (current, table, DefineStatus::Unchanged)
            }
            Some(current) => {
                let (_, table) = self.open(name).await?;
                let table = match &contract {
                    Some(contract) => evolve(name, table, contract, &spec).await?,
                    None => {
                        check_partitions(name, &table, &spec.partition_by)?;
                        if !current.spec.columns.is_empty() {
                            return Err(Error::Conflict {
                                name: name.to_string(),
                                reason: "its columns are declared; a definition without \
                                         columns would drop the contract"
                                    .into(),
                            });
                        }
                        table
                    }
                };
                self.ensure_companions(name, &spec).await?;
                let definition = TableDefinition {
                    revision: current.revision + 1,
                    updated_at: Some(Utc::now()),
                    spec,
                    ..current
                };
                self.put_document(&definition).await?;
                tracing::info!(table = %name, revision = definition.revision, "changed the table's definition");
                (definition, table, DefineStatus::Updated)
            }
        };
        self.remember(name, &table);
        self.cache_definition(name, Some(Arc::new(definition.clone())));
        Ok(Defined { definition, table, status })
    }

    /// Creates the tables Tarn keeps beside a declared table, when missing.
    async fn ensure_companions(&self, name: &TableName, spec: &TableSpec) -> Result<()> {
        let mut wanted = Vec::new();
        if spec.is_declared() {
            wanted.push((companion::rejected_name(name)?, companion::rejected_schema()));
        }
        if spec.raw_backup {
            wanted.push((companion::raw_name(name)?, companion::raw_schema()));
        }
        for (companion, schema) in wanted {
            match self.get(&companion).await {
                Ok(definition) if definition.owner.as_deref() == Some(&name.to_string()) => {
                    continue
                }
                Ok(_) => {
                    return Err(Error::Conflict {
                        name: name.to_string(),
                        reason: format!(
                            "Tarn keeps its rejected rows (and raw payloads) in '{companion}', \
                             but a table of that name exists already"
                        ),
                    })
                }
                Err(Error::TableNotFound { .. }) => {}
                Err(e) => return Err(e),
            }
            let table = self.lake.create_table(&companion.path(), &schema, &[]).await?;
            let mut definition = Self::new_definition(&companion, "tarn", TableSpec::default());
            definition.owner = Some(name.to_string());
            match self.put_document(&definition).await {
                Ok(()) => self.cache_definition(&companion, Some(Arc::new(definition))),
                Err(Error::TableExists { .. }) => {}
                Err(e) => return Err(e),
            }
            self.remember(&companion, &table);
        }
        Ok(())
    }

    /// The definition of `name` and its Delta table at the latest version.
    ///
    /// Handles are cached; a cached handle is brought up to date by reading only the commits
    /// made since (by this or any other process).
    pub async fn open(&self, name: &TableName) -> Result<(TableDefinition, LakeTable)> {
        let definition = self.definition(name).await?.as_ref().clone();
        let cached = self.tables.lock().expect("table cache lock").get(name).cloned();
        let table = match cached {
            Some(mut table) => {
                table.refresh().await?;
                table
            }
            None => {
                let opened = match &definition.external {
                    None => self.lake.open_table(&definition.location).await,
                    Some(external) if external.format == ExternalFormat::Delta => {
                        self.lake.open_table_url(&external_url(external)?).await
                    }
                    Some(external) => {
                        return Err(Error::NotDelta {
                            name: name.to_string(),
                            format: external.format.to_string(),
                        })
                    }
                };
                match opened {
                    Ok(table) => table,
                    Err(tarn_lake::Error::TableNotFound { .. }) => {
                        return Err(Error::TableNotFound { name: name.to_string() })
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        };
        self.remember(name, &table);
        Ok((definition, table))
    }

    /// The definition of `name`, read from the lake at most every 2 s: changes
    /// made through this catalog show at once, changes by other processes sharing the lake
    /// within that time.
    pub async fn definition(&self, name: &TableName) -> Result<Arc<TableDefinition>> {
        let cached = self.definitions.lock().expect("definitions lock").get(name).cloned();
        if let Some((read_at, definition)) = cached {
            if read_at.elapsed() < DEFINITION_TTL {
                return definition.ok_or_else(|| Error::TableNotFound { name: name.to_string() });
            }
        }
        let read = match self.get(name).await {
            Ok(definition) => Some(Arc::new(definition)),
            Err(Error::TableNotFound { .. }) => None,
            Err(e) => return Err(e),
        };
        self.cache_definition(name, read.clone());
        read.ok_or_else(|| Error::TableNotFound { name: name.to_string() })
    }

    pub(crate) fn cache_definition(
        &self,
        name: &TableName,
        definition: Option<Arc<TableDefinition>>,
    ) {
        let mut definitions = self.definitions.lock().expect("definitions lock");
        if definitions.len() >= MAX_CACHED_DEFINITIONS && !definitions.contains_key(name) {
            if let Some(oldest) =
                definitions.iter().min_by_key(|(_, (at, _))| *at).map(|(n, _)| n.clone())
            {
                definitions.remove(&oldest);
            }
        }
        definitions.insert(name.clone(), (Instant::now(), definition));
    }

    /// The Delta table of `name` as this process last saw it (no storage access), or, when
    /// none is cached, [`Catalog::open`]. For hot paths that need the schema, not the latest
    /// version.
    pub async fn table_as_known(&self, name: &TableName) -> Result<LakeTable> {
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

    /// Forgets the open handle of `name` (its definition now points elsewhere).
    pub(crate) fn forget(&self, name: &TableName) {
        self.tables.lock().expect("table cache lock").remove(name);
    }

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
            if !crate::crawl::discover::is_data_file(relative, &extension) {
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

    /// Removes `name` from the catalog, with the tables Tarn keeps for it (`_rejected`,
    /// `_raw`). With `purge`, their data is deleted as well; without, the Delta tables stay in
    /// the lake and a later definition of the same name picks them up again.
    ///
    /// An external table (registered by the crawler) is only ever removed from the catalog:
    /// `purge` is refused with [`Error::Conflict`], since Tarn does not own that data.
    pub async fn delete(&self, name: &TableName, purge: bool) -> Result<()> {
        let definition = self.get(name).await?;
        if let (true, Some(external)) = (purge, &definition.external) {
            return Err(Error::Conflict {
                name: name.to_string(),
                reason: format!(
                    "it is an external {} table over {}, data Tarn does not own and never \
                     deletes; drop it without purge=true to remove it from the catalog",
                    external.format, external.url
                ),
            });
        }
        let mut doomed = vec![(name.clone(), definition.location)];
        for companion in
            [companion::rejected_name(name), companion::raw_name(name)].into_iter().flatten()
        {
            match self.get(&companion).await {
                Ok(d) if d.owner.as_deref() == Some(&name.to_string()) => {
                    doomed.push((companion, d.location))
                }
                _ => {}
            }
        }
        for (table, location) in doomed {
            let documents: Vec<Path> = self
                .documents(&table_prefix(&table))
                .await?
                .into_iter()
                .filter(|(n, _, _)| *n == table)
                .map(|(_, _, path)| path)
                .chain(std::iter::once(legacy_path(&table)))
                .collect();
            for path in documents {
                match self.lake.store().delete(&path).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            self.tables.lock().expect("table cache lock").remove(&table);
            self.cache_definition(&table, None);
            if purge {
                let removed = self.lake.delete_prefix(&location).await?;
                tracing::info!(table = %table, files = removed, "dropped table and purged its data");
            } else {
                tracing::info!(table = %table, "dropped table from the catalog; data kept");
            }
        }
        Ok(())
    }
}

/// What [`Catalog::define`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DefineStatus {
    /// The table is new.
    Created,
    /// The definition changed.
    Updated,
    /// The definition was the same already.
    Unchanged,
}

/// The outcome of [`Catalog::define`].
#[derive(Debug, Clone)]
pub struct Defined {
    /// The stored definition.
    pub definition: TableDefinition,
    /// The Delta table, at its new version.
    pub table: LakeTable,
    /// What happened.
    pub status: DefineStatus,
}

/// Checks a new contract against the Delta table's data and adds its new columns.
async fn evolve(
    name: &TableName,
    table: LakeTable,
    contract: &Contract,
    spec: &TableSpec,
) -> Result<LakeTable> {
    check_partitions(name, &table, &spec.partition_by)?;
    let conflict = |reason: String| Error::Conflict { name: name.to_string(), reason };
    let existing = table.schema()?;
    let wanted = &contract.table_schema;
    for field in existing.fields() {
        let Ok(new) = wanted.field_with_name(field.name()) else {
            return Err(conflict(format!(
                "column '{}' holds data and cannot be dropped; keep it in the definition",
                field.name()
            )));
        };
        if new.data_type() != field.data_type() {
            return Err(conflict(format!(
                "column '{}' is {} in the table; making it {} would break the existing data",
                field.name(),
                type_name(field.data_type()),
                type_name(new.data_type())
            )));
        }
        if new.is_nullable() != field.is_nullable() {
            return Err(conflict(format!(
                "column '{}' is {} in the table; changing that of an existing column is not \
                 supported",
                field.name(),
                if field.is_nullable() { "nullable" } else { "not nullable" }
            )));
        }
    }
    let added: Vec<Field> = wanted
        .fields()
        .iter()
        .filter(|f| existing.field_with_name(f.name()).is_err())
        .map(|f| f.as_ref().clone())
        .collect();
    if let Some(f) = added.iter().find(|f| !f.is_nullable()) {
        return Err(conflict(format!(
            "new column '{}' must be nullable: the rows already in the table have no value for it",
            f.name()
        )));
    }
    if added.is_empty() {
        return Ok(table);
    }
    tracing::info!(table = %name, columns = ?added.iter().map(|f| f.name()).collect::<Vec<_>>(), "adding columns");
    Ok(table.add_columns(&added).await?)
}

fn check_partitions(name: &TableName, table: &LakeTable, wanted: &[String]) -> Result<()> {
    let current = table.partition_columns()?;
    if current != wanted {
        return Err(Error::Conflict {
            name: name.to_string(),
            reason: format!(
                "it is partitioned by {current:?}; changing the partitioning to {wanted:?} needs a \
                 new table"
            ),
        });
    }
    Ok(())
}

/// The URL of an external table's data.
pub(crate) fn external_url(external: &ExternalSource) -> Result<url::Url> {
    url::Url::parse(&external.url).map_err(|e| Error::InvalidDefinition {
        reason: format!("the external URL '{}' is not valid: {e}", external.url),
    })
}

/// `_tarn/catalog/tables/<namespace>/<table>/`: the table's documents.
fn table_prefix(name: &TableName) -> Path {
    Path::from(format!("{TABLES_PREFIX}/{}/{}", name.namespace(), name.name()))
}

/// The document of one revision.
fn revision_path(name: &TableName, revision: u64) -> Path {
    Path::from(format!("{TABLES_PREFIX}/{}/{}/{revision:010}.json", name.namespace(), name.name()))
}

/// Where Tarn 0.1 kept a table's only document.
fn legacy_path(name: &TableName) -> Path {
    Path::from(format!("{TABLES_PREFIX}/{}/{}.json", name.namespace(), name.name()))
}

/// The table and revision a document path holds (legacy documents are revision 0).
fn parse_document_path(location: &str) -> Option<(TableName, u64)> {
    let rest = location.strip_prefix(TABLES_PREFIX)?.strip_prefix('/')?;
    let parts: Vec<&str> = rest.split('/').collect();
    match parts.as_slice() {
        [namespace, file] => {
            Some((TableName::new(namespace, file.strip_suffix(".json")?).ok()?, 0))
        }
        [namespace, table, file] => {
            let revision = file.strip_suffix(".json")?.parse().ok()?;
            Some((TableName::new(namespace, table).ok()?, revision))
        }
        _ => None,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_paths() {
        let name = TableName::parse("web.clicks").unwrap();
        let path = revision_path(&name, 3);
        assert_eq!(path.as_ref(), "_tarn/catalog/tables/web/clicks/0000000003.json");
        assert_eq!(parse_document_path(path.as_ref()), Some((name.clone(), 3)));
        assert_eq!(parse_document_path(legacy_path(&name).as_ref()), Some((name, 0)));
        assert_eq!(parse_document_path("_tarn/catalog/tables/web/clicks/notes.txt"), None);
    }
}
