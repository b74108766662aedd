//! What ingest knows about each table, and tables created on first write.
//!
//! A [`TablePlan`] is made once per revision of a table's definition: the Delta schema, the
//! compiled contract, the companion tables. [`Tables`] keeps the plans, creates unknown tables
//! when auto-create is on, and holds the unique-key indexes; requests
//! ([`crate::Ingestor`]) and file loads ([`crate::Loader`]) share one, so both see the same
//! keys.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use arrow::compute::filter_record_batch;
use arrow::datatypes::{Schema, SchemaRef};
use tarn_catalog::{companion, Catalog, ColumnType, Contract, TableDefinition, TableName};
use tarn_lake::{Classify, ErrorKind, LakeTable};

use crate::buffer::FlushConfig;
use crate::events::Events;
use crate::snapshot::Snapshots;
use crate::stats::IngestStats;
use crate::unique::{KeySpec, UniqueKeys};
use crate::{contract, Error, Result};

/// What ingest knows about one table, for one revision of its definition.
pub struct TablePlan {
    /// The table.
    pub name: TableName,
    /// Its definition.
    pub definition: Arc<TableDefinition>,
    /// The Delta table's schema (what undeclared tables decode against).
    pub schema: SchemaRef,
    /// The compiled contract, for declared tables.
    pub contract: Option<Contract>,
    /// Declared `json` columns.
    pub json_columns: Vec<String>,
    /// `<table>_rejected`, for declared tables.
    pub rejected: Option<TableName>,
    /// `<table>_raw`, with `raw_backup`.
    pub raw: Option<TableName>,
}

impl TablePlan {
    /// The declared type of `column`, if declared.
    pub fn column_type(&self, column: &str) -> Option<ColumnType> {
        self.definition.spec.columns.iter().find(|c| c.name == column).map(|c| c.data_type)
    }

    /// The table's own flush thresholds over `defaults`, when its definition sets any.
    pub fn flush(&self, defaults: &FlushConfig) -> Option<FlushConfig> {
        let flush = &self.definition.spec.flush;
        (flush != &Default::default()).then(|| FlushConfig {
            max_age_ms: flush.max_age_ms.unwrap_or(defaults.max_age_ms),
            max_rows: flush.max_rows.unwrap_or(defaults.max_rows),
            max_bytes: flush.max_bytes.unwrap_or(defaults.max_bytes),
        })
    }

    /// The declared unique key, if any.
    pub fn unique_key(&self) -> Option<KeySpec<'_>> {
        key_spec(&self.definition)
    }
}

/// The unique key `definition` declares, if any.
fn key_spec(definition: &TableDefinition) -> Option<KeySpec<'_>> {
    let columns = definition.spec.unique_key.as_slice();
    (!columns.is_empty()).then_some(KeySpec { created_at: definition.created_at, columns })
}

/// How far a declared `unique_key` is enforced (see [`crate::unique`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UniqueKeyScope {
    /// Across every process writing into the lake: each commit first reads the keys other
    /// writers committed since this process last looked, and leaves out its rows whose key
    /// is among them.
    #[default]
    Lake,
    /// Within this process only: commits read nothing of what others wrote, so the same key
    /// sent to two processes lands twice. For deployments that route each key to one
    /// process.
    Node,
}

/// Settings of [`Tables`].
#[derive(Debug, Clone)]
pub struct TablesConfig {
    /// Create unknown tables on first write, with a schema inferred from that write.
    pub auto_create: bool,
    /// Most keys the unique-key index of one table holds.
    pub unique_key_max: usize,
    /// How far unique keys are enforced.
    pub unique_key_scope: UniqueKeyScope,
    /// Where the plans of tables written to are kept on local disk (beside the write-ahead
    /// log), so that ingest goes on after a restart while storage is unreachable; `None`:
    /// not kept.
    pub snapshots: Option<PathBuf>,
}

impl Default for TablesConfig {
    fn default() -> Self {
        TablesConfig {
            auto_create: true,
            unique_key_max: 20_000_000,
            unique_key_scope: UniqueKeyScope::Lake,
            snapshots: None,
        }
    }
}

/// Ingest's view of the catalog's tables, shared by requests and file loads.
pub struct Tables {
    catalog: Arc<Catalog>,
    config: TablesConfig,
    plans: Mutex<HashMap<TableName, Arc<TablePlan>>>,
    /// Serialises auto-creates of one table within this process.
    create_locks: Mutex<HashMap<TableName, Arc<tokio::sync::Mutex<()>>>>,
    unique: UniqueKeys,
    /// Tables whose records from before a restart are not replayed yet.
    replaying: Mutex<HashSet<TableName>>,
    /// Plans kept on local disk.
    snapshots: Option<Snapshots>,
    /// What ingest reports to watchers (alarms).
    events: Events,
    /// What ingest did since the start, per table.
    stats: Arc<IngestStats>,
}

impl Tables {
    /// Tables of `catalog`.
    pub fn new(catalog: Arc<Catalog>, config: TablesConfig) -> Self {
        Tables {
            unique: UniqueKeys::new(config.unique_key_max),
            snapshots: config.snapshots.clone().map(Snapshots::new),
            catalog,
            config,
            plans: Mutex::new(HashMap::new()),
            create_locks: Mutex::new(HashMap::new()),
            replaying: Mutex::new(HashSet::new()),
            events: Events::default(),
            stats: Arc::new(IngestStats::default()),
        }
    }

    /// What ingest reports (failed files, rejected rows, refusals, failed maintenance).
    pub fn events(&self) -> &Events {
        &self.events
    }

    /// What ingest did since the start, per table (records, rejected rows, bytes, commits).
    pub fn stats(&self) -> &Arc<IngestStats> {
        &self.stats
    }

    /// The catalog.
    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// The settings in force.
    pub fn config(&self) -> &TablesConfig {
        &self.config
    }

    /// The unique-key indexes.
    pub fn unique_keys(&self) -> &UniqueKeys {
        &self.unique
    }

    /// The plan of `name` for the current revision of its definition. Crawled tables are
    /// refused: Tarn reads them, never writes them.
    ///
    /// While storage is unreachable, the plan last used (in memory, or kept on local disk
    /// before a restart) stands in, so records go on into the write-ahead log.
    pub async fn plan(&self, name: &TableName) -> Result<Arc<TablePlan>> {
        let definition = match self.catalog.definition(name).await {
            Ok(definition) => definition,
            Err(e) if e.kind() == ErrorKind::Unavailable => {
                return self.offline_plan(name).ok_or(e.into());
            }
            Err(e) => return Err(e.into()),
        };
        if let Some(external) = &definition.external {
            return Err(Error::Forbidden(format!(
                "table '{name}' is an external {} table over {} registered by the crawler; \
                 Tarn only reads it",
                external.format, external.url
            )));
        }
        if let Some(plan) = self.plans.lock().expect("plans").get(name) {
            if plan.definition.revision == definition.revision
                && plan.definition.created_at == definition.created_at
            {
                return Ok(plan.clone());
            }
        }
        let schema = match self.catalog.table_as_known(name).await {
            Ok(table) => table.schema()?,
            Err(e) if e.kind() == ErrorKind::Unavailable => {
                return self.offline_plan(name).ok_or(e.into());
            }
            Err(e) => return Err(e.into()),
        };
        let plan = Arc::new(make_plan(name, definition, schema)?);
        if let Some(snapshots) = &self.snapshots {
            snapshots.save(name, &plan.definition, &plan.schema);
        }
        self.keep(name, plan.clone());
        Ok(plan)
    }

    /// The plan to use while storage is unreachable: the one in memory, or the one kept on
    /// local disk.
    fn offline_plan(&self, name: &TableName) -> Option<Arc<TablePlan>> {
        if let Some(plan) = self.plans.lock().expect("plans").get(name) {
            return Some(plan.clone());
        }
        let (definition, schema) = self.snapshots.as_ref()?.load(name)?;
        let plan = Arc::new(make_plan(name, Arc::new(definition), schema).ok()?);
        tracing::info!(table = %name, "storage is unreachable: using the table's definition kept on local disk");
        self.keep(name, plan.clone());
        Some(plan)
    }

    fn keep(&self, name: &TableName, plan: Arc<TablePlan>) {
        let mut plans = self.plans.lock().expect("plans");
        if plans.len() >= 4096 {
            plans.clear();
        }
        plans.insert(name.clone(), plan);
    }

    /// The plan of `name` for a write: refused for tables Tarn keeps for another one
    /// (`_rejected`, `_raw`). An unknown table is created with the schema `infer` gives (awaited
    /// only then) when auto-create is on; the flag says whether this call created it.
    pub async fn plan_for_write(
        &self,
        name: &TableName,
        infer: impl std::future::Future<Output = Result<Schema>>,
    ) -> Result<(Arc<TablePlan>, bool)> {
        let (plan, created) = match self.plan(name).await {
            Ok(plan) => (plan, false),
            Err(Error::Catalog(tarn_catalog::Error::TableNotFound { .. }))
                if self.config.auto_create =>
            {
                self.create(name, &infer.await?).await?
            }
            Err(Error::Catalog(tarn_catalog::Error::TableNotFound { .. })) => {
                return Err(Error::TableNotFound { name: name.to_string() })
            }
            Err(e) => return Err(e),
        };
        if let Some(owner) = &plan.definition.owner {
            return Err(Error::Forbidden(format!(
                "table '{name}' is kept by Tarn for '{owner}'; only Tarn writes to it"
            )));
        }
        Ok((plan, created))
    }

    /// Creates `name` with `schema` (first write to an unknown table) and returns its plan;
    /// `false` when another request or server created it first.
    async fn create(&self, name: &TableName, schema: &Schema) -> Result<(Arc<TablePlan>, bool)> {
        // Requests racing to create the same table queue here; the first creates it.
        let lock = {
            let mut locks = self.create_locks.lock().expect("create locks");
            locks.retain(|_, lock| Arc::strong_count(lock) > 1);
            locks.entry(name.clone()).or_default().clone()
        };
        let _guard = lock.lock().await;
        let created = match self.catalog.create(name, schema, &[], "auto").await {
            Ok(_) => true,
            // Another request or server created it a moment ago: use theirs.
            Err(tarn_catalog::Error::TableExists { .. }) => false,
            Err(e) => return Err(e.into()),
        };
        Ok((self.plan(name).await?, created))
    }

    /// Marks `tables` as waiting for the replay of the write-ahead log: rows with unique keys
    /// are refused for them (by requests and file loads alike) until [`Tables::replayed`],
    /// since their index lacks the keys of the records waiting.
    pub(crate) fn replaying(&self, tables: impl IntoIterator<Item = TableName>) {
        self.replaying.lock().expect("replaying").extend(tables);
    }

    /// `table`'s waiting records are back in its buffer and their keys in its index.
    pub(crate) fn replayed(&self, table: &TableName) {
        self.replaying.lock().expect("replaying").remove(table);
    }

    /// Keeps the rows of `valid` whose unique key is new (in the table and in this batch) and
    /// adds their keys to the index; answers the rows to append, how many were duplicates,
    /// and the keys added (to give back with [`UniqueKeys::forget`] if the write fails).
    pub async fn admit(
        &self,
        plan: &TablePlan,
        valid: Vec<RecordBatch>,
    ) -> Result<(Vec<RecordBatch>, usize, Vec<u128>)> {
        let (Some(key), Some(contract)) = (plan.unique_key(), plan.contract.as_ref()) else {
            return Ok((valid, 0, Vec::new()));
        };
        if valid.iter().all(|b| b.num_rows() == 0) {
            return Ok((valid, 0, Vec::new()));
        }
        if self.replaying.lock().expect("replaying").contains(&plan.name) {
            return Err(Error::Replaying { table: plan.name.to_string() });
        }
        let table = self.catalog.table_as_known(&plan.name).await?;
        let batch = contract::concat(&contract.table_schema, &valid);
        let admission = self.unique.admit(&plan.name, key, &table, &batch).await?;
        let kept = if admission.duplicates == 0 {
            batch
        } else {
            filter_record_batch(&batch, &admission.keep).map_err(tarn_lake::Error::from)?
        };
        Ok((vec![kept], admission.duplicates, admission.added))
    }

    /// Appends `batches` (rows admitted by this process) to `table`, the latest version of
    /// `name` as `definition` describes it, as one commit with the application transaction
    /// `(app_id, version)`. For a table with a unique key, the rows whose key another writer
    /// committed first are left out ([`UniqueKeys::append`]). Answers the table at the new
    /// version (also kept by the catalog) and the rows left out.
    pub async fn append(
        &self,
        name: &TableName,
        definition: &TableDefinition,
        table: LakeTable,
        batches: Vec<RecordBatch>,
        app_id: &str,
        version: i64,
    ) -> Result<(LakeTable, usize)> {
        let (committed, dropped) = match key_spec(definition) {
            Some(key) => {
                let across = self.config.unique_key_scope == UniqueKeyScope::Lake;
                self.unique.append(name, key, table, batches, app_id, version, across).await?
            }
            None => (table.append_txn(batches, app_id, version).await?, 0),
        };
        self.catalog.remember(name, &committed);
        if dropped > 0 {
            self.stats.dropped(name, dropped as u64);
        }
        Ok((committed, dropped))
    }

    /// An earlier attempt to append `batches` to `name` committed after all (its answer was
    /// lost): their unique keys, if any, are settled.
    pub fn appended_earlier(
        &self,
        name: &TableName,
        definition: &TableDefinition,
        table: &LakeTable,
        batches: &[RecordBatch],
    ) {
        if let (Some(key), Ok(schema)) = (key_spec(definition), table.schema()) {
            self.unique.settled(name, key, &schema, batches);
        }
    }
}

/// The plan of `name` for `definition` over a Delta table of `schema`.
fn make_plan(
    name: &TableName,
    definition: Arc<TableDefinition>,
    schema: SchemaRef,
) -> Result<TablePlan> {
    let spec = &definition.spec;
    let contract = if spec.is_declared() { Some(Contract::compile(spec)?) } else { None };
    Ok(TablePlan {
        name: name.clone(),
        schema,
        json_columns: spec
            .columns
            .iter()
            .filter(|c| c.data_type == ColumnType::Json)
            .map(|c| c.name.clone())
            .collect(),
        rejected: if contract.is_some() { Some(companion::rejected_name(name)?) } else { None },
        raw: if spec.raw_backup { Some(companion::raw_name(name)?) } else { None },
        contract,
        definition: definition.clone(),
    })
}
