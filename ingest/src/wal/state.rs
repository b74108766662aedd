//! What the log holds, in memory: a summary of each segment (its size, the highest sequence
//! number per table in it, its idempotency keys), the bytes on disk, and how far each table
//! has committed. Shared by the [`Wal`](super::Wal) handle and the writer thread.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;

use tarn_catalog::TableName;

use super::record::{KeyRecord, WalRecord};

/// A segment file's summary.
#[derive(Debug, Default)]
pub(super) struct Segment {
    pub path: PathBuf,
    /// Length of its valid (durable) records.
    pub bytes: u64,
    /// Highest sequence number per table in this segment.
    pub tables: HashMap<TableName, u64>,
    /// Idempotency keys recorded in this segment.
    pub keys: Vec<KeyRecord>,
}

impl Segment {
    /// An empty segment at `path`.
    pub fn new(path: PathBuf) -> Self {
        Segment { path, ..Default::default() }
    }

    /// Notes that `record`, in a frame of `frame_bytes`, is durable in this segment.
    pub fn add(&mut self, record: &WalRecord, frame_bytes: u64) {
        self.bytes += frame_bytes;
        for part in &record.parts {
            let max = self.tables.entry(part.table.clone()).or_insert(0);
            *max = (*max).max(record.seq);
        }
        self.keys.extend(record.key_record());
    }
}

/// The log's segments and commit marks.
#[derive(Debug, Default)]
pub(super) struct State {
    /// Segments no longer written, oldest first.
    pub sealed: VecDeque<Segment>,
    /// The segment being written (after a failed write: the one that failed, cut back to its
    /// durable length, until a new one is started).
    pub active: Segment,
    /// Bytes in all segments that still exist.
    pub bytes: u64,
    /// Highest committed sequence number per table.
    pub committed: HashMap<TableName, u64>,
}

impl State {
    /// Notes that `table` has committed its records up to `seq`, and takes out the sealed
    /// segments that hold nothing uncommitted any more (oldest first). Their bytes still
    /// count until [`State::deleted`]; segments that cannot be deleted go back with
    /// [`State::restore`].
    pub fn commit(&mut self, table: &TableName, seq: u64) -> Vec<Segment> {
        let known = self.committed.entry(table.clone()).or_insert(0);
        *known = (*known).max(seq);
        let (done, kept): (VecDeque<_>, VecDeque<_>) =
            std::mem::take(&mut self.sealed).into_iter().partition(|segment| {
                segment
                    .tables
                    .iter()
                    .all(|(t, max)| self.committed.get(t).is_some_and(|c| c >= max))
            });
        self.sealed = kept;
        done.into()
    }

    /// A segment taken out by [`State::commit`] is gone from disk.
    pub fn deleted(&mut self, segment: &Segment) {
        self.bytes -= segment.bytes;
    }

    /// Puts segments taken out by [`State::commit`] back, in order.
    pub fn restore(&mut self, segments: Vec<Segment>) {
        self.sealed.extend(segments);
        self.sealed.make_contiguous().sort_by(|a, b| a.path.cmp(&b.path));
    }

    /// Seals the active segment and makes the (new, empty) segment at `path` the active one.
    pub fn rotate(&mut self, path: PathBuf) {
        let sealed = std::mem::replace(&mut self.active, Segment::new(path));
        self.sealed.push_back(sealed);
    }
}
