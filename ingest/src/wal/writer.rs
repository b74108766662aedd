//! The writer thread: group commit, segment rotation, and failing closed.
//!
//! The thread takes every request queued since its last write, numbers them, writes them with
//! one `write` and one `fsync` (group commit), then hands each record to the [`WalSink`] in
//! sequence order and acknowledges it.
//!
//! # Failing closed
//!
//! When the write or the `fsync` of a group fails (a full disk, an I/O error), nothing about
//! the segment's tail can be trusted: part of the group may be on disk, and after a failed
//! `fsync` the kernel may have dropped dirty pages and marked them clean. So:
//!
//! - every request of the group gets the error ([`WalError::Io`]); none of them reaches the
//!   sink, and none may ever be replayed (their clients may retry, and a replay would
//!   duplicate them);
//! - the group's sequence numbers are spent: they are never given again;
//! - the segment is cut back to its last durable length and synced, and is never written
//!   again; writing continues only in a new segment (a new file named after the next unused
//!   number, the directory synced), so the numbering on disk moves past the spent numbers
//!   even across a restart;
//! - while the cut or the new segment cannot be made (the disk is still full), and in any case
//!   for `retry_after` after a failure, appends are refused at once with
//!   [`WalError::Failing`] and get no number. The next append after that tries again, so the
//!   disk is probed at most once per `retry_after`, and the log works again as soon as there
//!   is space.
//!
//! The segment is only ever sealed after its cut succeeded, so a sealed segment holds exactly
//! its acknowledged records and recovery treats any bad byte in it as damage. If the cut
//! itself keeps failing (the file cannot be truncated) and the process dies meanwhile, the
//! failed segment is still the newest one: recovery cuts a torn frame off, but whole frames
//! of the failed group would be read back. That needs a failing `ftruncate` followed by a
//! crash, and is logged loudly when the cut fails.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::codec;
use super::error::WalError;
use super::record::{WalPart, WalRecord};
use super::segment;
use super::state::State;

/// Records gathered into one write + fsync at most.
pub(super) const MAX_GROUP: usize = 4096;

/// Receives each record once it is durable, in sequence order, before it is acknowledged.
pub trait WalSink: Send + Sync + 'static {
    /// The parts of record `seq` are durable.
    fn durable(&self, seq: u64, parts: Vec<WalPart>);
}

/// A record waiting for the writer.
pub(super) struct Pending {
    pub record: WalRecord,
    /// Bytes it counts in the queue.
    pub size: u64,
    pub reply: oneshot::Sender<Result<u64, WalError>>,
}

/// After a failed write: what is left to do before writing again.
struct Failure {
    /// What failed last.
    cause: String,
    /// No write is tried before then.
    retry_at: Instant,
    /// The segment that failed, while it is not cut back to its durable length yet.
    uncut: Option<File>,
}

/// The writer thread's side of the log.
pub(super) struct Writer {
    dir: PathBuf,
    segment_bytes: u64,
    retry_after: Duration,
    /// The active segment; `None` after a failed write until a new segment is started.
    file: Option<File>,
    failure: Option<Failure>,
    next_seq: u64,
    state: Arc<Mutex<State>>,
    queued_bytes: Arc<AtomicU64>,
    sink: Arc<dyn WalSink>,
}

impl Writer {
    /// A writer that appends to `file`, the active segment of `state`, numbering from
    /// `next_seq`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        dir: PathBuf,
        segment_bytes: u64,
        retry_after: Duration,
        file: File,
        next_seq: u64,
        state: Arc<Mutex<State>>,
        queued_bytes: Arc<AtomicU64>,
        sink: Arc<dyn WalSink>,
    ) -> Self {
        Writer {
            dir,
            segment_bytes,
            retry_after,
            file: Some(file),
            failure: None,
            next_seq,
            state,
            queued_bytes,
            sink,
        }
    }

    /// Writes what arrives on `receiver` until every sender is gone.
    pub fn run(mut self, mut receiver: mpsc::Receiver<Pending>) {
        let mut buffer = Vec::new();
        while let Some(first) = receiver.blocking_recv() {
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match receiver.try_recv() {
                    Ok(pending) => group.push(pending),
                    Err(_) => break,
                }
            }
            match self.ready() {
                Ok(()) => self.write(group, &mut buffer),
                Err(()) => {
                    let queued: u64 = group.iter().map(|p| p.size).sum();
                    self.queued_bytes.fetch_sub(queued, Ordering::Relaxed);
                    for pending in group {
                        let _ = pending.reply.send(Err(self.refusal()));
                    }
                }
            }
        }
    }

    /// Whether a group may be written now; after a failure, tries (at most once per
    /// `retry_after`) to cut the failed segment and start a new one.
    fn ready(&mut self) -> Result<(), ()> {
        let Some(failure) = &self.failure else { return Ok(()) };
        if Instant::now() < failure.retry_at {
            return Err(());
        }
        match self.recover() {
            Ok(()) => {
                tracing::info!(dir = %self.dir.display(), next_seq = self.next_seq, "the write-ahead log takes records again, in a new segment");
                self.failure = None;
                Ok(())
            }
            Err(e) => {
                let failure = self.failure.as_mut().expect("failing");
                failure.cause = e.to_string();
                failure.retry_at = Instant::now() + self.retry_after;
                Err(())
            }
        }
    }

    /// The answer to appends while the log is failing.
    fn refusal(&self) -> WalError {
        let failure = self.failure.as_ref().expect("failing");
        WalError::Failing {
            dir: self.dir.display().to_string(),
            cause: failure.cause.clone(),
            retry_after: failure.retry_at.saturating_duration_since(Instant::now()),
        }
    }

    /// Numbers, writes and syncs `group`; acknowledges it, or fails closed.
    fn write(&mut self, mut group: Vec<Pending>, buffer: &mut Vec<u8>) {
        buffer.clear();
        let mut frames = Vec::with_capacity(group.len());
        for pending in &mut group {
            pending.record.seq = self.next_seq;
            self.next_seq += 1;
            frames.push(codec::encode(buffer, &pending.record));
        }
        let queued: u64 = group.iter().map(|p| p.size).sum();
        let file = self.file.as_mut().expect("ready() leaves a segment open");
        let written = file.write_all(buffer).and_then(|()| file.sync_data());
        if let Err(e) = written {
            self.queued_bytes.fetch_sub(queued, Ordering::Relaxed);
            let (first, last) = (group[0].record.seq, self.next_seq - 1);
            tracing::error!(error = %e, dir = %self.dir.display(), first, last, "writing the write-ahead log failed; the requests get an error and their sequence numbers are spent");
            for pending in group {
                let error = WalError::Io {
                    dir: self.dir.display().to_string(),
                    source: std::io::Error::new(e.kind(), e.to_string()),
                };
                let _ = pending.reply.send(Err(error));
            }
            self.fail(e);
            return;
        }
        let rotate = {
            let mut state = self.state.lock().expect("wal state");
            for (pending, frame) in group.iter().zip(&frames) {
                state.active.add(&pending.record, *frame);
            }
            state.bytes += buffer.len() as u64;
            state.active.bytes >= self.segment_bytes
        };
        self.queued_bytes.fetch_sub(queued, Ordering::Relaxed);
        for pending in group {
            let seq = pending.record.seq;
            self.sink.durable(seq, pending.record.parts);
            let _ = pending.reply.send(Ok(seq));
        }
        if rotate {
            if let Err(e) = self.start_segment() {
                tracing::error!(error = %e, "cannot start a new write-ahead log segment; continuing in the current one");
            }
        }
    }

    /// Stops writing to the active segment after `cause`, and tries to cut it and start a new
    /// one right away (so the spent numbers are behind the newest segment's name).
    fn fail(&mut self, cause: std::io::Error) {
        self.failure = Some(Failure {
            cause: cause.to_string(),
            retry_at: Instant::now() + self.retry_after,
            uncut: self.file.take(),
        });
        if let Err(e) = self.recover() {
            tracing::warn!(error = %e, dir = %self.dir.display(), "the write-ahead log cannot start a new segment yet; appends are refused until it can");
            self.failure.as_mut().expect("failing").cause = e.to_string();
        }
    }

    /// Cuts the failed segment (if not done yet), then starts a new segment (if none is open).
    fn recover(&mut self) -> Result<(), WalError> {
        let failure = self.failure.as_mut().expect("failing");
        if let Some(file) = failure.uncut.take() {
            let valid = self.state.lock().expect("wal state").active.bytes;
            if let Err(e) = file.set_len(valid).and_then(|()| file.sync_all()) {
                tracing::error!(error = %e, dir = %self.dir.display(), "cannot cut the failed write-ahead log segment back to its durable length; if the process dies before this succeeds, the failed requests could be read back");
                failure.uncut = Some(file);
                return Err(WalError::io(&self.dir)(e));
            }
        }
        if self.file.is_none() {
            self.start_segment()?;
        }
        Ok(())
    }

    /// Seals the active segment and starts the next one, named after the next sequence
    /// number. A sealed segment left empty (its only write failed) is deleted.
    fn start_segment(&mut self) -> Result<(), WalError> {
        let path = segment::segment_path(&self.dir, self.next_seq);
        let file = segment::create(&self.dir, &path)?;
        self.file = Some(file);
        let mut state = self.state.lock().expect("wal state");
        state.rotate(path);
        if state.sealed.back().is_some_and(|s| s.bytes == 0) {
            let empty = state.sealed.pop_back().expect("just sealed");
            if let Err(e) = std::fs::remove_file(&empty.path) {
                tracing::debug!(error = %e, segment = %empty.path.display(), "cannot delete an empty write-ahead log segment; it goes when the log is next committed");
                state.sealed.push_back(empty);
            }
        }
        Ok(())
    }
}
