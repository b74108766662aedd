//! Writing a run's result: into a table (one Delta commit with a `txn` naming job and run) or
//! as exported files (written under a temporary name, then published with `_SUCCESS`).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use futures::TryStreamExt;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};
use tarn_catalog::{Catalog, TableName};
use tarn_lake::WriteMode;
use tarn_query::{QueryEngine, Trailer};
use tokio::io::AsyncWriteExt;

use crate::spec::{ExportFormat, ExportLocation, Job};
use crate::{Error, Result};

/// What an attempt wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    /// Rows written, when known.
    pub rows: Option<u64>,
    /// `table@vN`, or the export's location.
    pub output: String,
    /// True when an earlier attempt had written it already and this one wrote nothing.
    pub already: bool,
}

/// Which run an attempt belongs to.
#[derive(Debug, Clone)]
pub struct RunRef {
    /// The run's id.
    pub run_id: String,
    /// Its occurrence.
    pub scheduled_for: DateTime<Utc>,
    /// The attempt.
    pub attempt: u32,
}

/// The owner recorded for a table a job created.
pub fn owner_of(job: &str) -> String {
    format!("job:{job}")
}

/// The Delta application id of a run's writes: names job and run, so a retried or repeated
/// attempt finds that the run wrote already.
fn app_id(job: &str, run_id: &str) -> String {
    format!("tarn-job:{job}:{run_id}")
}

/// Runs the job's query and writes its result into `table` as one commit.
pub async fn write_table(
    engine: &QueryEngine,
    catalog: &Catalog,
    job: &Job,
    run: &RunRef,
    name: &TableName,
    mode: &WriteMode,
) -> Result<Written> {
    let owner = owner_of(&job.name);
    let query = engine.plan_logical(&job.spec.sql).await?;
    let output_error = |reason: String| Error::Output { job: job.name.clone(), reason };
    let table = match catalog.open(name).await {
        Ok((definition, table)) => {
            if definition.owner.as_deref() != Some(owner.as_str()) {
                return Err(output_error(format!(
                    "table '{name}' exists and is not this job's output (a job writes only into \
                     tables it created); name a new table, or drop '{name}' first"
                )));
            }
            table
        }
        Err(tarn_catalog::Error::TableNotFound { .. }) => {
            let schema = query.plan.schema().as_arrow().clone();
            match catalog.create_owned(name, &schema, &owner).await {
                Ok((_, table)) => table,
                Err(tarn_catalog::Error::TableExists { .. }) => catalog.open(name).await?.1,
                Err(e) => return Err(e.into()),
            }
        }
        Err(e) => return Err(e.into()),
    };
    let app = app_id(&job.name, &run.run_id);
    if table.txn_version(&app).await?.is_some() {
        return Ok(Written {
            rows: None,
            output: format!("{name}@v{}", table.version()),
            already: true,
        });
    }
    let session = Arc::new(query.ctx.state());
    let (table, rows) = table
        .write_plan(query.plan, session, mode, Some((&app, 1)))
        .await
        .map_err(|e| match e {
            tarn_lake::Error::SchemaMismatch(reason) => output_error(reason),
            // The query failed while its rows were written (a division by zero, a bad cast):
            // said as the query's error, not as a storage one.
            tarn_lake::Error::Delta(tarn_lake::deltalake::DeltaTableError::Arrow { source }) => {
                Error::Query(tarn_query::Error::from(
                    tarn_lake::deltalake::datafusion::error::DataFusionError::from(source),
                ))
            }
            e => e.into(),
        })?;
    catalog.remember(name, &table);
    Ok(Written { rows, output: format!("{name}@v{}", table.version()), already: false })
}

/// What `_SUCCESS` holds: which run published the files.
#[derive(Debug, Serialize, Deserialize)]
struct Success {
    job: String,
    run_id: String,
    rows: u64,
    files: Vec<String>,
    published_at: DateTime<Utc>,
}

/// The location with its placeholders filled in.
pub fn resolve(template: &str, job: &str, run: &RunRef, timezone: Tz) -> String {
    let date = run.scheduled_for.with_timezone(&timezone).format("%Y-%m-%d").to_string();
    template.replace("{date}", &date).replace("{job}", job).replace("{run_id}", &run.run_id)
}

/// Runs the job's query and writes its result as one file at the export location: first
/// under `_temporary/`, then copied to `part-00000.<ext>` beside a `_SUCCESS` marker that
/// names the run. Files of an earlier export at the same place are replaced.
pub async fn export(
    engine: &QueryEngine,
    catalog: &Catalog,
    job: &Job,
    run: &RunRef,
    location: &ExportLocation,
    format: ExportFormat,
) -> Result<Written> {
    let zone: Tz = job.schedule.timezone().parse().unwrap_or(chrono_tz::UTC);
    let (store, base, shown) = match location {
        ExportLocation::Lake(path) => {
            let path = resolve(path, &job.name, run, zone);
            refuse_table_folder(catalog, job, &path).await?;
            let shown = format!("{}{}", catalog.lake().url(), path.trim_start_matches('/'));
            (catalog.lake().store().clone(), Path::from(path.as_str()), shown)
        }
        ExportLocation::S3 { bucket, prefix } => {
            let prefix = resolve(prefix, &job.name, run, zone);
            let url = url::Url::parse(&format!("s3://{bucket}/"))
                .map_err(|e| Error::InvalidJob(format!("export.location: {e}")))?;
            let store = catalog.lake().store_for_url(&url)?;
            (store, Path::from(prefix.as_str()), format!("s3://{bucket}/{prefix}"))
        }
    };
    let marker = base.clone().join("_SUCCESS");
    let previous = read_success(store.as_ref(), &marker).await?;
    if let Some(success) = &previous {
        if success.job == job.name && success.run_id == run.run_id {
            return Ok(Written { rows: Some(success.rows), output: shown, already: true });
        }
    }
    let file = format!("part-00000.{}", format.extension());
    let temporary = base.clone().join("_temporary").join(format!("{}-{}", run.run_id, run.attempt));
    let staged = temporary.join(file.as_str());
    let rows = match write_file(engine, &job.spec.sql, store.clone(), &staged, format).await {
        Ok(rows) => rows,
        Err(e) => {
            let _ = delete_quietly(store.as_ref(), &staged).await;
            return Err(e);
        }
    };
    // Publish: the old marker goes first (readers never see a marker over other files), the
    // parts an earlier export of Tarn published there go (only those its marker names: other
    // files are left alone), the new file takes its name, and the marker says which run it is.
    delete_quietly(store.as_ref(), &marker).await?;
    for old in previous.iter().flat_map(|s| &s.files).filter(|f| **f != file) {
        if old.starts_with("part-") && !old.contains('/') {
            delete_quietly(store.as_ref(), &base.clone().join(old.as_str())).await?;
        }
    }
    store.copy(&staged, &base.clone().join(file.as_str())).await?;
    let success = Success {
        job: job.name.clone(),
        run_id: run.run_id.clone(),
        rows,
        files: vec![file],
        published_at: Utc::now(),
    };
    let body = serde_json::to_vec_pretty(&success).map_err(|e| Error::Document(e.to_string()))?;
    store.put(&marker, PutPayload::from(body)).await?;
    delete_quietly(store.as_ref(), &staged).await?;
    Ok(Written { rows: Some(rows), output: shown, already: false })
}

/// Refuses an export into a table's folder (`<namespace>/<table>/…`) or any Delta table's:
/// the files there are the table's.
async fn refuse_table_folder(catalog: &Catalog, job: &Job, path: &str) -> Result<()> {
    let refuse = |what: String| Error::Output {
        job: job.name.clone(),
        reason: format!("export.location '{path}' is inside {what}; export somewhere else"),
    };
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if let [namespace, table, ..] = segments.as_slice() {
        if let Ok(name) = TableName::stored(namespace, table) {
            match catalog.definition(&name).await {
                Ok(_) => return Err(refuse(format!("the folder of table '{name}'"))),
                Err(tarn_catalog::Error::TableNotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    let store = catalog.lake().store();
    let mut prefix = Path::default();
    for segment in segments {
        prefix = prefix.join(segment);
        let log = prefix.clone().join("_delta_log");
        if !store.list_with_delimiter(Some(&log)).await?.objects.is_empty() {
            return Err(refuse(format!("the Delta table at '{prefix}'")));
        }
    }
    Ok(())
}

/// Streams the query's result into one file; bounded memory whatever its size.
async fn write_file(
    engine: &QueryEngine,
    sql: &str,
    store: Arc<dyn ObjectStore>,
    path: &Path,
    format: ExportFormat,
) -> Result<u64> {
    let planned = engine.plan(sql).await?;
    let mut stream = planned.execute()?;
    let schema = stream.schema();
    let mut encoder = format.output().encoder(schema.clone());
    let mut writer = BufWriter::new(store, path.clone());
    let mut rows = 0u64;
    let written: Result<()> = async {
        writer.write_all(&encoder.begin(&schema)?).await.map_err(io_error)?;
        while let Some(batch) = stream.try_next().await.map_err(tarn_query::Error::from)? {
            rows += batch.num_rows() as u64;
            writer.write_all(&encoder.batch(&batch)?).await.map_err(io_error)?;
        }
        writer.write_all(&encoder.finish(&Trailer::default())?).await.map_err(io_error)?;
        writer.shutdown().await.map_err(io_error)?;
        Ok(())
    }
    .await;
    if let Err(e) = written {
        let _ = writer.abort().await;
        return Err(e);
    }
    Ok(rows)
}

fn io_error(e: std::io::Error) -> Error {
    match e.downcast::<object_store::Error>() {
        Ok(e) => Error::Store(e),
        Err(e) => {
            Error::Store(object_store::Error::Generic { store: "export", source: Box::new(e) })
        }
    }
}

async fn read_success(store: &dyn ObjectStore, marker: &Path) -> Result<Option<Success>> {
    match store.get(marker).await {
        Ok(result) => {
            let bytes = result.bytes().await?;
            // A marker Tarn did not write (an empty `_SUCCESS` of Spark) names no run.
            Ok(serde_json::from_slice(&bytes).ok())
        }
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

async fn delete_quietly(store: &dyn ObjectStore, path: &Path) -> Result<()> {
    match store.delete(path).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
