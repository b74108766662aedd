//! Subcommands that work on the lake directly, without a server.

use std::sync::Arc;

use anyhow::Context;
use arrow::util::pretty::pretty_format_batches;
use futures::StreamExt;
use tarn_catalog::{Catalog, TableName};
use tarn_lake::{Lake, LakeOptions};
use tarn_query::{QueryConfig, QueryEngine};

use crate::config::{
    CrawlArgs, KeyArgs, KeyCommand, LakeArgs, LoadArgs, OptimizeArgs, SqlArgs, VacuumArgs,
    WorkerArgs,
};

pub(crate) async fn catalog(lake: &LakeArgs) -> anyhow::Result<Catalog> {
    let opened = Lake::open(&lake.lake, LakeOptions::default())
        .await
        .with_context(|| format!("cannot open the lake at {}", lake.lake))?;
    Ok(Catalog::new(Arc::new(opened)))
}

/// `tarn worker`: runs query stages for serving nodes until SIGINT or SIGTERM.
pub async fn worker(args: &WorkerArgs) -> anyhow::Result<()> {
    let lake = Lake::open(&args.lake.lake, LakeOptions::default())
        .await
        .with_context(|| format!("cannot open the lake at {}", args.lake.lake))?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {} (--listen)", args.listen))?;
    let config = QueryConfig {
        memory_limit: args.query_memory_bytes,
        spill_dir: args.query_spill_dir.clone(),
        ..QueryConfig::default()
    };
    tracing::info!(lake = %args.lake.lake, "Tarn worker serving query stages on {}", args.listen);
    tarn_query::cluster::serve_worker(
        Arc::new(lake),
        &config,
        &args.cluster_secret,
        listener,
        crate::server::shutdown_signal(),
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    tracing::info!("Tarn worker stopped");
    Ok(())
}

/// `tarn optimize TABLE`: compacts small files now and prints what it did.
pub async fn optimize(args: &OptimizeArgs) -> anyhow::Result<()> {
    let catalog = catalog(&args.lake).await?;
    let name = TableName::parse(&args.table)?;
    let (definition, table) = catalog.open(&name).await?;
    refuse_external(&definition, "optimize")?;
    let started = std::time::Instant::now();
    let (table, report) =
        table.optimize(args.target_file_bytes, &definition.spec.cluster_by).await?;
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

/// Maintenance rewrites and deletes files: never on data Tarn does not own.
fn refuse_external(definition: &tarn_catalog::TableDefinition, what: &str) -> anyhow::Result<()> {
    if let Some(external) = &definition.external {
        anyhow::bail!(
            "table '{}' is an external {} table over {}, registered by the crawler; Tarn does not \
             {what} data it does not own",
            definition.name(),
            external.format,
            external.url
        );
    }
    Ok(())
}

/// `tarn vacuum TABLE`: deletes unreferenced files older than the retention.
pub async fn vacuum(args: &VacuumArgs) -> anyhow::Result<()> {
    let catalog = catalog(&args.lake).await?;
    let name = TableName::parse(&args.table)?;
    let (definition, table) = catalog.open(&name).await?;
    refuse_external(&definition, "vacuum")?;
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
    let engine = QueryEngine::new(Arc::new(catalog(&args.lake).await?), QueryConfig::default())?;
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

/// `tarn load FILE... --table T`: loads files into a table with its contract, showing progress,
/// and prints a summary per file and in total.
pub async fn load(args: &LoadArgs) -> anyhow::Result<()> {
    use tarn_ingest::{LoadConfig, Loader, Tables, TablesConfig};
    let catalog = Arc::new(catalog(&args.lake).await?);
    let explicit = args.config != std::path::Path::new("tarn.toml");
    let file_config = crate::config::FileConfig::read(&args.config, explicit)?;
    crate::server::apply_tables(&catalog, &file_config.tables).await?;
    let name = TableName::parse(&args.table)?;
    // Loads commit straight to Delta: no write-ahead log, only the catalog.
    let tables =
        TablesConfig { unique_key_scope: args.unique_key_scope, ..TablesConfig::default() };
    let tables = Arc::new(Tables::new(catalog.clone(), tables));
    let spool = tempfile::tempdir()?;
    let config = LoadConfig { spool_dir: spool.path().join("spool"), max_upload_bytes: u64::MAX };
    let loader = Loader::new(tables, config);
    load_files(args, &catalog, &loader, &name).await
}

/// Loads each file of `args` into `name`, printing a summary per file and in total.
async fn load_files(
    args: &LoadArgs,
    catalog: &Catalog,
    loader: &tarn_ingest::Loader,
    name: &TableName,
) -> anyhow::Result<()> {
    use tarn_ingest::{FileFormat, FileLoad, LoadProgress, Source};
    let forced = match &args.format {
        Some(f) => Some(FileFormat::parse(f).ok_or_else(|| {
            anyhow::anyhow!("--format {f} is not one of csv, ndjson, json, parquet")
        })?),
        None => None,
    };
    let (mut rows, mut rejected, mut duplicates, mut bytes) = (0u64, 0u64, 0u64, 0u64);
    let started = std::time::Instant::now();
    for file in &args.files {
        let format = forced.or_else(|| FileFormat::from_name(file)).ok_or_else(|| {
            anyhow::anyhow!("cannot tell the format of {file}: name it .csv, .ndjson, .json or .parquet, or pass --format")
        })?;
        let (local, identity, _download) = local_copy(catalog, file).await?;
        let size = std::fs::metadata(&local)?.len();
        let progress = Arc::new(LoadProgress::default());
        let bar = (!args.quiet).then(|| progress_bar(file, size));
        let ticker = bar.clone().map(|bar| {
            let progress = progress.clone();
            tokio::spawn(async move {
                loop {
                    bar.set_position(progress.bytes.load(std::sync::atomic::Ordering::Relaxed));
                    bar.set_message(format!(
                        "{} records",
                        progress.records.load(std::sync::atomic::Ordering::Relaxed)
                    ));
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            })
        });
        // The same file loaded again (same path, size and time) resumes instead of doubling.
        let load_id = format!("cli-{}", tarn_ingest::load_id_for(&format!("{name}|{identity}")));
        tracing::debug!(%load_id, %identity, "loading a file");
        let file_name = std::path::Path::new(file)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| file.clone());
        let report = loader
            .load_file(FileLoad {
                table: name.clone(),
                path: local.clone(),
                format,
                load_id,
                source: Source::File(file_name),
                progress,
                raw_object: None,
            })
            .await;
        if let Some(ticker) = ticker {
            ticker.abort();
        }
        if let Some(bar) = &bar {
            bar.finish_and_clear();
        }
        let report = report.map_err(|e| anyhow::anyhow!("{file}: {e}"))?;
        println!(
            "{file}: {} rows loaded into {}, {} rejected, {} duplicates, {:.1} MB in {:.1} s ({:.0} rows/s){}",
            report.rows,
            report.table,
            report.rejected,
            report.duplicates,
            report.bytes as f64 / 1e6,
            report.seconds,
            report.rows_per_second(),
            if report.skipped_chunks > 0 {
                format!(", {} chunks already loaded by an earlier attempt", report.skipped_chunks)
            } else {
                String::new()
            }
        );
        for error in &report.errors {
            println!("  rejected: {error}");
        }
        rows += report.rows;
        rejected += report.rejected;
        duplicates += report.duplicates;
        bytes += report.bytes;
    }
    if args.files.len() > 1 {
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "total: {rows} rows loaded, {rejected} rejected, {duplicates} duplicates, {:.1} MB in {seconds:.1} s ({:.0} rows/s)",
            bytes as f64 / 1e6,
            (rows + rejected + duplicates) as f64 / seconds.max(1e-9)
        );
    }
    Ok(())
}

fn progress_bar(file: &str, size: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(size);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {msg} eta {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_prefix(file.to_string());
    bar
}

/// A local path for `file` and what identifies that version of it (path, size, modification
/// time): the file itself, or for `s3://bucket/key` a downloaded copy (kept alive by the
/// returned guard).
async fn local_copy(
    catalog: &Catalog,
    file: &str,
) -> anyhow::Result<(std::path::PathBuf, String, Option<tempfile::TempDir>)> {
    let Some(rest) = file.strip_prefix("s3://") else {
        let meta = std::fs::metadata(file).with_context(|| format!("cannot read {file}"))?;
        let identity = format!("{file}|{}|{:?}", meta.len(), meta.modified().ok());
        return Ok((std::path::PathBuf::from(file), identity, None));
    };
    let (bucket, key) = rest
        .split_once('/')
        .ok_or_else(|| anyhow::anyhow!("{file}: an S3 file is s3://bucket/key"))?;
    let lake = Lake::open(
        &format!("s3://{bucket}"),
        LakeOptions { storage: catalog.lake().storage_options().clone() },
    )
    .await?;
    let dir = tempfile::tempdir()?;
    let name = key.rsplit('/').next().unwrap_or("file");
    let local = dir.path().join(name);
    let meta = lake
        .download(&object_store::path::Path::from(key), &local)
        .await
        .with_context(|| format!("cannot read {file}"))?;
    let identity = format!("{file}|{}|{}|{:?}", meta.size, meta.last_modified, meta.e_tag);
    Ok((local, identity, Some(dir)))
}

/// `tarn crawl LOCATION`: registers the tables found under a directory or S3 prefix and
/// prints one aligned line per table (and the places skipped, with why).
pub async fn crawl(args: &CrawlArgs) -> anyhow::Result<()> {
    use tarn_catalog::{CrawlFrom, CrawlOptions, Crawler};
    let catalog = catalog(&args.lake).await?;
    let crawler = Crawler::new(&catalog);
    let location = crawler.location(&args.location, CrawlFrom::CommandLine)?;
    let options = CrawlOptions {
        namespace: args.namespace.trim().to_ascii_lowercase(),
        table_prefix: args.table_prefix.trim().to_ascii_lowercase(),
    };
    let report = crawler.crawl(&location, &options).await?;
    print!("{}", crawl_summary(&report));
    Ok(())
}

/// The aligned text `tarn crawl` prints.
pub fn crawl_summary(report: &tarn_catalog::CrawlReport) -> String {
    use std::fmt::Write as _;
    let header = ["TABLE", "FORMAT", "PARTITION COLUMNS", "COLUMNS", "FILES", "STATUS", "LOCATION"];
    let rows: Vec<[String; 7]> = report
        .tables
        .iter()
        .map(|t| {
            let partitions = if t.partition_columns.is_empty() {
                "-".to_string()
            } else if t.partitions > 0 {
                format!("{} ({} partitions)", t.partition_columns.join(", "), t.partitions)
            } else {
                t.partition_columns.join(", ")
            };
            [
                t.qualified_name(),
                t.format.to_string(),
                partitions,
                t.columns.to_string(),
                t.files.to_string(),
                format!("{:?}", t.status).to_lowercase(),
                t.location.clone(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &[&str]| {
        let mut out = String::new();
        for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                let _ = write!(out, "{cell:<width$}  ");
            }
        }
        out.push('\n');
        out
    };
    let mut out = format!("crawled {}\n", report.location);
    out.push_str(&line(&header));
    for (row, table) in rows.iter().zip(&report.tables) {
        out.push_str(&line(&row.each_ref().map(String::as_str)));
        for change in &table.changes {
            let _ = writeln!(out, "  {}: {change}", table.qualified_name());
        }
    }
    for skipped in &report.skipped {
        let _ = writeln!(out, "skipped {}: {}", skipped.location, skipped.reason);
    }
    let count =
        |s: tarn_catalog::DefineStatus| report.tables.iter().filter(|t| t.status == s).count();
    let _ = writeln!(
        out,
        "({} table{}: {} created, {} updated, {} unchanged; {} skipped)",
        report.tables.len(),
        if report.tables.len() == 1 { "" } else { "s" },
        count(tarn_catalog::DefineStatus::Created),
        count(tarn_catalog::DefineStatus::Updated),
        count(tarn_catalog::DefineStatus::Unchanged),
        report.skipped.len()
    );
    out
}

/// `tarn key new|hash`.
pub fn key(args: &KeyArgs) -> anyhow::Result<()> {
    match &args.command {
        KeyCommand::New { name, scopes, publishable, origins } => {
            let prefix = if *publishable { "pk" } else { "tk" };
            let secret = format!(
                "{prefix}_{}{}",
                uuid::Uuid::new_v4().simple(),
                uuid::Uuid::new_v4().simple()
            );
            let spec = tarn_catalog::auth::KeySpec {
                name: name.clone(),
                hash: tarn_catalog::auth::hash_secret(&secret),
                scopes: scopes.clone(),
                publishable: *publishable,
                allowed_origins: origins.clone(),
                rate_limit: None,
            };
            tarn_catalog::auth::KeyRing::new(std::slice::from_ref(&spec))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("# The key (shown once; Tarn keeps only its hash):\n# {secret}\n");
            println!("[[keys]]");
            println!("name = {}", toml_string(name));
            println!("hash = \"{}\"", spec.hash);
            let scopes: Vec<String> = scopes.iter().map(|s| toml_string(s)).collect();
            println!("scopes = [{}]", scopes.join(", "));
            if *publishable {
                println!("publishable = true");
                let origins: Vec<String> = origins.iter().map(|s| toml_string(s)).collect();
                println!("allowed_origins = [{}]", origins.join(", "));
            }
        }
        KeyCommand::Hash { key } => println!("{}", tarn_catalog::auth::hash_secret(key)),
    }
    Ok(())
}

fn toml_string(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialize")
}
