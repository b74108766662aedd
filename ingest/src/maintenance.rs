//! Background table maintenance: compaction, checkpoints and vacuum, decided after each commit.
//!
//! Frequent small commits (one a second per busy table) leave many small Parquet files and a
//! long JSON log. After each commit of a table, [`Maintenance`] checks, from the table state
//! it already has in memory:
//!
//! * compaction — when `compact_min_files` files are smaller than `small_file_bytes`, they are
//!   packed into files of about `target_file_bytes` (Delta `OPTIMIZE`, bin-packing): files of
//!   large row groups (busy tables) by copying their row groups as they are, the others
//!   rewritten, sorted by the table's `cluster_by` columns when it declares them (see
//!   [`LakeTable::optimize`]);
//! * checkpoint — every `checkpoint_every` commits (and after a compaction);
//! * vacuum — every `vacuum_every_secs`, files unreferenced for longer than
//!   `vacuum_retention_hours` are deleted.
//!
//! One maintenance run per table at a time, in the background; queries and ingest go on
//! meanwhile (readers see either the old or the new files, never a mix). Each step is logged
//! and counted: `tarn_maintenance_runs_total{table, step}` (`compact`, `checkpoint`, `vacuum`)
//! with `tarn_maintenance_duration_seconds{step}`, `tarn_compaction_files_rewritten_total`,
//! `tarn_vacuum_files_deleted_total` and `tarn_maintenance_failures_total` by table.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tarn_catalog::{Catalog, TableName};
use tarn_lake::LakeTable;

/// When maintenance runs.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct MaintenanceConfig {
    /// Run maintenance at all.
    pub enabled: bool,
    /// Compact when at least this many files are small.
    pub compact_min_files: usize,
    /// Files below this size count as small.
    pub small_file_bytes: u64,
    /// Size of the files compaction writes.
    pub target_file_bytes: u64,
    /// Write a checkpoint every this many commits.
    pub checkpoint_every: u64,
    /// Vacuum deletes unreferenced files older than this.
    pub vacuum_retention_hours: u64,
    /// How often to vacuum a table that receives commits.
    pub vacuum_every_secs: u64,
}

impl Default for MaintenanceConfig {
    fn default() -> Self {
        MaintenanceConfig {
            enabled: true,
            compact_min_files: 32,
            small_file_bytes: 16 * 1024 * 1024,
            target_file_bytes: 128 * 1024 * 1024,
            checkpoint_every: 50,
            vacuum_retention_hours: 7 * 24,
            vacuum_every_secs: 3600,
        }
    }
}

struct TableState {
    commits: u64,
    last_vacuum: Instant,
    running: bool,
}

/// What one run does.
#[derive(Debug, Clone, Copy, Default)]
struct Plan {
    compact: bool,
    checkpoint: bool,
    vacuum: bool,
}

/// Schedules maintenance after commits.
pub struct Maintenance {
    catalog: Arc<Catalog>,
    config: MaintenanceConfig,
    events: crate::Events,
    tables: Mutex<HashMap<TableName, TableState>>,
}

impl Maintenance {
    /// Maintenance over `catalog`'s tables; failures are reported on `events`.
    pub fn new(catalog: Arc<Catalog>, config: MaintenanceConfig, events: crate::Events) -> Self {
        Maintenance { catalog, config, events, tables: Mutex::new(HashMap::new()) }
    }

    /// Called after each commit of `name` (at `table`'s new version); starts a background run
    /// when something is due and none is running for this table.
    pub fn after_commit(self: &Arc<Self>, name: &TableName, table: &LakeTable) {
        if !self.config.enabled {
            return;
        }
        let plan = {
            let mut tables = self.tables.lock().expect("maintenance state");
            let state = tables.entry(name.clone()).or_insert_with(|| TableState {
                commits: 0,
                last_vacuum: Instant::now(),
                running: false,
            });
            state.commits += 1;
            if state.running {
                return;
            }
            let plan = Plan {
                compact: table.small_files(self.config.small_file_bytes)
                    >= self.config.compact_min_files,
                checkpoint: state.commits >= self.config.checkpoint_every,
                vacuum: state.last_vacuum.elapsed()
                    >= Duration::from_secs(self.config.vacuum_every_secs),
            };
            if !(plan.compact || plan.checkpoint || plan.vacuum) {
                return;
            }
            state.running = true;
            if plan.checkpoint || plan.compact {
                state.commits = 0;
            }
            if plan.vacuum {
                state.last_vacuum = Instant::now();
            }
            plan
        };
        let this = self.clone();
        let name = name.clone();
        tokio::spawn(async move {
            if let Err(e) = this.run(&name, plan).await {
                metrics::counter!("tarn_maintenance_failures_total", "table" => name.to_string())
                    .increment(1);
                tracing::warn!(table = %name, error = %e, "maintenance failed; it runs again after a later commit");
                this.events.emit(crate::IngestEvent::MaintenanceFailed {
                    table: name.clone(),
                    error: e.to_string(),
                });
            }
            if let Some(state) = this.tables.lock().expect("maintenance state").get_mut(&name) {
                state.running = false;
            }
        });
    }

    async fn run(&self, name: &TableName, plan: Plan) -> Result<(), tarn_catalog::Error> {
        let (definition, mut table) = self.catalog.open(name).await?;
        if plan.compact {
            let started = Instant::now();
            let cluster_by = &definition.spec.cluster_by;
            let (compacted, report) =
                table.optimize(self.config.target_file_bytes, cluster_by).await?;
            table = compacted;
            step_done(name, "compact", started);
            metrics::counter!("tarn_compaction_files_rewritten_total", "table" => name.to_string())
                .increment(report.files_removed);
            tracing::info!(
                table = %name,
                files_before = report.files_before,
                files_after = report.files_after,
                rewritten = report.files_removed,
                written = report.files_added,
                version = report.version,
                sorted_by = %cluster_by.join(","),
                ms = started.elapsed().as_millis() as u64,
                "compacted small files"
            );
        }
        if plan.checkpoint || plan.compact {
            let started = Instant::now();
            table.checkpoint().await?;
            step_done(name, "checkpoint", started);
            tracing::info!(table = %name, version = table.version(), "wrote a checkpoint");
        }
        if plan.vacuum {
            let started = Instant::now();
            let retention = Duration::from_secs(self.config.vacuum_retention_hours * 3600);
            let (vacuumed, report) = table.vacuum(retention, false).await?;
            table = vacuumed;
            step_done(name, "vacuum", started);
            metrics::counter!("tarn_vacuum_files_deleted_total", "table" => name.to_string())
                .increment(report.files.len() as u64);
            tracing::info!(
                table = %name,
                deleted = report.files.len(),
                retention_hours = self.config.vacuum_retention_hours,
                "vacuumed unreferenced files"
            );
        }
        self.catalog.remember(name, &table);
        Ok(())
    }
}

/// Counts a maintenance step of `table` that succeeded, and its duration.
fn step_done(table: &TableName, step: &'static str, started: Instant) {
    metrics::counter!("tarn_maintenance_runs_total", "table" => table.to_string(), "step" => step)
        .increment(1);
    metrics::histogram!("tarn_maintenance_duration_seconds", "step" => step)
        .record(started.elapsed());
}
