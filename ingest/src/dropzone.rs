//! The drop zone: files placed under `_tarn/landing/<table>/` in the lake (a local directory or
//! an S3 prefix) are loaded into `<table>` with its contract, then moved to
//! `_tarn/archive/<table>/<date>/`; a file that cannot be read at all moves to
//! `_tarn/failed/<table>/` with `<file>.error.txt` beside it saying why.
//!
//! The drop zone is started by the process that serves (`tarn serve` starts [`run`]); it loads
//! through a [`Loader`], like `tarn load` and uploads. The zone is polled every `poll_secs`. A file is taken once it has not changed for
//! `settle_secs` (so one still being written is left alone). Before loading, the file is claimed
//! with a conditional create of `_tarn/claims/<table>/<file>.json`, so of several servers
//! sharing the lake one loads it. The load id is derived from the file's path, size and
//! modification time: a load interrupted by a crash resumes where its commits end when the file
//! is picked up again, and never loads a chunk twice.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::Deserialize;
use tarn_catalog::TableName;
use tokio::sync::watch;

use crate::load::{load_id_for, FileFormat, FileLoad, LoadProgress, Loader};
use crate::{Error, Source};

/// Where dropped files wait.
pub const LANDING: &str = "_tarn/landing";
/// Where loaded files go.
pub const ARCHIVE: &str = "_tarn/archive";
/// Where unreadable files go.
pub const FAILED: &str = "_tarn/failed";
/// Claims of files being loaded.
const CLAIMS: &str = "_tarn/claims";

/// Settings of the drop zone.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct DropZoneConfig {
    /// Seconds between looks at the landing prefix; 0 turns the drop zone off.
    pub poll_secs: u64,
    /// A file is taken when it has not changed for this long.
    pub settle_secs: u64,
    /// A claim older than this, by a server that did not finish, may be taken over.
    pub claim_ttl_secs: u64,
}

impl Default for DropZoneConfig {
    fn default() -> Self {
        DropZoneConfig { poll_secs: 10, settle_secs: 2, claim_ttl_secs: 3600 }
    }
}

/// Watches the landing prefix until `stop` turns true, loading with `loader`; `node` names
/// this process in claims.
pub async fn run(
    loader: Arc<Loader>,
    node: String,
    config: DropZoneConfig,
    mut stop: watch::Receiver<bool>,
) {
    if config.poll_secs == 0 {
        return;
    }
    tracing::info!(prefix = LANDING, every_secs = config.poll_secs, "watching the drop zone");
    loop {
        if let Err(e) = poll(&loader, &node, &config).await {
            tracing::warn!(error = %e, "looking at the drop zone failed; trying again later");
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(config.poll_secs)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// One look at the landing prefix: loads every settled file. Returns how many were handled.
pub async fn poll(loader: &Loader, node: &str, config: &DropZoneConfig) -> Result<usize, Error> {
    let store = loader.tables().catalog().lake().store().clone();
    let files: Vec<ObjectMeta> = store
        .list(Some(&Path::from(LANDING)))
        .try_collect()
        .await
        .map_err(tarn_lake::Error::from)?;
    let settled = Utc::now() - chrono::Duration::seconds(config.settle_secs as i64);
    let mut handled = 0;
    for meta in files {
        let Some((table, file)) = landing_parts(&meta.location) else { continue };
        if meta.last_modified > settled || file.starts_with('.') || file.ends_with(".tmp") {
            continue;
        }
        if !claim(store.as_ref(), node, &table, &file, config).await? {
            continue;
        }
        handle(loader, &meta, &table, &file).await;
        let _ = store.delete(&claim_path(&table, &file)).await;
        handled += 1;
    }
    Ok(handled)
}

/// `_tarn/landing/<table>/<file>` → (table, file).
fn landing_parts(location: &Path) -> Option<(String, String)> {
    let rest = location.as_ref().strip_prefix(LANDING)?.strip_prefix('/')?;
    let (table, file) = rest.split_once('/')?;
    (!file.contains('/') && !file.is_empty()).then(|| (table.to_string(), file.to_string()))
}

fn claim_path(table: &str, file: &str) -> Path {
    Path::from(format!("{CLAIMS}/{table}/{file}.json"))
}

#[derive(serde::Serialize, Deserialize)]
struct Claim {
    node: String,
    at: chrono::DateTime<Utc>,
}

/// Claims a file for this node; false when another node holds a live claim.
async fn claim(
    store: &dyn ObjectStore,
    node: &str,
    table: &str,
    file: &str,
    config: &DropZoneConfig,
) -> Result<bool, Error> {
    let path = claim_path(table, file);
    let body = serde_json::to_vec(&Claim { node: node.to_string(), at: Utc::now() })
        .expect("claims serialize");
    let create = PutOptions { mode: PutMode::Create, ..Default::default() };
    match store.put_opts(&path, PutPayload::from(Bytes::from(body.clone())), create.clone()).await {
        Ok(_) => return Ok(true),
        Err(object_store::Error::AlreadyExists { .. })
        | Err(object_store::Error::Precondition { .. }) => {}
        Err(e) => return Err(tarn_lake::Error::from(e).into()),
    }
    let existing: Option<Claim> = match store.get(&path).await {
        Ok(got) => serde_json::from_slice(&got.bytes().await.map_err(tarn_lake::Error::from)?).ok(),
        Err(object_store::Error::NotFound { .. }) => None,
        Err(e) => return Err(tarn_lake::Error::from(e).into()),
    };
    let stale = existing.as_ref().is_none_or(|c| {
        c.node == node || (Utc::now() - c.at).num_seconds() > config.claim_ttl_secs as i64
    });
    if !stale {
        return Ok(false);
    }
    // Ours from before a restart, or abandoned: take it over.
    store.delete(&path).await.map_err(tarn_lake::Error::from)?;
    match store.put_opts(&path, PutPayload::from(Bytes::from(body)), create).await {
        Ok(_) => Ok(true),
        Err(object_store::Error::AlreadyExists { .. })
        | Err(object_store::Error::Precondition { .. }) => Ok(false),
        Err(e) => Err(tarn_lake::Error::from(e).into()),
    }
}

/// Loads one claimed file and moves it to the archive, or to `failed/` with a report.
async fn handle(loader: &Loader, meta: &ObjectMeta, table: &str, file: &str) {
    let store = loader.tables().catalog().lake().store().clone();
    let day = Utc::now().format("%Y-%m-%d");
    let archived = Path::from(format!("{ARCHIVE}/{table}/{day}/{file}"));
    let outcome = load(loader, meta, table, file, &archived).await;
    match outcome {
        Ok(()) => {
            if let Err(e) = store.rename(&meta.location, &archived).await {
                tracing::error!(file = %meta.location, error = %e, "loaded a dropped file but cannot archive it; it stays in the landing zone and its next load finds every chunk committed");
            }
        }
        Err(e) if is_transient(&e) => {
            tracing::warn!(file = %meta.location, error = %e, "cannot load a dropped file now; trying again later");
        }
        Err(e) => {
            tracing::warn!(file = %meta.location, error = %e, "a dropped file cannot be loaded; moving it to the failed folder");
            let failed = Path::from(format!("{FAILED}/{table}/{file}"));
            let report = Path::from(format!("{FAILED}/{table}/{file}.error.txt"));
            let text = format!(
                "{file} could not be loaded into {table} at {}:\n{e}\n",
                Utc::now().to_rfc3339()
            );
            let moved = store.rename(&meta.location, &failed).await;
            loader.tables().events().emit(crate::IngestEvent::FileFailed {
                table: table.to_string(),
                file: file.to_string(),
                moved_to: failed.to_string(),
                error: e.to_string(),
            });
            let reported = store.put(&report, PutPayload::from(Bytes::from(text))).await;
            if let Err(e) = moved.map(|_| ()).and(reported.map(|_| ())) {
                tracing::error!(file = %meta.location, error = %e, "cannot move a failed file");
            }
        }
    }
}

/// Worth trying again later (storage unreachable, a full disk), rather than a bad file.
fn is_transient(e: &Error) -> bool {
    tarn_lake::Classify::kind(e).is_retryable()
}

async fn load(
    loader: &Loader,
    meta: &ObjectMeta,
    table: &str,
    file: &str,
    archived: &Path,
) -> Result<(), Error> {
    let name = TableName::parse(table)?;
    let format = FileFormat::from_name(file).ok_or_else(|| {
        Error::UnsupportedMediaType(format!(
            "cannot tell the format of '{file}': name it .csv, .ndjson, .jsonl, .json or .parquet"
        ))
    })?;
    // Copy to local disk first: Parquet needs to seek, and loads read at disk speed.
    let local = loader.spool_file("drop").await?;
    let result = async {
        // Writing the copy fails on a full local disk: a spool error, retried later.
        loader.tables().catalog().lake().download(&meta.location, &local).await.map_err(
            |e| match e {
                tarn_lake::Error::Io { source, .. } => {
                    Error::Spool { dir: local.display().to_string(), source }
                }
                e => e.into(),
            },
        )?;
        let load_id = load_id_for(&format!(
            "{}|{}|{}",
            meta.location,
            meta.size,
            meta.last_modified.timestamp_micros()
        ));
        let report = loader
            .load_file(FileLoad {
                table: name.clone(),
                path: local.clone(),
                format,
                load_id,
                source: Source::File(file.to_string()),
                progress: Arc::new(LoadProgress::default()),
                raw_object: Some(archived.to_string()),
            })
            .await?;
        tracing::info!(file = %meta.location, table = %name, rows = report.rows, rejected = report.rejected, duplicates = report.duplicates, "loaded a dropped file");
        Ok(())
    }
    .await;
    let _ = tokio::fs::remove_file(&local).await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn landing_paths() {
        assert_eq!(
            landing_parts(&Path::from("_tarn/landing/membership/apps.csv")),
            Some(("membership".into(), "apps.csv".into()))
        );
        assert_eq!(landing_parts(&Path::from("_tarn/landing/membership/sub/apps.csv")), None);
        assert_eq!(landing_parts(&Path::from("_tarn/landing/apps.csv")), None);
    }
}
