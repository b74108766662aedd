//! What ingest reports to whoever watches it (the alarms of `tarn-pipelines`): files that
//! failed, rows that broke a contract, maintenance that failed, and since when writes are
//! refused.
//!
//! Events go out on a bounded broadcast channel: sending never waits and never fails; a
//! watcher that falls behind loses the oldest events and is told how many. With nobody
//! watching, an event costs one atomic load.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use tarn_catalog::TableName;
use tokio::sync::broadcast;

/// Events a watcher may miss before it is told it fell behind.
const CAPACITY: usize = 1024;

/// Something ingest did that someone may want to hear about.
#[derive(Debug, Clone, PartialEq)]
pub enum IngestEvent {
    /// A dropped file could not be loaded and was moved to the failed folder.
    FileFailed {
        /// The table it was dropped for.
        table: String,
        /// The file's name.
        file: String,
        /// Where it is now (in the lake), with the report beside it.
        moved_to: String,
        /// Why it failed.
        error: String,
    },
    /// Rows broke the table's contract and went to `<table>_rejected`.
    RowsRejected {
        /// The table.
        table: TableName,
        /// How many rows.
        rows: u64,
        /// The first row's reason.
        first_error: String,
        /// Where they came from (`http`, `form`, `file:<name>`).
        source: String,
    },
    /// Background maintenance (compaction, checkpoint, vacuum) of a table failed.
    MaintenanceFailed {
        /// The table.
        table: TableName,
        /// Why.
        error: String,
    },
}

/// The sender side, shared by everything in ingest.
#[derive(Debug, Clone)]
pub struct Events {
    sender: broadcast::Sender<IngestEvent>,
    /// Milliseconds since the epoch of the first refusal of the current run of refusals (0:
    /// writes are taken).
    refusing_since: Arc<AtomicI64>,
}

impl Default for Events {
    fn default() -> Self {
        Events { sender: broadcast::channel(CAPACITY).0, refusing_since: Arc::default() }
    }
}

impl Events {
    /// Sends `event` to the watchers, if any.
    pub fn emit(&self, event: IngestEvent) {
        if self.sender.receiver_count() > 0 {
            let _ = self.sender.send(event);
        }
    }

    /// A new watcher, seeing events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<IngestEvent> {
        self.sender.subscribe()
    }

    /// Notes that a write was refused because ingest cannot take it now (503).
    pub fn refused(&self) {
        let now = Utc::now().timestamp_millis().max(1);
        let _ = self.refusing_since.compare_exchange(0, now, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Notes that a write was taken.
    pub fn accepted(&self) {
        if self.refusing_since.load(Ordering::Acquire) != 0 {
            self.refusing_since.store(0, Ordering::Release);
        }
    }

    /// Since when every write has been refused (none taken since), if they are.
    pub fn refusing_since(&self) -> Option<DateTime<Utc>> {
        match self.refusing_since.load(Ordering::Acquire) {
            0 => None,
            ms => Utc.timestamp_millis_opt(ms).single(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn watchers_get_events_and_refusals_reset_on_a_write() {
        let events = Events::default();
        events.emit(IngestEvent::MaintenanceFailed {
            table: TableName::parse("t").unwrap(),
            error: "lost".into(),
        });
        let mut watcher = events.subscribe();
        let failed = IngestEvent::MaintenanceFailed {
            table: TableName::parse("t").unwrap(),
            error: "x".into(),
        };
        events.emit(failed.clone());
        assert_eq!(watcher.recv().await.unwrap(), failed);
        assert_eq!(events.refusing_since(), None);
        events.refused();
        let since = events.refusing_since().unwrap();
        events.refused();
        assert_eq!(events.refusing_since(), Some(since), "the first refusal of a run counts");
        events.accepted();
        assert_eq!(events.refusing_since(), None);
    }
}
