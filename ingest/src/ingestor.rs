//! Appending decoded requests to tables.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tarn_catalog::{Catalog, TableName};

use crate::{decode, infer_schema, Error, Format, Result};

/// Settings of the ingest service.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct IngestConfig {
    /// Create unknown tables on first write, with a schema inferred from that write.
    pub auto_create: bool,
    /// Largest accepted request body, in bytes (after any decompression).
    pub max_body_bytes: usize,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            auto_create: true,
            max_body_bytes: 64 * 1024 * 1024,
        }
    }
}

/// The answer to an ingest request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IngestReceipt {
    /// The qualified table name.
    pub table: String,
    /// Records appended.
    pub accepted: usize,
    /// The Delta version of the commit that holds them.
    pub version: u64,
    /// True when this request created the table.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub created: bool,
}

/// The ingest service: decodes bodies and appends them to the lake.
pub struct Ingestor {
    catalog: Arc<Catalog>,
    config: IngestConfig,
    /// One lock per table serialises this process's commits to it, so concurrent requests
    /// queue here instead of racing for the same Delta version and retrying.
    commit_locks: Mutex<HashMap<TableName, Arc<tokio::sync::Mutex<()>>>>,
}

impl Ingestor {
    /// A new ingest service over `catalog`.
    pub fn new(catalog: Arc<Catalog>, config: IngestConfig) -> Self {
        Ingestor {
            catalog,
            config,
            commit_locks: Mutex::new(HashMap::new()),
        }
    }

    /// The settings in force.
    pub fn config(&self) -> &IngestConfig {
        &self.config
    }

    /// Decodes `body` against the table's schema and appends it as one commit.
    ///
    /// Either every record of the body is appended or none is.
    pub async fn ingest(
        &self,
        name: &TableName,
        body: Bytes,
        format: Format,
    ) -> Result<IngestReceipt> {
        let mut created = false;
        let table = match self.catalog.open(name).await {
            Ok((_, table)) => table,
            Err(tarn_catalog::Error::TableNotFound { .. }) if self.config.auto_create => {
                let schema = infer_schema(&body, format)?;
                // Requests racing to create the same table queue here; the first creates it.
                let lock = self.commit_lock(name);
                let _guard = lock.lock().await;
                match self.catalog.create(name, &schema, &[], "auto").await {
                    Ok((_, table)) => {
                        created = true;
                        table
                    }
                    // Another request or server created it a moment ago: use theirs.
                    Err(tarn_catalog::Error::TableExists { .. }) => {
                        self.catalog.open(name).await?.1
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Err(tarn_catalog::Error::TableNotFound { .. }) => {
                return Err(Error::TableNotFound {
                    name: name.to_string(),
                })
            }
            Err(e) => return Err(e.into()),
        };
        let schema = table.schema()?;
        let batches = tokio::task::spawn_blocking(move || decode(&body, format, schema))
            .await
            .expect("the decoder does not panic")?;
        let accepted = batches.iter().map(|b| b.num_rows()).sum();

        let lock = self.commit_lock(name);
        let _guard = lock.lock().await;
        let mut table = table;
        table.refresh().await?;
        let table = table.append(batches).await?;
        self.catalog.remember(name, &table);
        tracing::debug!(table = %name, rows = accepted, version = table.version(), "appended");
        Ok(IngestReceipt {
            table: name.to_string(),
            accepted,
            version: table.version(),
            created,
        })
    }

    fn commit_lock(&self, name: &TableName) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.commit_locks.lock().expect("commit lock map");
        // Forget locks nobody holds, so the map stays as small as the set of busy tables.
        locks.retain(|_, lock| Arc::strong_count(lock) > 1);
        locks.entry(name.clone()).or_default().clone()
    }
}
