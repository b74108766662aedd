//! The catalog of one lake: table definitions stored in the lake, cached, created, changed and
//! described.
//!
//! **Getting a definition.** [`Catalog::definition`] is the one way: it answers from a cache
//! that this catalog's own changes update at once and that is read again from the lake at most
//! every [`DEFINITION_TTL`] (so changes made by other servers sharing the lake show within
//! that time). The list of table names ([`Catalog::names`], which every query plans with) is
//! cached the same way: this catalog's own creates and drops renew it, others' show within
//! [`DEFINITION_TTL`] (a query naming a table still finds it at once: it reads the table's
//! definition, not the list). [`Catalog::open`] gives the definition with the Delta table at its latest
//! version; [`Catalog::table_as_known`] the Delta table as this process last saw it (no
//! storage access), for hot paths that need the schema, not the latest version.
//!
//! The files: [`store`](self) keeps the documents (paths, reading, conditional writes),
//! `cache` the definitions and table handles in memory, `define` creates, changes and drops
//! tables, `describe` answers what a table is.

mod cache;
mod define;
mod describe;
mod store;

use std::sync::{Arc, Mutex};

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use tarn_lake::{Lake, LakeTable};

pub use cache::DEFINITION_TTL;
pub use define::{DefineStatus, Defined};
pub use describe::TableInfo;
pub(crate) use store::external_url;

use crate::{Result, TableDefinition, TableName};
use cache::DefinitionCache;
use store::{read_document, TABLES_PREFIX};

/// The catalog of one lake.
pub struct Catalog {
    lake: Arc<Lake>,
    /// Loaded tables by name; bounded (see `cache`).
    tables: Mutex<std::collections::HashMap<TableName, LakeTable>>,
    /// Definitions by name; bounded (see `cache`).
    definitions: Mutex<DefinitionCache>,
    /// The table names as last listed, and the count of this catalog's changes.
    names: Mutex<NamesCache>,
    /// Counts the tables this catalog dropped: a handle opened while one was dropped may be
    /// of the dropped table, and is not cached (see [`Catalog::open`]).
    drops: std::sync::atomic::AtomicU64,
}

/// The cached list of table names.
#[derive(Default)]
struct NamesCache {
    /// When they were listed, and the names; `None` after a change of this catalog's.
    listed: Option<(std::time::Instant, Arc<Vec<TableName>>)>,
    /// Changes of this catalog's so far: a listing that saw another count than the current one
    /// may miss a change and is not kept.
    changes: u64,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog").field("lake", &self.lake).finish_non_exhaustive()
    }
}

impl Catalog {
    /// The catalog of `lake`.
    pub fn new(lake: Arc<Lake>) -> Self {
        Catalog {
            lake,
            tables: Mutex::new(Default::default()),
            definitions: Mutex::new(Default::default()),
            names: Mutex::new(NamesCache::default()),
            drops: Default::default(),
        }
    }

    /// The lake this catalog describes.
    pub fn lake(&self) -> &Arc<Lake> {
        &self.lake
    }

    /// All tables, sorted by name.
    pub async fn list(&self) -> Result<Vec<TableDefinition>> {
        let store = self.lake.store().clone();
        let latest = self.latest(&Path::from(TABLES_PREFIX)).await?;
        let definitions: Vec<TableDefinition> = futures::stream::iter(latest.into_values())
            .map(|(_, meta)| {
                let path = meta.location;
                let store = store.clone();
                async move { read_document(store.as_ref(), &path).await }
            })
            .buffered(16)
            .try_filter_map(|doc| futures::future::ready(Ok(doc)))
            .try_collect()
            .await?;
        Ok(definitions)
    }

    /// The names of all tables, from the catalog's listing alone (no document is opened),
    /// listed at most every [`DEFINITION_TTL`]: this catalog's own creates and drops show at
    /// once, other servers' within that time.
    pub async fn names(&self) -> Result<Vec<TableName>> {
        let changes = {
            let cache = self.names.lock().expect("names lock");
            if let Some((listed_at, names)) = &cache.listed {
                if listed_at.elapsed() < DEFINITION_TTL {
                    return Ok(names.as_ref().clone());
                }
            }
            cache.changes
        };
        let asked = std::time::Instant::now();
        let latest = self.latest(&Path::from(TABLES_PREFIX)).await?;
        self.renew_definitions(&latest, asked);
        let names: Vec<TableName> = latest.into_keys().collect();
        let mut cache = self.names.lock().expect("names lock");
        if cache.changes == changes {
            cache.listed = Some((asked, Arc::new(names.clone())));
        }
        Ok(names)
    }

    /// Forgets the listed names: a table of this catalog's may have been created or dropped.
    pub(crate) fn names_changed(&self) {
        let mut cache = self.names.lock().expect("names lock");
        cache.listed = None;
        cache.changes += 1;
    }
}
