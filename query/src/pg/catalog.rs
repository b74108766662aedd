//! The lake's tables for a long-lived Postgres session.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

use datafusion::catalog::{CatalogProvider, SchemaProvider};
use datafusion::execution::session_state::SessionState;
use tarn_catalog::Catalog;

use crate::provider::LakeCatalog;

/// Catalog `tarn` for a long-lived session: the lake's tables, re-listed by
/// [`LiveCatalog::refresh`] (before every query), plus the schemas registered on it
/// (`pg_catalog`).
#[derive(Debug)]
pub(super) struct LiveCatalog {
    catalog: Arc<Catalog>,
    scan_session: Arc<SessionState>,
    lake: RwLock<Arc<LakeCatalog>>,
    extra: RwLock<BTreeMap<String, Arc<dyn SchemaProvider>>>,
}

impl LiveCatalog {
    pub fn new(catalog: Arc<Catalog>, scan_session: Arc<SessionState>) -> Self {
        let lake = Arc::new(LakeCatalog::new(
            catalog.clone(),
            Vec::new(),
            Arc::default(),
            scan_session.clone(),
        ));
        LiveCatalog { catalog, scan_session, lake: RwLock::new(lake), extra: RwLock::default() }
    }

    /// Re-reads the table names from the catalog. Reads are not recorded: this session
    /// neither reuses results nor reports versions.
    pub async fn refresh(&self) -> crate::Result<()> {
        let names = LakeCatalog::names(&self.catalog).await?;
        let lake = Arc::new(
            LakeCatalog::new(
                self.catalog.clone(),
                names,
                Arc::new(Mutex::default()),
                self.scan_session.clone(),
            )
            .latest_at_scan(),
        );
        *self.lake.write().expect("catalog lock") = lake;
        Ok(())
    }

    fn lake(&self) -> Arc<LakeCatalog> {
        self.lake.read().expect("catalog lock").clone()
    }
}

impl CatalogProvider for LiveCatalog {
    fn schema_names(&self) -> Vec<String> {
        let mut names = self.lake().schema_names();
        names.extend(self.extra.read().expect("catalog lock").keys().cloned());
        names
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        if let Some(schema) = self.extra.read().expect("catalog lock").get(name) {
            return Some(schema.clone());
        }
        self.lake().schema(name)
    }

    fn register_schema(
        &self,
        name: &str,
        schema: Arc<dyn SchemaProvider>,
    ) -> datafusion::error::Result<Option<Arc<dyn SchemaProvider>>> {
        Ok(self.extra.write().expect("catalog lock").insert(name.to_string(), schema))
    }
}
