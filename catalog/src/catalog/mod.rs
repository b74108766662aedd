//! The catalog of one lake: table definitions stored in the lake, cached, created, changed and
//! described.
//!
//! **Getting a definition.** [`Catalog::definition`] is the one way: it answers from a cache
//! that this catalog's own changes update at once and that is read again from the lake at most
//! every [`DEFINITION_TTL`] (so changes made by other servers sharing the lake show within
//! that time). [`Catalog::open`] gives the definition with the Delta table at its latest
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
}
