//! The write-ahead log: accepted requests are on local disk before they are acknowledged.
//!
//! One log per Tarn process, in `--wal-dir`, made of segment files `wal-<first seq>.log`. A
//! single writer thread takes every request queued since its last write, appends them all and
//! calls `fsync` once (group commit), then hands each record to the [`WalSink`] in sequence
//! order and acknowledges it. Sequence numbers grow with every record and are never used twice,
//! also across restarts and failed writes: the newest segment file is never deleted and its
//! name records where the sequence stands.
//!
//! A sealed segment is deleted once every table with records in it has committed them to the
//! lake ([`Wal::committed`]); before that, the idempotency keys it holds are handed to the
//! caller (the key store) so they outlive the segment.
//!
//! A record holds what one request will append, already decoded and checked against the
//! table's contract: the rows for the table, the rejected rows for `<table>_rejected`, the raw
//! payload for `<table>_raw`, each as an Arrow IPC stream ([`WalPart`]). Replay therefore
//! appends exactly what was acknowledged, whatever the table's definition says by then (and
//! whenever `now()` is). Tables without a contract log the request body itself.
//!
//! The files of this module, each with one job (none uses `mod.rs`):
//!
//! - `record.rs`: the records, their parts, counts and idempotency keys (plain data);
//! - `codec.rs`: the record frame (`len | crc32 | payload`, versions 1 and 2), pure functions;
//! - `segment.rs`: segment files: names, creating one durably, reading one back with its
//!   valid prefix (a bad frame ends the newest segment, and is damage anywhere else);
//! - `state.rs`: what the segments hold, in memory, and which may be deleted;
//! - `writer.rs`: the writer thread: group commit, rotation, and failing closed after a failed
//!   write or `fsync` (the failed group's numbers are spent, its segment cut back and sealed,
//!   appends refused with [`WalError::Failing`] until a new segment can be started);
//! - `recovery.rs`: opening the directory: the lock, every segment read back, a torn tail cut;
//! - `node_id.rs`: this node's id, kept beside the log;
//! - `error.rs`: [`WalError`] and its kinds.
//!
//! A torn frame at the end of the newest segment (a crash mid-write, never acknowledged) is
//! cut off on open; damage in a sealed segment stops the server from starting rather than
//! losing data silently. In the newest segment a bad frame followed by sound ones cannot be
//! told from a torn group write whose later frames reached the disk first: the segment is cut
//! at the bad frame and the cut-off bytes are kept beside it, with an error in the log.

mod codec;
mod error;
mod node_id;
mod record;
mod recovery;
mod segment;
mod state;
mod writer;

#[cfg(test)]
pub(crate) mod tests;

use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use tarn_catalog::TableName;
use tokio::sync::{mpsc, oneshot};

pub use error::WalError;
pub use node_id::node_id;
pub use record::{Counts, KeyRecord, WalPart, WalRecord};
pub use writer::WalSink;

use state::State;
use writer::{Pending, Writer, MAX_GROUP};

/// Settings of the write-ahead log.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct WalConfig {
    /// Where the log lives (local disk, never object storage).
    pub dir: PathBuf,
    /// Above this many bytes of not-yet-committed records, ingest answers 503 with
    /// `Retry-After` instead of growing the log (and the memory holding those records).
    pub max_bytes: u64,
    /// A segment is sealed, and a new one started, when it passes this size.
    pub segment_bytes: u64,
    /// After a failed write or `fsync`, appends are refused for this long (503 with
    /// `Retry-After`) before the log tries the disk again; it tries at most this often.
    pub retry_ms: u64,
}

impl Default for WalConfig {
    fn default() -> Self {
        WalConfig {
            dir: PathBuf::from(".tarn/wal"),
            max_bytes: 256 * 1024 * 1024,
            segment_bytes: 16 * 1024 * 1024,
            retry_ms: 1000,
        }
    }
}

/// The write-ahead log of this process.
pub struct Wal {
    config: WalConfig,
    state: Arc<Mutex<State>>,
    queued_bytes: Arc<AtomicU64>,
    sender: Mutex<Option<mpsc::Sender<Pending>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The locked `lock` file: held while the log is open, released by [`Wal::close`].
    lock: Mutex<Option<File>>,
}

/// What [`Wal::open`] found on disk.
pub struct Recovered {
    /// The log, ready for appends.
    pub wal: Wal,
    /// Every record still in the log, in sequence order.
    pub records: Vec<WalRecord>,
}

/// Bytes a record counts beyond its data (its frame and bookkeeping).
const RECORD_OVERHEAD: u64 = 64;

impl Wal {
    /// Opens (or creates) the log in `config.dir`, reads back every record in it, and starts
    /// the writer thread. Records become durable through `sink`.
    pub fn open(config: WalConfig, sink: Arc<dyn WalSink>) -> Result<Recovered, WalError> {
        let dir = config.dir.clone();
        let opened = recovery::open(&dir)?;
        let state = Arc::new(Mutex::new(opened.state));
        let queued_bytes = Arc::new(AtomicU64::new(0));
        let (sender, receiver) = mpsc::channel(MAX_GROUP);
        let writer = Writer::new(
            dir.clone(),
            config.segment_bytes,
            Duration::from_millis(config.retry_ms),
            opened.file,
            opened.next_seq,
            state.clone(),
            queued_bytes.clone(),
            sink,
        );
        let handle = std::thread::Builder::new()
            .name("tarn-wal".into())
            .spawn(move || writer.run(receiver))
            .map_err(WalError::io(&dir))?;
        let wal = Wal {
            config,
            state,
            queued_bytes,
            sender: Mutex::new(Some(sender)),
            writer: Mutex::new(Some(handle)),
            lock: Mutex::new(Some(opened.lock)),
        };
        Ok(Recovered { wal, records: opened.records })
    }

    /// Logs `record` (its `seq` is assigned here); returns the sequence number once the
    /// record is on disk and its parts have been handed to the sink.
    ///
    /// Errors are all retryable but [`WalError::TooLarge`] (also for a record larger than the
    /// whole log may be): [`WalError::Full`] (the lake is behind), [`WalError::Io`] (this record's write failed; nothing of it is kept),
    /// [`WalError::Failing`] (a recent write failed and the disk is not usable yet),
    /// [`WalError::Closed`].
    pub async fn append(&self, record: WalRecord) -> Result<u64, WalError> {
        codec::check(&record).map_err(WalError::TooLarge)?;
        let size = record.data_bytes() + RECORD_OVERHEAD;
        if size > self.config.max_bytes {
            return Err(WalError::TooLarge(format!(
                "it needs {size} bytes of the write-ahead log, which holds at most {} \
                 (--wal-max-bytes); send it in smaller requests",
                self.config.max_bytes
            )));
        }
        let used =
            self.state.lock().expect("wal state").bytes + self.queued_bytes.load(Ordering::Relaxed);
        if used + size > self.config.max_bytes {
            return Err(WalError::Full { used, limit: self.config.max_bytes });
        }
        let sender = self.sender.lock().expect("wal sender").clone().ok_or(WalError::Closed)?;
        self.queued_bytes.fetch_add(size, Ordering::Relaxed);
        let (reply, answer) = oneshot::channel();
        if sender.send(Pending { record, size, reply }).await.is_err() {
            self.queued_bytes.fetch_sub(size, Ordering::Relaxed);
            return Err(WalError::Closed);
        }
        answer.await.unwrap_or(Err(WalError::Closed))
    }

    /// Records that `table`'s records up to `seq` are in the lake, and deletes the sealed
    /// segments that hold nothing uncommitted any more. The idempotency keys of those
    /// segments go to `keep` first, which must store them durably (`keys.log`): a segment is
    /// deleted only after `keep` succeeded, so a failure (a full disk) loses no key, and the
    /// segments are tried again on a later commit.
    pub fn committed(
        &self,
        table: &TableName,
        seq: u64,
        keep: impl FnOnce(&[KeyRecord]) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        let done = self.state.lock().expect("wal state").commit(table, seq);
        if done.is_empty() {
            return Ok(());
        }
        let keys: Vec<KeyRecord> = done.iter().flat_map(|s| s.keys.iter().cloned()).collect();
        if let Err(e) = keep(&keys) {
            self.state.lock().expect("wal state").restore(done);
            return Err(e);
        }
        let mut kept = Vec::new();
        for segment in done {
            match std::fs::remove_file(&segment.path) {
                Ok(()) => {
                    self.state.lock().expect("wal state").deleted(&segment);
                    tracing::debug!(segment = %segment.path.display(), "deleted a committed write-ahead log segment");
                }
                Err(e) => {
                    tracing::warn!(segment = %segment.path.display(), error = %e, "cannot delete a committed write-ahead log segment");
                    kept.push(segment);
                }
            }
        }
        self.state.lock().expect("wal state").restore(kept);
        Ok(())
    }

    /// Bytes the log holds (records not yet committed, and committed ones in segments that
    /// also hold uncommitted records).
    pub fn bytes(&self) -> u64 {
        self.state.lock().expect("wal state").bytes
    }

    /// Segment files the log has (the one being written included).
    pub fn segments(&self) -> usize {
        self.state.lock().expect("wal state").sealed.len() + 1
    }

    /// Stops the writer after the records already queued and releases the directory.
    pub fn close(&self) {
        self.sender.lock().expect("wal sender").take();
        if let Some(handle) = self.writer.lock().expect("wal writer").take() {
            let _ = handle.join();
        }
        self.lock.lock().expect("wal lock").take();
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        self.close();
    }
}
