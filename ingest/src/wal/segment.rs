//! Segment files: their names, creating one durably, listing them, reading one back.
//!
//! A segment is `wal-<first seq>.log` (20 digits, so names sort like numbers), where `first
//! seq` is a lower bound of the sequence numbers in it: the number the writer would have given
//! next when it started the file. Records in a segment have increasing numbers, possibly with
//! gaps (numbers of a group whose write failed are never used again).

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};

use super::codec;
use super::error::WalError;
use super::record::WalRecord;

/// The file of the segment that starts at `first_seq`.
pub(super) fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("wal-{first_seq:020}.log"))
}

/// The first sequence number in a segment file's name; `None` for other files.
fn first_seq_of(name: &str) -> Option<u64> {
    name.strip_prefix("wal-")?.strip_suffix(".log")?.parse().ok()
}

/// The segment files in `dir`, oldest first.
pub(super) fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>, WalError> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(WalError::io(dir))? {
        let entry = entry.map_err(WalError::io(dir))?;
        let Ok(name) = entry.file_name().into_string() else { continue };
        if let Some(seq) = first_seq_of(&name) {
            files.push((seq, entry.path()));
        }
    }
    files.sort();
    Ok(files)
}

/// Makes the directory entries of `dir` durable (a created, renamed or deleted file).
pub(super) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates the segment file `path` (empty), and makes its name durable. An empty file of that
/// name left by an earlier attempt is taken over; if syncing the directory fails, the file is
/// removed again (so that no empty segment newer than the one in use stays behind).
pub(super) fn create(dir: &Path, path: &Path) -> Result<File, WalError> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .append(true)
        .open(path)
        .map_err(WalError::io(dir))?;
    let len = file.metadata().map_err(WalError::io(dir))?.len();
    if len != 0 {
        return Err(WalError::Corrupt(format!(
            "{} exists already and is not empty: the segment numbering went backwards",
            path.display()
        )));
    }
    if let Err(e) = sync_dir(dir) {
        drop(file);
        let _ = std::fs::remove_file(path);
        return Err(WalError::io(dir)(e));
    }
    Ok(file)
}

/// A segment file read back.
#[derive(Debug)]
pub(super) struct ReadBack {
    /// Its records, each with the length of its frame.
    pub records: Vec<(WalRecord, u64)>,
    /// Length of the valid prefix: the file's length unless its end is torn.
    pub valid_len: u64,
    /// The file's length.
    pub len: u64,
    /// For a newest segment whose end is torn: how many sound records stand after the bad
    /// frame (damage inside the segment, or a torn write that left some frames whole).
    pub after_tear: usize,
}

/// Reads the segment at `path`. A bad frame ends the newest segment (`newest`: a write torn
/// by a crash, never acknowledged, which the caller cuts off); in any other segment, which was
/// complete and synced before a newer one was started, it is damage: an error that names the
/// file and the byte.
pub(super) fn read(path: &Path, newest: bool) -> Result<ReadBack, WalError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|source| WalError::Io { dir: path.display().to_string(), source })?;
    check(path, &bytes, newest)
}

/// [`read`] for the bytes of a segment.
pub(super) fn check(path: &Path, bytes: &[u8], newest: bool) -> Result<ReadBack, WalError> {
    let scan = codec::scan(bytes);
    let len = bytes.len() as u64;
    if scan.valid_len != len && !newest {
        return Err(WalError::Corrupt(format!(
            "bad record at byte {} of {} ({len} bytes), a sealed segment; move the file away \
             to start without the records from that byte on",
            scan.valid_len,
            path.display()
        )));
    }
    let after_tear = if scan.valid_len == len {
        0
    } else {
        let first_seq = path.file_name().and_then(|n| first_seq_of(&n.to_string_lossy()));
        let after_seq = match scan.records.last() {
            Some((record, _)) => record.seq,
            None => first_seq.unwrap_or(1).saturating_sub(1),
        };
        codec::frames_after(bytes, scan.valid_len as usize, after_seq)
    };
    Ok(ReadBack { records: scan.records, valid_len: scan.valid_len, len, after_tear })
}
