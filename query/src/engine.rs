//! Planning and running read-only SQL.

use std::sync::Arc;

use datafusion::catalog::CatalogProviderList;
use datafusion::catalog::MemoryCatalogProviderList;
use datafusion::common::TableReference;
use datafusion::execution::context::SQLOptions;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::prelude::{SessionConfig, SessionContext};
use serde::Deserialize;
use tarn_catalog::{Catalog, TableName};

use crate::provider::{LakeCatalog, CATALOG_NAME};
use crate::{Error, Result};

/// Settings of the query engine.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct QueryConfig {
    /// Rows per batch DataFusion produces (and per chunk streamed to clients).
    pub batch_size: usize,
}

impl Default for QueryConfig {
    fn default() -> Self {
        QueryConfig { batch_size: 8192 }
    }
}

/// Runs SQL over the catalog's tables.
pub struct QueryEngine {
    catalog: Arc<Catalog>,
    config: QueryConfig,
    /// Shared by every query: object stores registered once, later the memory pool and spill
    /// directory.
    runtime: Arc<RuntimeEnv>,
}

impl QueryEngine {
    /// A query engine over `catalog`.
    pub fn new(catalog: Arc<Catalog>, config: QueryConfig) -> Self {
        QueryEngine { catalog, config, runtime: Arc::new(RuntimeEnv::default()) }
    }

    /// A DataFusion session whose catalog `tarn` holds the lake's tables (default schema
    /// `default`), with `information_schema` for `SHOW TABLES` and friends.
    pub async fn session(&self) -> Result<SessionContext> {
        let names = self.catalog.names().await?;
        let config = SessionConfig::new()
            .with_batch_size(self.config.batch_size)
            .with_information_schema(true)
            .with_create_default_catalog_and_schema(false)
            .with_default_catalog_and_schema(CATALOG_NAME, tarn_catalog::DEFAULT_NAMESPACE);
        let catalogs = Arc::new(MemoryCatalogProviderList::new());
        catalogs.register_catalog(
            CATALOG_NAME.to_string(),
            Arc::new(LakeCatalog::new(self.catalog.clone(), names)),
        );
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(self.runtime.clone())
            .with_default_features()
            .with_catalog_list(catalogs)
            .build();
        Ok(SessionContext::new_with_state(state))
    }

    /// Plans `sql`, refuses anything that is not a read, and starts it.
    ///
    /// Errors in the query (syntax, unknown columns, unknown tables, writes) are reported
    /// before anything runs.
    pub async fn execute(&self, sql: &str) -> Result<SendableRecordBatchStream> {
        if sql.trim().trim_end_matches(';').trim().is_empty() {
            return Err(Error::BadQuery("the SQL text is empty".into()));
        }
        let ctx = self.session().await?;
        let state = ctx.state();
        let dialect = state.config().options().sql_parser.dialect;
        let statement = state.sql_to_statement(sql, &dialect)?;
        let references = state.resolve_table_references(&statement)?;
        let plan = match state.statement_to_plan(statement).await {
            Ok(plan) => plan,
            Err(e) => {
                // A missing table is a 404, not a plan error (but an unknown table function
                // stays DataFusion's "table function 'f' not found").
                let unknown_function = matches!(
                    e.find_root(),
                    datafusion::error::DataFusionError::Plan(m) if m.starts_with("table function")
                );
                for reference in references.iter().filter(|_| !unknown_function) {
                    self.check_table(reference).await?;
                }
                return Err(e.into());
            }
        };
        SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false)
            .verify_plan(&plan)
            .map_err(|e| Error::ReadOnly(e.strip_backtrace()))?;
        let frame = ctx.execute_logical_plan(plan).await?;
        Ok(frame.execute_stream().await?)
    }

    /// Fails with [`Error::TableNotFound`] if `reference` names no table of the catalog.
    async fn check_table(&self, reference: &TableReference) -> Result<()> {
        if reference.schema() == Some("information_schema") {
            return Ok(());
        }
        if let Some(catalog) = reference.catalog() {
            if catalog != CATALOG_NAME {
                return Err(Error::TableNotFound(reference.to_string()));
            }
        }
        let namespace = reference.schema().unwrap_or(tarn_catalog::DEFAULT_NAMESPACE);
        let name = TableName::new(namespace, reference.table())
            .map_err(|_| Error::TableNotFound(reference.to_string()))?;
        match self.catalog.get(&name).await {
            Ok(_) => Ok(()),
            Err(tarn_catalog::Error::TableNotFound { .. }) => {
                Err(Error::TableNotFound(name.to_string()))
            }
            Err(e) => Err(e.into()),
        }
    }
}
