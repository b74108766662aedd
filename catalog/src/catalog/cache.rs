//! Definitions and Delta table handles kept in memory, bounded.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tarn_lake::LakeTable;

use super::store::external_url;
use super::Catalog;
use crate::{Error, ExternalFormat, Result, TableDefinition, TableName};

/// How many open table handles are kept. Each holds the table's current Delta snapshot, so
/// reopening a busy table only reads the commits since the last request.
const MAX_CACHED_TABLES: usize = 256;

/// How long a definition read from the lake is used before it is read again.
pub const DEFINITION_TTL: Duration = Duration::from_secs(2);

/// How many definitions are cached.
const MAX_CACHED_DEFINITIONS: usize = 4096;

/// Cached definitions: when read, and what (`None`: the table did not exist).
pub(super) type DefinitionCache = HashMap<TableName, (Instant, Option<Arc<TableDefinition>>)>;

impl Catalog {
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
        let asked = Instant::now();
        let read = match self.read_definition(name).await {
            Ok(definition) => Some(Arc::new(definition)),
            Err(Error::TableNotFound { .. }) => None,
            Err(e) => return Err(e),
        };
        // A change made through this catalog while the read was under way is newer than what
        // the read found: it stays (and answers).
        let read = {
            let mut definitions = self.definitions.lock().expect("definitions lock");
            match definitions.get(name).filter(|(at, _)| *at > asked) {
                Some((_, newer)) => newer.clone(),
                None => {
                    insert_definition(&mut definitions, name, read.clone());
                    read
                }
            }
        };
        read.ok_or_else(|| Error::TableNotFound { name: name.to_string() })
    }

    pub(crate) fn cache_definition(
        &self,
        name: &TableName,
        definition: Option<Arc<TableDefinition>>,
    ) {
        // A table may have come or gone: the names are listed again.
        self.names_changed();
        let mut definitions = self.definitions.lock().expect("definitions lock");
        insert_definition(&mut definitions, name, definition);
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
}

/// Caches `definition` for `name`, the oldest entry making room when the cache is full.
fn insert_definition(
    definitions: &mut DefinitionCache,
    name: &TableName,
    definition: Option<Arc<TableDefinition>>,
) {
    if definitions.len() >= MAX_CACHED_DEFINITIONS && !definitions.contains_key(name) {
        if let Some(oldest) =
            definitions.iter().min_by_key(|(_, (at, _))| *at).map(|(n, _)| n.clone())
        {
            definitions.remove(&oldest);
        }
    }
    definitions.insert(name.clone(), (Instant::now(), definition));
}
