//! Opening the log directory: take its lock, read every segment back, cut a torn tail off the
//! newest one, and find where numbering goes on.
//!
//! What the writer leaves on disk is accepted as it is: sealed segments that are complete
//! (also one cut back after a failed write), an empty newest segment, gaps in the sequence
//! numbers (numbers spent by failed writes). The next number is above every record read and
//! at least the newest segment's name.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::error::WalError;
use super::record::WalRecord;
use super::segment;
use super::state::{Segment, State};

/// The log as found on disk, ready for the writer.
pub(super) struct Opened {
    /// The locked `lock` file.
    pub lock: File,
    /// Segments and bytes.
    pub state: State,
    /// The active segment, open for appending.
    pub file: File,
    /// The next sequence number to give.
    pub next_seq: u64,
    /// Every record, in sequence order.
    pub records: Vec<WalRecord>,
}

/// Locks `dir` (creating it) and reads the log in it.
pub(super) fn open(dir: &Path) -> Result<Opened, WalError> {
    let io = WalError::io(dir);
    std::fs::create_dir_all(dir).map_err(&io)?;
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("lock"))
        .map_err(&io)?;
    if lock.try_lock().is_err() {
        return Err(WalError::Locked(dir.display().to_string()));
    }

    let files = segment::list(dir)?;
    let mut state = State::default();
    let mut records = Vec::new();
    let mut next_seq = 1;
    let count = files.len();
    for (i, (first_seq, path)) in files.into_iter().enumerate() {
        let newest = i + 1 == count;
        let read = segment::read(&path, newest)?;
        let mut summary = Segment::new(path.clone());
        next_seq = next_seq.max(first_seq);
        for (record, frame_bytes) in read.records {
            if record.seq < next_seq && !records.is_empty() {
                // Earlier versions reused the numbers of a failed write, and kept its frames
                // when it could not cut them: read such a log as it is, but say so.
                tracing::warn!(seq = record.seq, segment = %path.display(), "a write-ahead log record is numbered below the one before it");
            }
            summary.add(&record, frame_bytes);
            next_seq = next_seq.max(record.seq + 1);
            records.push(record);
        }
        if newest && read.len != read.valid_len {
            cut_torn_tail(dir, &path, read.valid_len, read.after_tear)?;
        }
        state.bytes += summary.bytes;
        if newest {
            state.active = summary;
        } else {
            state.sealed.push_back(summary);
        }
    }
    let file = if count == 0 {
        let path = segment::segment_path(dir, next_seq);
        state.active = Segment::new(path.clone());
        segment::create(dir, &path)?
    } else {
        OpenOptions::new().append(true).open(&state.active.path).map_err(&io)?
    };
    if !records.is_empty() {
        tracing::info!(records = records.len(), bytes = state.bytes, dir = %dir.display(), "write-ahead log holds records to check against the lake");
    }
    Ok(Opened { lock, state, file, next_seq, records })
}

/// Cuts the newest segment at `path` back to `valid_len`: what follows is a write torn by a
/// crash, never acknowledged. When sound records stand after the bad frame (`after_tear`),
/// the file cannot tell a torn write that left some of its frames whole (never acknowledged
/// either: a group is acknowledged after its `fsync`) from damage inside the segment (which
/// would lose acknowledged records): the server starts either way, and the cut-off bytes are
/// kept beside the log (`<segment>.cut-at-<byte>`) with an error in the log, so nothing is
/// lost silently.
fn cut_torn_tail(
    dir: &Path,
    path: &PathBuf,
    valid_len: u64,
    after_tear: usize,
) -> Result<(), WalError> {
    let io = WalError::io(dir);
    if after_tear > 0 {
        let kept = PathBuf::from(format!("{}.cut-at-{valid_len}", path.display()));
        let mut from = File::open(path).map_err(&io)?;
        from.seek(SeekFrom::Start(valid_len)).map_err(&io)?;
        let mut to = File::create(&kept).map_err(&io)?;
        std::io::copy(&mut from, &mut to).and_then(|_| to.sync_all()).map_err(&io)?;
        segment::sync_dir(dir).map_err(&io)?;
        tracing::error!(segment = %path.display(), valid_len, records_after = after_tear, kept = %kept.display(), "the newest write-ahead log segment has a bad record followed by sound ones: a torn write, or damage that loses acknowledged records; cutting it there and keeping the cut-off bytes");
    } else {
        tracing::warn!(segment = %path.display(), valid_len, "cutting off a torn record at the end of the write-ahead log (it was never acknowledged)");
    }
    let file = OpenOptions::new().write(true).open(path).map_err(&io)?;
    file.set_len(valid_len).and_then(|()| file.sync_all()).map_err(&io)
}
