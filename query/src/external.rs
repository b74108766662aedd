//! Reading external tables of files (registered by the crawler) with DataFusion's listing
//! table: the files under the table's URL are listed when a query runs, so files added since
//! the crawl are read; Hive partition directories become columns and filters on them skip
//! whole directories. Columns come from the crawl (a new column needs a new crawl).

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::datasource::file_format::csv::CsvFormat;
use datafusion::datasource::file_format::json::JsonFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::cache::cache_manager::TableScopedPath;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use object_store::ObjectStore;
use tarn_catalog::{Catalog, ExternalFormat, ExternalSource};

use crate::error::carry;

/// A listing table over an external prefix, which makes sure the session can reach the
/// prefix's object store (another bucket than the lake's, with the lake's credentials)
/// before it scans.
#[derive(Debug)]
pub(crate) struct ExternalFiles {
    inner: ListingTable,
    table_url: ListingTableUrl,
    store_url: ObjectStoreUrl,
    store: Arc<dyn ObjectStore>,
}

impl ExternalFiles {
    /// The table provider of an external table of files.
    pub(crate) fn open(catalog: &Catalog, source: &ExternalSource) -> Result<Self> {
        let (schema, partitions) = tarn_catalog::crawl::listing_schema(source).map_err(carry)?;
        let url = url::Url::parse(&source.url).map_err(|e| {
            carry(tarn_catalog::Error::InvalidDefinition {
                reason: format!("the external URL '{}' is not valid: {e}", source.url),
            })
        })?;
        let store = catalog.lake().store_for_url(&url).map_err(carry)?;
        let store_url = ObjectStoreUrl::parse(&url[..url::Position::BeforePath])?;
        let format: Arc<dyn FileFormat> = match source.format {
            ExternalFormat::Parquet => Arc::new(ParquetFormat::default()),
            ExternalFormat::Csv => Arc::new(CsvFormat::default().with_has_header(true)),
            ExternalFormat::Ndjson => Arc::new(JsonFormat::default()),
            ExternalFormat::Delta => {
                return Err(DataFusionError::Internal("a Delta table is not a listing".into()))
            }
        };
        let options = ListingOptions::new(format)
            .with_file_extension(source.file_extension.clone().unwrap_or_default())
            .with_table_partition_cols(partitions);
        let table_url = ListingTableUrl::parse(&source.url)?;
        let config = ListingTableConfig::new(table_url.clone())
            .with_listing_options(options)
            .with_schema(Arc::new(schema));
        Ok(ExternalFiles { inner: ListingTable::try_new(config)?, table_url, store_url, store })
    }

    /// Lets the session reach the table's store, and makes it list the table's files anew:
    /// DataFusion keeps listings in the (shared) runtime without expiry, which would hide
    /// files added since the first query.
    fn prepare(&self, state: &dyn Session) {
        let runtime = state.runtime_env();
        runtime.register_object_store(self.store_url.as_ref(), self.store.clone());
        if let Some(cache) = runtime.cache_manager.get_list_files_cache() {
            cache.remove(&TableScopedPath {
                table: self.table_url.get_table_ref().clone(),
                path: self.table_url.prefix().clone(),
            });
        }
    }
}

#[async_trait]
impl TableProvider for ExternalFiles {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.prepare(state);
        self.inner.scan(state, projection, filters, limit).await
    }

    async fn scan_with_args<'a>(
        &self,
        state: &dyn Session,
        args: datafusion::catalog::ScanArgs<'a>,
    ) -> Result<datafusion::catalog::ScanResult> {
        self.prepare(state);
        self.inner.scan_with_args(state, args).await
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        self.inner.supports_filters_pushdown(filters)
    }
}
