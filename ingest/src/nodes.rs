//! The Tarn processes that ingest into a lake, as the lake itself records them.
//!
//! Each ingesting process (`tarn serve`, `tarn load`) keeps a small document
//! `_tarn/nodes/<node id>.json` in the lake and rewrites it every [`HEARTBEAT`]; a document
//! older than [`ALIVE_FOR`] belongs to a process that stopped (or lost storage). Unique keys
//! are enforced by an index in each process, so ingest into a table with a unique key asks
//! this registry whether it is alone (see [`crate::UniqueKeyScope`]).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::Result;

/// Where the documents live.
const NODES_PREFIX: &str = "_tarn/nodes";
/// How often a process rewrites its document.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// A document older than this belongs to a process that is gone.
pub const ALIVE_FOR: Duration = Duration::from_secs(20);

/// A process's document.
#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    node: String,
    /// What the process is (`serve`, `load`).
    role: String,
    at: DateTime<Utc>,
}

/// This process's entry in the lake's registry of ingesting processes.
pub struct Nodes {
    store: Arc<dyn ObjectStore>,
    node: String,
    role: String,
    stop: watch::Sender<bool>,
}

impl Nodes {
    /// Announces `node` (a process of `role`) in the lake of `store` and keeps announcing it
    /// every [`HEARTBEAT`] until [`Nodes::leave`], in the background: storage being down at
    /// start does not hold the start up.
    pub fn join(store: Arc<dyn ObjectStore>, node: &str, role: &str) -> Arc<Self> {
        let (stop, mut stopped) = watch::channel(false);
        let nodes = Arc::new(Nodes { store, node: node.into(), role: role.into(), stop });
        let beating = nodes.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = beating.beat().await {
                    tracing::debug!(error = %e, "cannot announce this process in the lake");
                }
                tokio::select! {
                    _ = tokio::time::sleep(HEARTBEAT) => {}
                    _ = stopped.wait_for(|s| *s) => return,
                }
            }
        });
        nodes
    }

    fn path(&self) -> Path {
        Path::from(format!("{NODES_PREFIX}/{}.json", self.node))
    }

    async fn beat(&self) -> Result<()> {
        let entry = Entry { node: self.node.clone(), role: self.role.clone(), at: Utc::now() };
        let body = serde_json::to_vec(&entry).expect("entries serialize");
        self.store
            .put(&self.path(), PutPayload::from(Bytes::from(body)))
            .await
            .map_err(tarn_lake::Error::from)?;
        Ok(())
    }

    /// The other processes that announced themselves within [`ALIVE_FOR`], as
    /// `<node id> (<role>)`.
    pub async fn others_alive(&self) -> Result<Vec<String>> {
        let listed: Vec<_> = self
            .store
            .list(Some(&Path::from(NODES_PREFIX)))
            .try_collect()
            .await
            .map_err(tarn_lake::Error::from)?;
        let since = Utc::now() - chrono::Duration::from_std(ALIVE_FOR).expect("a short duration");
        let mut alive = Vec::new();
        for meta in listed.into_iter().filter(|m| m.location != self.path()) {
            // A document whose object is old is stale whatever it says; read only fresh ones.
            if meta.last_modified < since {
                continue;
            }
            let entry: Option<Entry> = match self.store.get(&meta.location).await {
                Ok(got) => got.bytes().await.ok().and_then(|b| serde_json::from_slice(&b).ok()),
                Err(_) => None,
            };
            if let Some(entry) = entry.filter(|e| e.at >= since && e.node != self.node) {
                alive.push(format!("{} ({})", entry.node, entry.role));
            }
        }
        Ok(alive)
    }

    /// Stops announcing and removes the entry (a process that stops cleanly is gone at once).
    pub async fn leave(&self) {
        let _ = self.stop.send(true);
        let _ = self.store.delete(&self.path()).await;
    }
}
