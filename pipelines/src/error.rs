//! What goes wrong with jobs, and what kind of failure each is.

use tarn_lake::{Classify, ErrorKind};

/// An error of the pipelines crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A job definition is not valid; the message says which field and why.
    #[error("invalid job definition: {0}")]
    InvalidJob(String),
    /// The `[alerts]` settings are not valid; the message says which.
    #[error("invalid [alerts] settings: {0}")]
    InvalidAlerts(String),
    /// No job of that name.
    #[error("no job is named '{0}'")]
    JobNotFound(String),
    /// No run of that id.
    #[error("job '{job}' has no run '{run_id}'")]
    RunNotFound {
        /// The job.
        job: String,
        /// The run asked for.
        run_id: String,
    },
    /// The job's output cannot be written as declared (a table another job or table owns, an
    /// external table, a schema that does not fit).
    #[error("job '{job}' cannot write its output: {reason}")]
    Output {
        /// The job.
        job: String,
        /// Why.
        reason: String,
    },
    /// The job ran longer than its timeout and was stopped.
    #[error("the run took longer than the job's timeout ({0}) and was stopped")]
    Timeout(String),
    /// The notification settings are not usable (an SMTP URL, a sender, a recipient).
    #[error("{0}")]
    Notify(#[from] crate::notify::Error),
    /// The query failed.
    #[error(transparent)]
    Query(#[from] tarn_query::Error),
    /// The catalog failed.
    #[error(transparent)]
    Catalog(#[from] tarn_catalog::Error),
    /// Storage failed.
    #[error(transparent)]
    Lake(#[from] tarn_lake::Error),
    /// Storage failed while reading or writing the jobs' documents.
    #[error("storage failed: {0}")]
    Store(#[from] object_store::Error),
    /// Encoding the exported rows failed.
    #[error("cannot encode the exported rows: {0}")]
    Encode(#[from] arrow::error::ArrowError),
    /// A stored document of the jobs does not read; the message says which.
    #[error("{0}")]
    Document(String),
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Classify for Error {
    fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidJob(_) | Error::InvalidAlerts(_) | Error::Notify(_) => {
                ErrorKind::BadInput
            }
            Error::JobNotFound(_) | Error::RunNotFound { .. } => ErrorKind::NotFound,
            Error::Output { .. } => ErrorKind::Conflict,
            Error::Timeout(_) => ErrorKind::Timeout,
            Error::Query(e) => e.kind(),
            Error::Catalog(e) => e.kind(),
            Error::Lake(e) => e.kind(),
            Error::Store(e) if tarn_lake::is_transient_store_error(e) => ErrorKind::Unavailable,
            Error::Store(object_store::Error::NotFound { .. }) => ErrorKind::NotFound,
            Error::Store(_) => ErrorKind::Internal,
            Error::Encode(_) => ErrorKind::Unprocessable,
            Error::Document(_) => ErrorKind::Internal,
        }
    }
}
