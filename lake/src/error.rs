//! Errors of the storage layer.

use std::time::Duration;

use deltalake::DeltaTableError;

use crate::{Classify, ErrorKind};

/// Everything that can go wrong while talking to the lake.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The lake location could not be understood.
    #[error("invalid lake location '{location}': {reason}")]
    InvalidLocation {
        /// The location as given.
        location: String,
        /// Why it was refused.
        reason: String,
    },
    /// There is no Delta table at the given place.
    #[error("no Delta table at {location}")]
    TableNotFound {
        /// Where the table was looked for.
        location: String,
    },
    /// A Delta table already exists where a new one was to be created.
    #[error("a Delta table already exists at {location}")]
    TableExists {
        /// Where the table is.
        location: String,
    },
    /// A time-travel read asked for a version the table does not have (any more).
    #[error("{0}")]
    VersionNotFound(String),
    /// A commit meant for exactly one version found it taken by another writer
    /// ([`crate::LakeTable::append_txn_next`]): nothing was committed.
    #[error("version {version} of the table was committed by another writer first")]
    VersionTaken {
        /// The version that was taken.
        version: u64,
    },
    /// Batches handed to an append do not fit the table's schema.
    #[error("the data does not match the table's schema: {0}")]
    SchemaMismatch(String),
    /// An error reported by the Delta Lake implementation.
    #[error(transparent)]
    Delta(#[from] DeltaTableError),
    /// An error reported by the object store.
    #[error(transparent)]
    ObjectStore(#[from] object_store::Error),
    /// An error reported by Arrow.
    #[error(transparent)]
    Arrow(#[from] arrow::error::ArrowError),
    /// A local I/O error, e.g. while creating the lake directory.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// True when the storage could not be reached or failed transiently (network errors, 5xx
    /// answers of S3): the operation may succeed when retried later. Such errors are reported as
    /// "service unavailable", never as a bug.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::ObjectStore(e) => is_transient_store_error(e),
            Error::Delta(DeltaTableError::ObjectStore { source }) => {
                is_transient_store_error(source)
            }
            _ => false,
        }
    }
}

/// How long clients are asked to wait when storage is unreachable.
pub const STORAGE_RETRY_AFTER: Duration = Duration::from_secs(1);

impl Classify for Error {
    fn kind(&self) -> ErrorKind {
        if self.is_transient() {
            return ErrorKind::Unavailable;
        }
        match self {
            Error::InvalidLocation { .. } => ErrorKind::BadInput,
            Error::TableNotFound { .. } | Error::VersionNotFound(_) => ErrorKind::NotFound,
            Error::TableExists { .. } | Error::VersionTaken { .. } => ErrorKind::Conflict,
            Error::SchemaMismatch(_) => ErrorKind::Unprocessable,
            Error::Delta(_) | Error::ObjectStore(_) | Error::Arrow(_) | Error::Io { .. } => {
                ErrorKind::Internal
            }
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        self.is_transient().then_some(STORAGE_RETRY_AFTER)
    }
}

/// True when an object store error means the store could not be reached or failed
/// transiently (see [`Error::is_transient`]).
pub fn is_transient_store_error(e: &object_store::Error) -> bool {
    // `Generic` is what the HTTP-based stores return when a request failed after its retries
    // (connection refused, timeouts, 5xx). `NotFound`, `AlreadyExists`, `Precondition`,
    // `NotImplemented` and friends are definite answers.
    matches!(e, object_store::Error::Generic { .. })
}
