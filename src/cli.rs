//! Subcommands that work on the lake directly, without a server.

use std::sync::Arc;

use anyhow::Context;
use arrow::util::pretty::pretty_format_batches;
use futures::StreamExt;
use tarn_catalog::Catalog;
use tarn_lake::{Lake, LakeOptions};
use tarn_query::{QueryConfig, QueryEngine};

use crate::config::SqlArgs;

/// `tarn sql "SELECT ..."`: runs the query embedded and prints an aligned table, stopping after
/// `--max-rows` rows.
pub async fn sql(args: &SqlArgs) -> anyhow::Result<()> {
    let lake = Lake::open(&args.lake.lake, LakeOptions::default())
        .await
        .with_context(|| format!("cannot open the lake at {}", args.lake.lake))?;
    let engine = QueryEngine::new(
        Arc::new(Catalog::new(Arc::new(lake))),
        QueryConfig::default(),
    );
    let mut stream = engine
        .execute(&args.sql)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
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
