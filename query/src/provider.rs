//! The lake's catalog as DataFusion sees it: catalog `tarn`, one schema per namespace.
//!
//! Tarn's own tables and crawled Delta tables are read through deltalake's table provider;
//! crawled prefixes of Parquet / CSV / NDJSON files through [`crate::external::ExternalFiles`].

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::{CatalogProvider, SchemaProvider};
use datafusion::datasource::TableProvider;
use datafusion::error::{DataFusionError, Result};
use tarn_catalog::{ApiError, Catalog, TableName};

/// The name of Tarn's catalog in SQL (`tarn.default.events`).
pub const CATALOG_NAME: &str = "tarn";

/// A snapshot of the catalog's table names, taken when a query starts; tables themselves are
/// loaded (at their latest version) only when the query names them.
#[derive(Debug)]
pub struct LakeCatalog {
    catalog: Arc<Catalog>,
    namespaces: BTreeMap<String, Vec<String>>,
}

impl LakeCatalog {
    pub fn new(catalog: Arc<Catalog>, names: Vec<TableName>) -> Self {
        let mut namespaces: BTreeMap<String, Vec<String>> = BTreeMap::new();
        // The default namespace always exists, so `SELECT 1` and `SHOW TABLES` work on an
        // empty lake.
        namespaces.entry(tarn_catalog::DEFAULT_NAMESPACE.to_string()).or_default();
        for name in names {
            namespaces
                .entry(name.namespace().to_string())
                .or_default()
                .push(name.name().to_string());
        }
        LakeCatalog { catalog, namespaces }
    }
}

impl CatalogProvider for LakeCatalog {
    fn schema_names(&self) -> Vec<String> {
        self.namespaces.keys().cloned().collect()
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        let tables = self.namespaces.get(name)?;
        Some(Arc::new(LakeSchema {
            catalog: self.catalog.clone(),
            namespace: name.to_string(),
            tables: tables.clone(),
        }))
    }
}

#[derive(Debug)]
struct LakeSchema {
    catalog: Arc<Catalog>,
    namespace: String,
    tables: Vec<String>,
}

#[async_trait]
impl SchemaProvider for LakeSchema {
    fn table_names(&self) -> Vec<String> {
        self.tables.clone()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let Ok(table_name) = TableName::new(&self.namespace, name) else {
            return Ok(None);
        };
        // External tables of files (crawled Parquet / CSV / NDJSON) are listings, not Delta.
        match self.catalog.definition(&table_name).await {
            Ok(definition) => {
                if let Some(source) = definition
                    .external
                    .as_ref()
                    .filter(|s| s.format != tarn_catalog::ExternalFormat::Delta)
                {
                    return Ok(Some(Arc::new(crate::external::ExternalFiles::open(
                        &self.catalog,
                        source,
                    )?)));
                }
            }
            Err(tarn_catalog::Error::TableNotFound { .. }) => return Ok(None),
            Err(e) => return Err(DataFusionError::External(Box::new(ApiError::from(e)))),
        }
        let table = match self.catalog.open(&table_name).await {
            Ok((_, table)) => table,
            Err(tarn_catalog::Error::TableNotFound { .. }) => return Ok(None),
            Err(e) => return Err(DataFusionError::External(Box::new(ApiError::from(e)))),
        };
        Ok(Some(table.delta().table_provider().await?))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.tables.iter().any(|t| t == name)
    }
}
