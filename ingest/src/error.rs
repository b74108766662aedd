//! Errors of the ingest service.

use std::time::Duration;

use tarn_catalog::{ApiError, ErrorCode};

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
    /// The catalog reported an error.
    #[error(transparent)]
    Catalog(#[from] tarn_catalog::Error),
    /// The lake reported an error.
    #[error(transparent)]
    Lake(#[from] tarn_lake::Error),
}

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How long clients are asked to wait when the WAL is full.
const WAL_RETRY_AFTER: Duration = Duration::from_secs(1);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e {
            Error::Decode(_) | Error::BadEncoding { .. } | Error::BadForm(_) => {
                ApiError::bad_request(e.to_string())
            }
            Error::Forbidden(_) => ApiError::new(ErrorCode::Forbidden, e.to_string()),
            Error::UniqueKeyLimit { .. } => {
                tracing::error!(error = %e, "unique-key index limit reached");
                ApiError::unavailable(e.to_string(), Duration::from_secs(60))
            }
            Error::Scan(_) => ApiError::unavailable(e.to_string(), WAL_RETRY_AFTER),
            Error::UnsupportedMediaType(_) => {
                ApiError::new(ErrorCode::UnsupportedMediaType, e.to_string())
            }
            Error::TooLarge { .. } => ApiError::new(ErrorCode::PayloadTooLarge, e.to_string()),
            Error::TableNotFound { .. } => ApiError::new(ErrorCode::NotFound, e.to_string()),
            Error::Wal(WalError::Full { .. })
            | Error::Wal(WalError::Failing { .. })
            | Error::Wal(WalError::Closed) => ApiError::unavailable(e.to_string(), WAL_RETRY_AFTER),
            Error::Wal(WalError::Io { .. }) => {
                tracing::error!(error = %e, "the write-ahead log cannot be written");
                ApiError::unavailable(e.to_string(), WAL_RETRY_AFTER)
            }
            Error::Wal(WalError::TooLarge(_)) => {
                ApiError::new(ErrorCode::PayloadTooLarge, e.to_string())
            }
            Error::Wal(WalError::Corrupt(_))
            | Error::Wal(WalError::Locked(_))
            | Error::Wal(WalError::NodeId { .. }) => ApiError::internal(e),
            Error::Catalog(e) => e.into(),
            Error::Lake(e) => e.into(),
        }
    }
}
