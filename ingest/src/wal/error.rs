//! Why a record could not be logged, or the log not opened.

use std::path::Path;
use std::time::Duration;

use tarn_lake::{Classify, ErrorKind};

/// How long clients are asked to wait when the log is full or cannot be written.
const WAL_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Why a record could not be logged, or the log not opened.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// The log holds `max_bytes` of records the lake has not committed yet.
    #[error(
        "the write-ahead log is full ({used} of {limit} bytes wait for the lake to commit them); \
         storage is not keeping up or unreachable, retry later"
    )]
    Full {
        /// Bytes waiting.
        used: u64,
        /// The configured limit.
        limit: u64,
    },
    /// Writing, syncing or creating a file of the log failed (e.g. the disk is full). For an
    /// append this is the request whose write failed: nothing of it is kept.
    #[error("cannot write the write-ahead log in {dir}: {source}")]
    Io {
        /// The WAL directory (or the file).
        dir: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// An earlier write or fsync of the log failed and the log has not been able to start a
    /// new segment since (e.g. the disk is still full): appends are refused until it can. The
    /// writer tries again on an append at most once per `retry_after`.
    #[error(
        "the write-ahead log in {dir} cannot take records now: {cause}; nothing was written, \
         retry later"
    )]
    Failing {
        /// The WAL directory.
        dir: String,
        /// What failed last.
        cause: String,
        /// When the writer tries again, at the earliest.
        retry_after: Duration,
    },
    /// A record does not fit the log's frame format (a key or table name longer than 65535
    /// bytes, a part larger than 4 GiB, more than 65535 parts) or is larger than the whole
    /// log may be (`max_bytes`): retrying cannot help.
    #[error("the request cannot be logged: {0}")]
    TooLarge(String),
    /// The log on disk is damaged somewhere other than its very end.
    #[error("the write-ahead log is damaged: {0}")]
    Corrupt(String),
    /// Another process uses the same WAL directory.
    #[error("the write-ahead log in {0} is in use by another Tarn process")]
    Locked(String),
    /// The `node-id` file in the WAL directory cannot be read, is empty or holds something
    /// that is not a node id. Making up a new id would replay every record the lake already
    /// holds (the Delta `txn` application ids name the node), so the server does not start.
    #[error(
        "cannot use the node id in {path}: {problem}. It names this node's commits in the \
         tables' Delta logs (txn app ids 'tarn-<node id>-<table>'); restore the file (one line, \
         the id, e.g. from a backup or from those app ids); only when the lake holds every \
         record of the directory, delete the file and the log's segments (wal-*.log) to start \
         as a new node"
    )]
    NodeId {
        /// The `node-id` file.
        path: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The writer has stopped (the server is shutting down).
    #[error("the write-ahead log is closed")]
    Closed,
}

impl WalError {
    /// Wraps I/O errors about `dir`.
    pub(crate) fn io(dir: &Path) -> impl Fn(std::io::Error) -> WalError + '_ {
        move |source| WalError::Io { dir: dir.display().to_string(), source }
    }
}

impl Classify for WalError {
    fn kind(&self) -> ErrorKind {
        match self {
            // A full disk, a failing one, a shutdown: the records were not taken, and a retry
            // later may succeed (the log never stays unusable once space is back).
            WalError::Full { .. }
            | WalError::Io { .. }
            | WalError::Failing { .. }
            | WalError::Closed => ErrorKind::Unavailable,
            WalError::TooLarge(_) => ErrorKind::TooLarge,
            // Reported at start, where an operator has to look.
            WalError::Corrupt(_) | WalError::Locked(_) | WalError::NodeId { .. } => {
                ErrorKind::Internal
            }
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            WalError::Failing { retry_after, .. } => Some((*retry_after).max(WAL_RETRY_AFTER)),
            _ => self.kind().is_retryable().then_some(WAL_RETRY_AFTER),
        }
    }
}
