//! Creating, changing and dropping tables.

use std::sync::Arc;

use arrow::datatypes::{Field, Schema};
use chrono::Utc;
use object_store::path::Path;
use object_store::ObjectStoreExt;
use serde::Serialize;
use tarn_lake::LakeTable;

use super::store::{legacy_path, table_prefix};
use super::Catalog;
use crate::{
    companion, type_name, Contract, Error, Result, TableDefinition, TableName, TableSpec,
    SYSTEM_NAMESPACE,
};

impl Catalog {
    fn new_definition(name: &TableName, created_by: &str, spec: TableSpec) -> TableDefinition {
        TableDefinition {
            namespace: name.namespace().to_string(),
            name: name.name().to_string(),
            location: name.path(),
            created_at: Utc::now(),
            created_by: created_by.to_string(),
            updated_at: None,
            revision: 0,
            owner: None,
            external: None,
            spec,
        }
    }

    /// Creates a table with a schema of its own (an inferred one, on first ingest): the Delta
    /// table first (idempotently), then the entry with a conditional put. If another process
    /// registered the same name meanwhile, this returns [`Error::TableExists`] and the other
    /// entry stays as it was.
    pub async fn create(
        &self,
        name: &TableName,
        schema: &Schema,
        partition_by: &[String],
        created_by: &str,
    ) -> Result<(TableDefinition, LakeTable)> {
        self.create_as(name, schema, partition_by, created_by, None).await
    }

    /// Creates a table Tarn keeps for `owner` (a scheduled job's output, `system.job_runs`):
    /// like [`Catalog::create`], but only Tarn writes to it and it cannot be redefined.
    pub async fn create_owned(
        &self,
        name: &TableName,
        schema: &Schema,
        owner: &str,
    ) -> Result<(TableDefinition, LakeTable)> {
        self.create_as(name, schema, &[], "tarn", Some(owner)).await
    }

    async fn create_as(
        &self,
        name: &TableName,
        schema: &Schema,
        partition_by: &[String],
        created_by: &str,
        owner: Option<&str>,
    ) -> Result<(TableDefinition, LakeTable)> {
        check_namespace(name, created_by)?;
        match self.read_definition(name).await {
            Ok(_) => return Err(Error::TableExists { name: name.to_string() }),
            Err(Error::TableNotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        let table = self.lake.create_table(&name.path(), schema, partition_by).await?;
        let spec = TableSpec { partition_by: table.partition_columns()?, ..TableSpec::default() };
        let mut definition = Self::new_definition(name, created_by, spec);
        definition.owner = owner.map(String::from);
        let e_tag = self.put_document(&definition).await?;
        self.cache_definition(name, Some(Arc::new(definition.clone())), e_tag);
        tracing::info!(table = %name, url = %self.lake.table_url(&name.path())?, "created table");
        self.remember(name, &table);
        Ok((definition, table))
    }

    /// Creates or changes a table from its declared contract (`PUT /v1/tables/{table}`,
    /// `tarn.toml`).
    ///
    /// A new table gets a Delta table with the contract's schema (or, if data was left in the
    /// lake under that name, that data's table, evolved), and `<table>_rejected` (and
    /// `<table>_raw` with `raw_backup`) beside it. A changed definition may add nullable
    /// columns, derived columns and rules, and change everything that is not the shape of
    /// existing data; dropping or retyping a column, tightening its nullability or changing
    /// the partitioning is refused with [`Error::Conflict`], which says why.
    pub async fn define(
        &self,
        name: &TableName,
        spec: TableSpec,
        created_by: &str,
    ) -> Result<Defined> {
        check_namespace(name, created_by)?;
        spec.validate()?;
        let existing = match self.read_definition(name).await {
            Ok(definition) => Some(definition),
            Err(Error::TableNotFound { .. }) => None,
            Err(e) => return Err(e),
        };
        if let Some(owner) = existing.as_ref().and_then(|d| d.owner.as_ref()) {
            return Err(Error::Conflict {
                name: name.to_string(),
                reason: format!("it is kept by Tarn for '{owner}' and cannot be redefined"),
            });
        }
        if let Some(external) = existing.as_ref().and_then(|d| d.external.as_ref()) {
            return Err(Error::Conflict {
                name: name.to_string(),
                reason: format!(
                    "it is an external {} table over {}; crawl it again to update it",
                    external.format, external.url
                ),
            });
        }
        let contract = if spec.is_declared() { Some(Contract::compile(&spec)?) } else { None };
        let (definition, table, status, e_tag) = match existing {
            None => {
                let Some(contract) = contract else {
                    return Err(Error::InvalidDefinition {
                        reason: "declare the table's columns to create it".into(),
                    });
                };
                let table = if self.lake.table_exists(&name.path()).await? {
                    let table = self.lake.open_table(&name.path()).await?;
                    evolve(name, table, &contract, &spec).await?
                } else {
                    self.lake
                        .create_table(&name.path(), &contract.table_schema, &spec.partition_by)
                        .await?
                };
                self.ensure_companions(name, &spec).await?;
                let definition = Self::new_definition(name, created_by, spec);
                let e_tag = self.put_document(&definition).await?;
                tracing::info!(table = %name, "created table from its definition");
                (definition, table, DefineStatus::Created, e_tag)
            }
            Some(current) if current.spec == spec => {
                let (_, table) = self.open(name).await?;
                (current, table, DefineStatus::Unchanged, None)
            }
            Some(current) => {
                let (_, table) = self.open(name).await?;
                let table = match &contract {
                    Some(contract) => evolve(name, table, contract, &spec).await?,
                    None => {
                        check_partitions(name, &table, &spec.partition_by)?;
                        if !current.spec.columns.is_empty() {
                            return Err(Error::Conflict {
                                name: name.to_string(),
                                reason: "its columns are declared; a definition without \
                                         columns would drop the contract"
                                    .into(),
                            });
                        }
                        table
                    }
                };
                self.ensure_companions(name, &spec).await?;
                let definition = TableDefinition {
                    revision: current.revision + 1,
                    updated_at: Some(Utc::now()),
                    spec,
                    ..current
                };
                let e_tag = self.put_document(&definition).await?;
                tracing::info!(table = %name, revision = definition.revision, "changed the table's definition");
                (definition, table, DefineStatus::Updated, e_tag)
            }
        };
        self.remember(name, &table);
        self.cache_definition(name, Some(Arc::new(definition.clone())), e_tag);
        Ok(Defined { definition, table, status })
    }

    /// Creates the tables Tarn keeps beside a declared table, when missing.
    async fn ensure_companions(&self, name: &TableName, spec: &TableSpec) -> Result<()> {
        let mut wanted = Vec::new();
        if spec.is_declared() {
            wanted.push((companion::rejected_name(name)?, companion::rejected_schema()));
        }
        if spec.raw_backup {
            wanted.push((companion::raw_name(name)?, companion::raw_schema()));
        }
        for (companion, schema) in wanted {
            match self.read_definition(&companion).await {
                Ok(definition) if definition.owner.as_deref() == Some(&name.to_string()) => {
                    continue
                }
                Ok(_) => {
                    return Err(Error::Conflict {
                        name: name.to_string(),
                        reason: format!(
                            "Tarn keeps its rejected rows (and raw payloads) in '{companion}', \
                             but a table of that name exists already"
                        ),
                    })
                }
                Err(Error::TableNotFound { .. }) => {}
                Err(e) => return Err(e),
            }
            let table = self.lake.create_table(&companion.path(), &schema, &[]).await?;
            let mut definition = Self::new_definition(&companion, "tarn", TableSpec::default());
            definition.owner = Some(name.to_string());
            match self.put_document(&definition).await {
                Ok(e_tag) => self.cache_definition(&companion, Some(Arc::new(definition)), e_tag),
                Err(Error::TableExists { .. }) => {}
                Err(e) => return Err(e),
            }
            self.remember(&companion, &table);
        }
        Ok(())
    }

    /// Removes `name` from the catalog, with the tables Tarn keeps for it (`_rejected`,
    /// `_raw`). With `purge`, their data is deleted as well; without, the Delta tables stay in
    /// the lake and a later definition of the same name picks them up again.
    ///
    /// An external table (registered by the crawler) is only ever removed from the catalog:
    /// `purge` is refused with [`Error::Conflict`], since Tarn does not own that data.
    pub async fn delete(&self, name: &TableName, purge: bool) -> Result<()> {
        self.drops.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let definition = self.read_definition(name).await?;
        if let (true, Some(external)) = (purge, &definition.external) {
            return Err(Error::Conflict {
                name: name.to_string(),
                reason: format!(
                    "it is an external {} table over {}, data Tarn does not own and never \
                     deletes; drop it without purge=true to remove it from the catalog",
                    external.format, external.url
                ),
            });
        }
        let mut doomed = vec![(name.clone(), definition.location)];
        for companion in
            [companion::rejected_name(name), companion::raw_name(name)].into_iter().flatten()
        {
            match self.read_definition(&companion).await {
                Ok(d) if d.owner.as_deref() == Some(&name.to_string()) => {
                    doomed.push((companion, d.location))
                }
                _ => {}
            }
        }
        for (table, location) in doomed {
            let documents: Vec<Path> = self
                .documents(&table_prefix(&table))
                .await?
                .into_iter()
                .filter(|(n, _, _)| *n == table)
                .map(|(_, _, meta)| meta.location)
                .chain(std::iter::once(legacy_path(&table)))
                .collect();
            for path in documents {
                match self.lake.store().delete(&path).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            self.tables.lock().expect("table cache lock").remove(&table);
            // Again once the handle is gone: an open that began meanwhile may hold it.
            self.drops.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.cache_definition(&table, None, None);
            if purge {
                let removed = self.lake.delete_prefix(&location).await?;
                tracing::info!(table = %table, files = removed, "dropped table and purged its data");
            } else {
                tracing::info!(table = %table, "dropped table from the catalog; data kept");
            }
        }
        Ok(())
    }
}

/// What [`Catalog::define`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DefineStatus {
    /// The table is new.
    Created,
    /// The definition changed.
    Updated,
    /// The definition was the same already.
    Unchanged,
}

/// The outcome of [`Catalog::define`].
#[derive(Debug, Clone)]
pub struct Defined {
    /// The stored definition.
    pub definition: TableDefinition,
    /// The Delta table, at its new version.
    pub table: LakeTable,
    /// What happened.
    pub status: DefineStatus,
}

/// Checks a new contract against the Delta table's data and adds its new columns.
async fn evolve(
    name: &TableName,
    table: LakeTable,
    contract: &Contract,
    spec: &TableSpec,
) -> Result<LakeTable> {
    check_partitions(name, &table, &spec.partition_by)?;
    let conflict = |reason: String| Error::Conflict { name: name.to_string(), reason };
    let existing = table.schema()?;
    let wanted = &contract.table_schema;
    for field in existing.fields() {
        let Ok(new) = wanted.field_with_name(field.name()) else {
            return Err(conflict(format!(
                "column '{}' holds data and cannot be dropped; keep it in the definition",
                field.name()
            )));
        };
        if new.data_type() != field.data_type() {
            return Err(conflict(format!(
                "column '{}' is {} in the table; making it {} would break the existing data",
                field.name(),
                type_name(field.data_type()),
                type_name(new.data_type())
            )));
        }
        if new.is_nullable() != field.is_nullable() {
            return Err(conflict(format!(
                "column '{}' is {} in the table; changing that of an existing column is not \
                 supported",
                field.name(),
                if field.is_nullable() { "nullable" } else { "not nullable" }
            )));
        }
    }
    let added: Vec<Field> = wanted
        .fields()
        .iter()
        .filter(|f| existing.field_with_name(f.name()).is_err())
        .map(|f| f.as_ref().clone())
        .collect();
    if let Some(f) = added.iter().find(|f| !f.is_nullable()) {
        return Err(conflict(format!(
            "new column '{}' must be nullable: the rows already in the table have no value for it",
            f.name()
        )));
    }
    if added.is_empty() {
        return Ok(table);
    }
    tracing::info!(table = %name, columns = ?added.iter().map(|f| f.name()).collect::<Vec<_>>(), "adding columns");
    Ok(table.add_columns(&added).await?)
}

/// Refuses tables in [`SYSTEM_NAMESPACE`] unless Tarn makes them.
fn check_namespace(name: &TableName, created_by: &str) -> Result<()> {
    if name.namespace() == SYSTEM_NAMESPACE && created_by != "tarn" {
        return Err(Error::InvalidName {
            name: name.to_string(),
            reason: format!("the namespace '{SYSTEM_NAMESPACE}' is Tarn's own (system.job_runs)"),
        });
    }
    Ok(())
}

fn check_partitions(name: &TableName, table: &LakeTable, wanted: &[String]) -> Result<()> {
    let current = table.partition_columns()?;
    if current != wanted {
        return Err(Error::Conflict {
            name: name.to_string(),
            reason: format!(
                "it is partitioned by {current:?}; changing the partitioning to {wanted:?} needs a \
                 new table"
            ),
        });
    }
    Ok(())
}
