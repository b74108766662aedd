//! Definitions and Delta table handles kept in memory, bounded.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::ObjectMeta;
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

/// A cached definition.
#[derive(Clone)]
pub(super) struct CachedDefinition {
    /// When it was read (or renewed, or written by this catalog).
    at: Instant,
    /// The definition; `None`: the table did not exist.
    definition: Option<Arc<TableDefinition>>,
    /// The entity tag of the document it was read from, when read from the lake.
    e_tag: Option<String>,
}

/// Cached definitions by table.
pub(super) type DefinitionCache = HashMap<TableName, CachedDefinition>;

impl Catalog {
    /// The definition of `name` and its Delta table at the latest version.
    ///
    /// Handles are cached; a cached handle is brought up to date by reading only the commits
    /// made since (by this or any other process).
    pub async fn open(&self, name: &TableName) -> Result<(TableDefinition, LakeTable)> {
        let drops = self.drops.load(std::sync::atomic::Ordering::SeqCst);
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
        // A table dropped (and maybe created again) meanwhile: this handle may be of the old
        // one, and must not replace the new one's in the cache.
        if self.drops.load(std::sync::atomic::Ordering::SeqCst) == drops {
            self.remember(name, &table);
        }
        Ok((definition, table))
    }

    /// The definition of `name`, read from the lake at most every 2 s: changes
    /// made through this catalog show at once, changes by other processes sharing the lake
    /// within that time.
    pub async fn definition(&self, name: &TableName) -> Result<Arc<TableDefinition>> {
        let cached = self.definitions.lock().expect("definitions lock").get(name).cloned();
        if let Some(cached) = cached {
            if cached.at.elapsed() < DEFINITION_TTL {
                return cached
                    .definition
                    .ok_or_else(|| Error::TableNotFound { name: name.to_string() });
            }
        }
        let asked = Instant::now();
        let (read, e_tag) = match self.read_tagged_definition(name).await {
            Ok((definition, e_tag)) => (Some(Arc::new(definition)), e_tag),
            Err(Error::TableNotFound { .. }) => (None, None),
            Err(e) => return Err(e),
        };
        // A change made through this catalog while the read was under way is newer than what
        // the read found: it stays (and answers).
        let read = {
            let mut definitions = self.definitions.lock().expect("definitions lock");
            match definitions.get(name).filter(|cached| cached.at > asked) {
                Some(newer) => newer.definition.clone(),
                None => {
                    insert_definition(&mut definitions, name, read.clone(), e_tag);
                    read
                }
            }
        };
        read.ok_or_else(|| Error::TableNotFound { name: name.to_string() })
    }

    /// Cached definitions that a listing of the catalog (made at `listed_at`) shows to be
    /// current are as fresh as that listing: they are not read again before
    /// [`DEFINITION_TTL`] after it. So a query, which lists the names first, reads no
    /// definition document unless one changed.
    ///
    /// Current means: the latest document listed is the one the cached copy was read from (the
    /// same entity tag). A changed definition is a new document (a new revision), and a table
    /// dropped and created again has a new document under an old name: either is read anew.
    pub(super) fn renew_definitions(
        &self,
        latest: &BTreeMap<TableName, (u64, ObjectMeta)>,
        listed_at: Instant,
    ) {
        let mut definitions = self.definitions.lock().expect("definitions lock");
        for (name, (_, meta)) in latest {
            if let Some(cached) = definitions.get_mut(name) {
                if cached.at < listed_at
                    && cached.definition.is_some()
                    && cached.e_tag.is_some()
                    && cached.e_tag == meta.e_tag
                {
                    cached.at = listed_at;
                }
            }
        }
    }

    /// Caches a definition this catalog has just written (with the entity tag of its
    /// document, when known) or, with `None`, dropped.
    pub(crate) fn cache_definition(
        &self,
        name: &TableName,
        definition: Option<Arc<TableDefinition>>,
        e_tag: Option<String>,
    ) {
        // A table may have come or gone: the names are listed again.
        self.names_changed();
        let mut definitions = self.definitions.lock().expect("definitions lock");
        insert_definition(&mut definitions, name, definition, e_tag);
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
    e_tag: Option<String>,
) {
    if definitions.len() >= MAX_CACHED_DEFINITIONS && !definitions.contains_key(name) {
        if let Some(oldest) =
            definitions.iter().min_by_key(|(_, cached)| cached.at).map(|(n, _)| n.clone())
        {
            definitions.remove(&oldest);
        }
    }
    definitions.insert(name.clone(), CachedDefinition { at: Instant::now(), definition, e_tag });
}
