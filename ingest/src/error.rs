//! Errors of the ingest service.

use std::time::Duration;

use tarn_lake::{Classify, ErrorKind};

use crate::wal::WalError;
use crate::DecodeError;

/// Everything that can go wrong while ingesting a request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The body could not be decoded; nothing of it was appended.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The body's content type or encoding is not one Tarn ingests.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// A compressed body could not be decompressed.
    #[error("the body is not valid {encoding}: {reason}")]
    BadEncoding {
        /// The `Content-Encoding`.
        encoding: String,
        /// What the decompressor said.
        reason: String,
    },
    /// The (decompressed) body is larger than the limit.
    #[error("the body is larger than {limit} bytes (after decompression)")]
    TooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// A file to load holds something Tarn would have to keep in memory whole and that is
    /// larger than it does: a JSON file (an array is parsed whole), or one line of NDJSON.
    #[error("{0}")]
    FileTooLarge(String),
    /// The table does not exist and auto-create is off.
    #[error("table '{name}' does not exist (auto-create is off: create the table first)")]
    TableNotFound {
        /// The qualified table name.
        name: String,
    },
    /// The write-ahead log refused the records (full, closed or failing).
    #[error(transparent)]
    Wal(#[from] WalError),
    /// The request is not allowed on this table.
    #[error("{0}")]
    Forbidden(String),
    /// The unique-key index of a table is full.
    #[error(
        "table '{table}' has more than {limit} unique keys, the most this server indexes; raise \
         --unique-key-max (memory: about 32 bytes per key)"
    )]
    UniqueKeyLimit {
        /// The qualified table name.
        table: String,
        /// The configured limit.
        limit: usize,
    },
    /// Reading a table (for its unique keys) failed.
    #[error("cannot read the table's unique keys: {0}")]
    Scan(String),
    /// A form post could not be taken (a bad redirect target, a file field).
    #[error("{0}")]
    BadForm(String),
    /// The local spool directory (uploads, dropped files) cannot be written, e.g. the disk is
    /// full.
    #[error("cannot write the upload spool in {dir}: {source}")]
    Spool {
        /// The spool directory.
        dir: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The table's records from before a restart are not replayed into the lake yet, and it
    /// has a unique key (whose index would miss their keys).
    #[error(
        "table '{table}' has a unique key and its records from before the restart are not in \
         the lake yet (storage is unreachable, or the replay is under way); retry later"
    )]
    Replaying {
        /// The qualified table name.
        table: String,
    },
    /// A bug: something that cannot happen did (a task panicked).
    #[error("{0}")]
    Internal(String),
    /// The catalog reported an error.
    #[error(transparent)]
    Catalog(#[from] tarn_catalog::Error),
    /// The lake reported an error.
    #[error(transparent)]
    Lake(#[from] tarn_lake::Error),
}

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How long clients are asked to wait when the WAL is full or a disk cannot be written.
const WAL_RETRY_AFTER: Duration = Duration::from_secs(1);

/// How long clients are asked to wait when a unique-key index is full.
const INDEX_RETRY_AFTER: Duration = Duration::from_secs(60);

impl Classify for Error {
    fn kind(&self) -> ErrorKind {
        match self {
            Error::Decode(_) | Error::BadEncoding { .. } | Error::BadForm(_) => ErrorKind::BadInput,
            Error::Forbidden(_) => ErrorKind::Forbidden,
            Error::UniqueKeyLimit { .. }
            | Error::Scan(_)
            | Error::Spool { .. }
            | Error::Replaying { .. } => ErrorKind::Unavailable,
            Error::UnsupportedMediaType(_) => ErrorKind::UnsupportedFormat,
            Error::TooLarge { .. } | Error::FileTooLarge(_) => ErrorKind::TooLarge,
            Error::TableNotFound { .. } => ErrorKind::NotFound,
            Error::Wal(e) => e.kind(),
            Error::Internal(_) => ErrorKind::Internal,
            Error::Catalog(e) => e.kind(),
            Error::Lake(e) => e.kind(),
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::UniqueKeyLimit { .. } => Some(INDEX_RETRY_AFTER),
            Error::Scan(_) | Error::Spool { .. } | Error::Replaying { .. } => Some(WAL_RETRY_AFTER),
            Error::Wal(e) => e.retry_after(),
            Error::Catalog(e) => e.retry_after(),
            Error::Lake(e) => e.retry_after(),
            _ => None,
        }
    }
}
