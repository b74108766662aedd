//! The lake's catalog as DataFusion sees it: catalog `tarn`, one schema per namespace.
//!
//! Tarn's own tables and crawled Delta tables are read by Tarn's Delta scan (`crate::scan`);
//! crawled prefixes of Parquet / CSV / NDJSON files through [`crate::external::ExternalFiles`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::catalog::{CatalogProvider, SchemaProvider};
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use serde::{Deserialize, Serialize};
use tarn_catalog::{Catalog, TableName};

use crate::error::carry;
use crate::scan::Scans;
use crate::timetravel::{self, AsOf};
use crate::Error;

/// The name of Tarn's catalog in SQL (`tarn.default.events`).
pub const CATALOG_NAME: &str = "tarn";

/// A table a query read, at the version it read.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TableRead {
    /// The qualified name (`default.events`).
    pub table: String,
    /// The Delta version the query saw.
    pub version: u64,
    /// Whether the query asked for this version (time travel) rather than the latest.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub time_travel: bool,
    /// A crawled table of files, read as a listing: it has no version, and its files may
    /// change at any time (so a result that read it is never reused).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub files: bool,
    /// The Delta table's id: a table dropped and created again under the same name has
    /// another, so results of the old one are never taken for the new one's.
    #[serde(skip)]
    pub table_id: String,
}

/// A snapshot of the catalog's table names, taken when a query starts; tables themselves are
/// loaded (at their latest version, or the version a time-travel name asks for) only when the
/// query names them, and every table loaded is recorded with its version.
#[derive(Debug)]
pub struct LakeCatalog {
    catalog: Arc<Catalog>,
    namespaces: BTreeMap<String, Vec<String>>,
    reads: Arc<Mutex<Vec<TableRead>>>,
    scans: Arc<Scans>,
    latest_at_scan: bool,
}

impl LakeCatalog {
    /// The catalog's tables as DataFusion sees them; tables loaded are recorded in `reads`,
    /// and read by `scans`.
    pub fn new(
        catalog: Arc<Catalog>,
        names: Vec<TableName>,
        reads: Arc<Mutex<Vec<TableRead>>>,
        scans: Arc<Scans>,
    ) -> Self {
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
        LakeCatalog { catalog, namespaces, reads, scans, latest_at_scan: false }
    }
}

impl LakeCatalog {
    /// The names for [`LakeCatalog::new`] as a query starts. While storage is unreachable,
    /// queries that read no table still run (on every frontend); those that name one fail on
    /// it with the storage's error.
    pub async fn names(catalog: &Catalog) -> crate::Result<Vec<TableName>> {
        match catalog.names().await {
            Ok(names) => Ok(names),
            Err(e) if tarn_lake::Classify::kind(&e) == tarn_lake::ErrorKind::Unavailable => {
                tracing::warn!(error = %e, "cannot list the lake's tables; planning without them");
                Ok(Vec::new())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Tables read at their latest version when a scan is planned rather than when the query
    /// is: for sessions that plan a statement once and run it many times (Postgres prepared
    /// statements), which would otherwise keep reading the version they were prepared on.
    pub fn latest_at_scan(mut self) -> Self {
        self.latest_at_scan = true;
        self
    }
}

impl CatalogProvider for LakeCatalog {
    fn schema_names(&self) -> Vec<String> {
        self.namespaces.keys().cloned().collect()
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        // A namespace missing from the names (listed a moment ago, see `Catalog::names`) may
        // have just been created by another process: a table named in it is looked up by its
        // definition all the same.
        let tables = match self.namespaces.get(name) {
            Some(tables) => tables.clone(),
            None if tarn_catalog::TableName::stored(name, "t").is_ok() => Vec::new(),
            None => return None,
        };
        Some(Arc::new(LakeSchema {
            catalog: self.catalog.clone(),
            namespace: name.to_string(),
            tables,
            reads: self.reads.clone(),
            scans: self.scans.clone(),
            latest_at_scan: self.latest_at_scan,
        }))
    }
}

#[derive(Debug)]
struct LakeSchema {
    catalog: Arc<Catalog>,
    namespace: String,
    tables: Vec<String>,
    reads: Arc<Mutex<Vec<TableRead>>>,
    scans: Arc<Scans>,
    latest_at_scan: bool,
}

#[async_trait]
impl SchemaProvider for LakeSchema {
    fn table_names(&self) -> Vec<String> {
        self.tables.clone()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let (name, as_of) = timetravel::split_name(name).map_err(DataFusionError::Plan)?;
        let Ok(table_name) = TableName::stored(&self.namespace, name) else {
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
                    if as_of.is_some() {
                        return Err(DataFusionError::Plan(format!(
                            "table '{table_name}' is a crawled {} prefix: it has no versions to travel to",
                            source.format
                        )));
                    }
                    let files = crate::external::ExternalFiles::open(&self.catalog, source)?;
                    self.reads.lock().expect("reads lock").push(TableRead {
                        table: table_name.to_string(),
                        version: 0,
                        time_travel: false,
                        files: true,
                        table_id: String::new(),
                    });
                    return Ok(Some(Arc::new(files)));
                }
            }
            Err(tarn_catalog::Error::TableNotFound { .. }) => return Ok(None),
            Err(e) => return Err(carry(e)),
        }
        let (definition, table) = match self.catalog.open(&table_name).await {
            Ok(opened) => opened,
            Err(tarn_catalog::Error::TableNotFound { .. }) => return Ok(None),
            Err(e) => return Err(carry(e)),
        };
        let table = match as_of {
            None => Ok(table),
            Some(AsOf::Version(version)) => table.at_version(version).await,
            Some(AsOf::Time(at)) => table.at_time(at).await,
        }
        .map_err(|e| match e {
            tarn_lake::Error::VersionNotFound(reason) => {
                carry(Error::VersionNotFound(format!("table '{table_name}': {reason}")))
            }
            e => carry(e),
        })?;
        self.reads.lock().expect("reads lock").push(TableRead {
            table: table_name.to_string(),
            version: table.version(),
            time_travel: as_of.is_some(),
            files: false,
            table_id: table.id().unwrap_or_default(),
        });
        let provider = self.scans.provider(&self.catalog, &table_name, &definition, &table).await?;
        if self.latest_at_scan && as_of.is_none() {
            return Ok(Some(Arc::new(LatestAtScan {
                catalog: self.catalog.clone(),
                name: table_name,
                planned: provider,
                scans: self.scans.clone(),
            })));
        }
        Ok(Some(provider))
    }

    fn table_exist(&self, name: &str) -> bool {
        match timetravel::split_name(name) {
            Ok((name, _)) => self.tables.iter().any(|t| t == name),
            Err(_) => false,
        }
    }
}

/// A Delta table read at its latest version when its scan is planned (see
/// [`LakeCatalog::latest_at_scan`]). Its schema is the one of the version the statement was
/// planned on; columns added since (Tarn only adds columns) are left out of the scan.
#[derive(Debug)]
struct LatestAtScan {
    catalog: Arc<Catalog>,
    name: TableName,
    planned: Arc<dyn TableProvider>,
    scans: Arc<Scans>,
}

#[async_trait]
impl TableProvider for LatestAtScan {
    fn schema(&self) -> SchemaRef {
        self.planned.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        self.planned.supports_filters_pushdown(filters)
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let (definition, table) = self.catalog.open(&self.name).await.map_err(carry)?;
        let fresh = self.scans.provider(&self.catalog, &self.name, &definition, &table).await?;
        let planned = self.planned.schema();
        let current = fresh.schema();
        if current == planned {
            return fresh.scan(state, projection, filters, limit).await;
        }
        // The planned columns, found by name in the current schema.
        let wanted: Vec<usize> = match projection {
            Some(indices) => indices.clone(),
            None => (0..planned.fields().len()).collect(),
        };
        let mapped = wanted
            .iter()
            .map(|&i| current.index_of(planned.field(i).name()))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        fresh.scan(state, Some(&mapped), filters, limit).await
    }
}
