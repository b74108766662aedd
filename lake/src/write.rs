//! Writing the result of a query into a table as one commit: append, replace or merge.
//!
//! Scheduled jobs materialise their results this way. The rows stream from the query's plan
//! into Parquet files (no result is collected in memory first) and the files become visible in
//! exactly one Delta commit: readers see the table before or after, never a half-written or
//! empty table in between. A stopped write (a timeout, a killed process) leaves files no
//! commit references, as a replaced table's old files are no longer referenced; vacuum
//! deletes both once they are older than its retention.
//!
//! Each write may carry an application transaction (a Delta `txn` action, `(app_id,
//! version)`) so that a writer retrying after a failure can ask whether its earlier attempt
//! committed ([`LakeTable::txn_version`]) and never write the same thing twice.

use std::sync::Arc;

use deltalake::datafusion::execution::context::SessionState;
use deltalake::datafusion::execution::session_state::SessionStateBuilder;
use deltalake::datafusion::logical_expr::LogicalPlan;
use deltalake::datafusion::prelude::DataFrame;
use deltalake::delta_datafusion::planner::DeltaPlanner;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::Transaction;
use deltalake::operations::write::{SchemaMode, WriteBuilder};
use deltalake::protocol::SaveMode;

use crate::table::COMMIT_RETRIES;
use crate::{Error, LakeTable, Result};

/// How written rows meet the rows already in the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteMode {
    /// Add the rows; columns new to the table are added (nullable).
    Append,
    /// The rows become the whole table, in one commit; the table takes the rows' schema.
    Replace,
    /// Upsert by `key`: rows whose key is in the table replace that row, the others are
    /// added (a Delta MERGE).
    Merge {
        /// The key columns.
        key: Vec<String>,
    },
}

impl LakeTable {
    /// Writes the rows `plan` produces (planned in `session`) into the table as one commit,
    /// as `mode` says, with the application transaction `txn` recorded in the same commit.
    ///
    /// Returns the table at the new version and the rows written: the rows added for an
    /// append or a replace, the rows of the source for a merge.
    ///
    /// An empty result still commits for [`WriteMode::Replace`] (the table becomes empty, as
    /// the query said) and when `txn` is given (so that the transaction is recorded).
    pub async fn write_plan(
        self,
        plan: LogicalPlan,
        session: Arc<SessionState>,
        mode: &WriteMode,
        txn: Option<(&str, i64)>,
    ) -> Result<(LakeTable, Option<u64>)> {
        let mut properties = CommitProperties::default()
            .with_max_retries(COMMIT_RETRIES)
            .with_create_checkpoint(false);
        if let Some((app_id, version)) = txn {
            properties = properties.with_application_transaction(Transaction::new(app_id, version));
        }
        // deltalake plans its writes with its own extension nodes; the caller's session keeps
        // its settings, memory pool and tables, and gains deltalake's planner.
        let session = Arc::new(
            SessionStateBuilder::new_from_existing(session.as_ref().clone())
                .with_query_planner(DeltaPlanner::new())
                .build(),
        );
        let delta = self.into_delta();
        let snapshot = delta.snapshot().ok().map(|s| s.snapshot().clone());
        let (table, rows) = match mode {
            WriteMode::Append | WriteMode::Replace => {
                let (save, schema) = match mode {
                    WriteMode::Replace => (SaveMode::Overwrite, SchemaMode::Overwrite),
                    _ => (SaveMode::Append, SchemaMode::Merge),
                };
                let table = WriteBuilder::new(delta.log_store(), snapshot)
                    .with_input_plan(plan)
                    .with_session_state(session)
                    .with_writer_properties(crate::maintenance::append_writer())
                    .with_save_mode(save)
                    .with_schema_mode(schema)
                    .with_commit_properties(properties)
                    .await?;
                let table = LakeTable::new(table);
                let rows = table.history(1).await?.first().and_then(|c| c.rows_added);
                return Ok((table, rows));
            }
            WriteMode::Merge { key } => {
                if key.is_empty() {
                    return Err(Error::SchemaMismatch("a merge needs key columns".into()));
                }
                let columns: Vec<String> =
                    plan.schema().fields().iter().map(|f| f.name().clone()).collect();
                if let Some(missing) = key.iter().find(|k| !columns.contains(k)) {
                    return Err(Error::SchemaMismatch(format!(
                        "the merge key column '{missing}' is not in the rows written (they have {})",
                        columns.join(", ")
                    )));
                }
                let predicate = key
                    .iter()
                    .map(|k| format!("target.{q} = source.{q}", q = quote(k)))
                    .collect::<Vec<_>>()
                    .join(" AND ");
                let source = DataFrame::new(session.as_ref().clone(), plan);
                let (table, metrics) = delta
                    .merge(source, predicate)
                    .with_source_alias("source")
                    .with_target_alias("target")
                    .with_session_state(session)
                    .with_writer_properties(crate::maintenance::append_writer())
                    .with_merge_schema(true)
                    .with_commit_properties(properties)
                    .when_matched_update(|update| {
                        columns
                            .iter()
                            .fold(update, |u, c| u.update(quote(c), format!("source.{}", quote(c))))
                    })?
                    .when_not_matched_insert(|insert| {
                        columns
                            .iter()
                            .fold(insert, |i, c| i.set(quote(c), format!("source.{}", quote(c))))
                    })?
                    .await?;
                (table, Some(metrics.num_source_rows as u64))
            }
        };
        Ok((LakeTable::new(table), rows))
    }
}

/// A column name as a quoted SQL identifier.
fn quote(column: &str) -> String {
    format!("\"{}\"", column.replace('"', "\"\""))
}
