//! Subcommands that work on the lake directly, without a server.

use std::sync::Arc;

use anyhow::Context;
use arrow::util::pretty::pretty_format_batches;
use futures::StreamExt;
use tarn_catalog::{Catalog, TableName};
use tarn_lake::{Lake, LakeOptions};
use tarn_query::{QueryConfig, QueryEngine};

use crate::config::{LakeArgs, OptimizeArgs, SqlArgs, VacuumArgs};

async fn catalog(lake: &LakeArgs) -> anyhow::Result<Catalog> {
    let opened = Lake::open(&lake.lake, LakeOptions::default())
        .await
        .with_context(|| format!("cannot open the lake at {}", lake.lake))?;
    Ok(Catalog::new(Arc::new(opened)))
}

/// `tarn optimize TABLE`: compacts small files now and prints what it did.
pub async fn optimize(args: &OptimizeArgs) -> anyhow::Result<()> {
    let catalog = catalog(&args.lake).await?;
    let name = TableName::parse(&args.table)?;
    let (_, table) = catalog.open(&name).await?;
    let started = std::time::Instant::now();
    let (table, report) = table.optimize(args.target_file_bytes).await?;
    table.checkpoint().await?;
    println!(
        "{name}: {} files -> {} ({} rewritten into {}), version {}, checkpoint written, {:.1} s",
        report.files_before,
        report.files_after,
        report.files_removed,
        report.files_added,
        report.version,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `tarn vacuum TABLE`: deletes unreferenced files older than the retention.
pub async fn vacuum(args: &VacuumArgs) -> anyhow::Result<()> {
    let catalog = catalog(&args.lake).await?;
    let name = TableName::parse(&args.table)?;
    let (_, table) = catalog.open(&name).await?;
    let retention = std::time::Duration::from_secs(args.retention_hours * 3600);
    let (_, report) = table.vacuum(retention, args.dry_run).await?;
    for file in &report.files {
        println!("{file}");
    }
    let verb = if args.dry_run { "would delete" } else { "deleted" };
    println!("{name}: {verb} {} files older than {} h", report.files.len(), args.retention_hours);
    Ok(())
}

/// `tarn sql "SELECT ..."`: runs the query embedded and prints an aligned table, stopping after
/// `--max-rows` rows.
pub async fn sql(args: &SqlArgs) -> anyhow::Result<()> {
    let engine = QueryEngine::new(Arc::new(catalog(&args.lake).await?), QueryConfig::default());
    let mut stream = engine.execute(&args.sql).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let schema = stream.schema();
    let (mut batches, mut rows, mut truncated) = (Vec::new(), 0usize, false);
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(|e| anyhow::anyhow!("{e}"))?;
        if rows + batch.num_rows() > args.max_rows {
            batches.push(batch.slice(0, args.max_rows - rows));
            rows = args.max_rows;
            truncated = true;
            break;
        }
        rows += batch.num_rows();
        batches.push(batch);
    }
    if batches.is_empty() {
        batches.push(arrow::array::RecordBatch::new_empty(schema));
    }
    println!("{}", pretty_format_batches(&batches)?);
    if truncated {
        println!("(stopped after {rows} rows; raise --max-rows or use LIMIT)");
    } else {
        println!("({rows} row{})", if rows == 1 { "" } else { "s" });
    }
    Ok(())
}
