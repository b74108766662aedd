//! Errors of the query service, and what kind of failure each is.
//!
//! DataFusion reports every failure as a `DataFusionError`; [`Error::from`] classifies it once,
//! by its root cause, into a variant that says whose problem it is: the query's (syntax,
//! plan, a value the query computes on), the data's (a file that does not read as its
//! format), the server's resources, storage, or the engine itself (a bug). Both frontends
//! report the variants through [`Classify::kind`]: HTTP statuses, Postgres SQLSTATEs.

use std::time::Duration;

use arrow::error::ArrowError;
use datafusion::error::DataFusionError;
use tarn_lake::{Classify, ErrorKind};

/// Everything that can go wrong while answering a query.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The statement would change something; the endpoint is read-only.
    #[error("the SQL endpoint is read-only: {0}")]
    ReadOnly(String),
    /// A table the query names is not in the catalog (or has no such version).
    #[error("table '{0}' does not exist")]
    TableNotFound(String),
    /// A table exists but not at the version or time the query asks for.
    #[error("{0}")]
    VersionNotFound(String),
    /// The request is not a query Tarn can run (empty, several statements, a bad time-travel
    /// clause, ...).
    #[error("{0}")]
    BadQuery(String),
    /// The SQL text does not parse.
    #[error("{0}")]
    Syntax(String),
    /// The query parses but cannot be planned (an unknown column, a type mismatch).
    #[error("{0}")]
    Plan(String),
    /// The query failed on the values it computes (a cast that cannot succeed, a division by
    /// zero, a bad argument to a function, a scalar subquery of several rows).
    #[error("{0}")]
    Data(String),
    /// A data file of a table does not read as what it claims to be (crawled files Tarn did
    /// not write).
    #[error("a data file of the table cannot be read: {0}")]
    UnreadableData(String),
    /// A file of a table went away while the query read it (compaction, vacuum, another
    /// writer).
    #[error("a file of a table went away while the query read it; run it again: {0}")]
    FileVanished(String),
    /// The query needs more memory or disk than the server grants it.
    #[error("the query needs more resources than this server grants it: {0}")]
    ResourcesExhausted(String),
    /// The query uses a feature the engine does not offer.
    #[error("{0}")]
    NotSupported(String),
    /// Storage could not be reached while the query read it.
    #[error("storage is unavailable: {0}")]
    StorageUnavailable(String),
    /// The query's stages could not run on the cluster's workers: none answers, or one
    /// stopped answering while it ran a part of the query. Running it again plans on the
    /// workers that answer.
    #[error("the query's workers are unavailable: {0}")]
    WorkersUnavailable(String),
    /// The queue of queries waiting for a slot is full.
    #[error("too many queries: {0}")]
    TooManyQueries(String),
    /// The query ran longer than its time limit and was stopped.
    #[error("the query ran longer than its limit of {} s and was stopped", .0.as_secs_f64())]
    Timeout(Duration),
    /// No async query has this id (never, or its results expired).
    #[error("no query '{0}': it never existed or its results expired")]
    QueryNotFound(String),
    /// The async query exists but its results cannot be read (yet).
    #[error("{0}")]
    NotReady(String),
    /// A failure of the engine itself: a bug, in DataFusion or in Tarn's use of it.
    #[error("query engine error: {0}")]
    Engine(DataFusionError),
    /// The catalog reported an error.
    #[error(transparent)]
    Catalog(#[from] tarn_catalog::Error),
    /// The lake reported an error.
    #[error(transparent)]
    Lake(#[from] tarn_lake::Error),
}

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How long a client is asked to wait when the query did not fit the server's resources.
const RESOURCES_RETRY_AFTER: Duration = Duration::from_secs(5);
/// How long a client is asked to wait when the query queue is full.
const QUEUE_RETRY_AFTER: Duration = Duration::from_secs(1);

impl Classify for Error {
    fn kind(&self) -> ErrorKind {
        match self {
            Error::ReadOnly(_) => ErrorKind::Forbidden,
            Error::TableNotFound(_) | Error::VersionNotFound(_) | Error::QueryNotFound(_) => {
                ErrorKind::NotFound
            }
            Error::BadQuery(_) | Error::Syntax(_) | Error::Plan(_) | Error::Data(_) => {
                ErrorKind::BadInput
            }
            Error::UnreadableData(_) => ErrorKind::Unprocessable,
            Error::FileVanished(_) | Error::NotReady(_) => ErrorKind::Conflict,
            Error::ResourcesExhausted(_)
            | Error::StorageUnavailable(_)
            | Error::WorkersUnavailable(_) => ErrorKind::Unavailable,
            Error::NotSupported(_) => ErrorKind::NotSupported,
            Error::TooManyQueries(_) => ErrorKind::Busy,
            Error::Timeout(_) => ErrorKind::Timeout,
            Error::Engine(_) => ErrorKind::Internal,
            Error::Catalog(e) => e.kind(),
            Error::Lake(e) => e.kind(),
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::ResourcesExhausted(_) => Some(RESOURCES_RETRY_AFTER),
            Error::TooManyQueries(_) => Some(QUEUE_RETRY_AFTER),
            Error::StorageUnavailable(_) => Some(tarn_lake::STORAGE_RETRY_AFTER),
            Error::WorkersUnavailable(_) => Some(crate::cluster::PROBE_EVERY),
            Error::Catalog(e) => e.retry_after(),
            Error::Lake(e) => e.retry_after(),
            _ => None,
        }
    }
}

/// Words of DataFusion's execution errors that report a broken invariant of the engine (a
/// bug), not something about the query or its values.
const ENGINE_FAULTS: &[&str] = &[
    "panicked",
    "deadlock",
    "Non Panic Task error",
    "not found in Union",
    "not found in InterleaveExec",
    "requires at least one input",
    "Cannot create union schema",
    "Latest batch should",
    "Failed to downcast",
    "Unexpected",
    "unexpected",
];

/// Words of Arrow's invalid-argument errors that report a malformed batch built by the engine.
const BATCH_FAULTS: &[&str] = &[
    "column types must match schema types",
    "number of columns",
    "all columns in a record batch must have the same length",
];

/// DataFusion's errors by their root cause: whose problem is it?
impl From<DataFusionError> for Error {
    fn from(e: DataFusionError) -> Self {
        classify(&e).unwrap_or(Error::Engine(e))
    }
}

impl Error {
    /// [`Error::from`] for an error DataFusion hands over by reference (errors are not
    /// `Clone`); an engine fault keeps its text.
    pub fn from_ref(e: &DataFusionError) -> Self {
        classify(e).unwrap_or_else(|| Error::Engine(DataFusionError::Execution(e.to_string())))
    }
}

/// The variant of a DataFusion error by its root cause; `None` for a fault of the engine.
fn classify(e: &DataFusionError) -> Option<Error> {
    let root = e.find_root();
    let message = root.to_string();
    // Readers of Parquet and other formats wrap the storage error that stopped them.
    if let DataFusionError::ParquetError(_) | DataFusionError::ArrowError(..) = root {
        if let Some(store) = store_cause(root).and_then(|s| from_store(s, &message)) {
            return Some(store);
        }
    }
    if worker_failed(e) {
        return Some(Error::WorkersUnavailable(message));
    }
    Some(match root {
        DataFusionError::SQL(..) => Error::Syntax(message),
        DataFusionError::Plan(_) | DataFusionError::SchemaError(..) => Error::Plan(message),
        DataFusionError::Execution(text) if ENGINE_FAULTS.iter().any(|f| text.contains(f)) => {
            return None
        }
        DataFusionError::Execution(_) => Error::Data(message),
        DataFusionError::ArrowError(arrow, _) => match arrow.as_ref() {
            ArrowError::InvalidArgumentError(text)
                if BATCH_FAULTS.iter().any(|f| text.contains(f)) =>
            {
                return None
            }
            ArrowError::CastError(_)
            | ArrowError::ParseError(_)
            | ArrowError::DivideByZero
            | ArrowError::ComputeError(_)
            | ArrowError::InvalidArgumentError(_)
            | ArrowError::ArithmeticOverflow(_) => Error::Data(message),
            // Files Tarn did not write (crawled tables) that do not read as their format.
            ArrowError::CsvError(_) | ArrowError::JsonError(_) | ArrowError::ParquetError(_) => {
                Error::UnreadableData(message)
            }
            _ => return None,
        },
        DataFusionError::ParquetError(_) => Error::UnreadableData(message),
        DataFusionError::ObjectStore(store) => return from_store(store, &message),
        DataFusionError::ResourcesExhausted(_) => Error::ResourcesExhausted(message),
        DataFusionError::NotImplemented(_) => Error::NotSupported(message),
        // Tarn's own errors that DataFusion carried (the catalog failing while a table was
        // resolved, a version that does not exist) keep what they were.
        DataFusionError::External(inner) => return inner.downcast_ref::<Error>().map(rebuild),
        _ => return None,
    })
}

/// True when a worker of the cluster failed the query: unreachable, gone mid-stream, or
/// refusing the cluster's secret. Errors of the query itself on a worker come back as the
/// DataFusion error they were (datafusion-distributed encodes them); what is left as a gRPC
/// status is the network's or the worker's.
fn worker_failed(e: &DataFusionError) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(cause) = source {
        if cause.downcast_ref::<tonic::Status>().is_some() {
            return true;
        }
        if let Some(DataFusionError::External(inner)) = cause.downcast_ref::<DataFusionError>() {
            if let Some(Error::WorkersUnavailable(_)) = inner.downcast_ref::<Error>() {
                return true;
            }
        }
        source = cause.source();
    }
    // Connecting to a worker fails with an execution error that names it.
    e.to_string().contains("Distributed DataFusion")
}

/// A storage failure under a query: a file gone (compacted or vacuumed away meanwhile) or
/// storage unreachable; `None` for other storage errors (engine faults).
fn from_store(store: &object_store::Error, message: &str) -> Option<Error> {
    match store {
        object_store::Error::NotFound { .. } => Some(Error::FileVanished(message.to_string())),
        store if tarn_lake::is_transient_store_error(store) => {
            Some(Error::StorageUnavailable(message.to_string()))
        }
        _ => None,
    }
}

/// The object-store error under `e`, if storage is what failed: Parquet's and Arrow's errors
/// and `std::io::Error` wrap it (the latter without naming it as its source).
pub(crate) fn store_cause<'a>(
    mut e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a object_store::Error> {
    loop {
        if let Some(store) = e.downcast_ref::<object_store::Error>() {
            return Some(store);
        }
        e = match e.downcast_ref::<std::io::Error>() {
            Some(io) => io.get_ref()?,
            None => e.source()?,
        };
    }
}

/// A copy of one of our errors that DataFusion hands back by reference (errors are not
/// `Clone`): the same variant where it carries text, the same kind and message otherwise.
fn rebuild(e: &Error) -> Error {
    let text = || e.to_string();
    match e {
        Error::ReadOnly(s) => Error::ReadOnly(s.clone()),
        Error::TableNotFound(s) => Error::TableNotFound(s.clone()),
        Error::VersionNotFound(s) => Error::VersionNotFound(s.clone()),
        Error::BadQuery(s) => Error::BadQuery(s.clone()),
        Error::Syntax(s) => Error::Syntax(s.clone()),
        Error::Plan(s) => Error::Plan(s.clone()),
        Error::Data(s) => Error::Data(s.clone()),
        Error::NotSupported(s) => Error::NotSupported(s.clone()),
        Error::TooManyQueries(s) => Error::TooManyQueries(s.clone()),
        Error::QueryNotFound(s) => Error::QueryNotFound(s.clone()),
        Error::NotReady(s) => Error::NotReady(s.clone()),
        Error::Timeout(d) => Error::Timeout(*d),
        Error::WorkersUnavailable(s) => Error::WorkersUnavailable(s.clone()),
        other => match other.kind() {
            ErrorKind::NotFound => Error::VersionNotFound(text()),
            ErrorKind::Unavailable => Error::StorageUnavailable(text()),
            ErrorKind::Unprocessable => Error::UnreadableData(text()),
            ErrorKind::Conflict => Error::FileVanished(text()),
            ErrorKind::BadInput => Error::BadQuery(text()),
            ErrorKind::Forbidden => Error::ReadOnly(text()),
            _ => Error::Engine(DataFusionError::Execution(text())),
        },
    }
}

/// Carries a Tarn error through DataFusion (whose traits return `DataFusionError`), so that
/// [`Error::from`] finds it again.
pub(crate) fn carry(e: impl Into<Error>) -> DataFusionError {
    DataFusionError::External(Box::new(e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_faults_are_not_the_users() {
        let bug = Error::from(DataFusionError::Execution(
            "SortPreservingMerge task panicked or was cancelled".into(),
        ));
        assert_eq!(bug.kind(), ErrorKind::Internal);
        let user = Error::from(DataFusionError::Execution(
            "Scalar subquery returned more than one row".into(),
        ));
        assert_eq!(user.kind(), ErrorKind::BadInput);
        let batch = Error::from(DataFusionError::ArrowError(
            Box::new(ArrowError::InvalidArgumentError(
                "number of columns(2) must match number of fields(3) in schema".into(),
            )),
            None,
        ));
        assert_eq!(batch.kind(), ErrorKind::Internal);
        let zero =
            Error::from(DataFusionError::ArrowError(Box::new(ArrowError::DivideByZero), None));
        assert_eq!(zero.kind(), ErrorKind::BadInput);
    }

    #[test]
    fn our_errors_come_back_through_datafusion() {
        let carried = carry(Error::VersionNotFound("table 'default.t': no version 9".into()));
        let back = Error::from(DataFusionError::Context("planning".into(), Box::new(carried)));
        assert_eq!(back.kind(), ErrorKind::NotFound);
        assert!(back.to_string().contains("no version 9"), "{back}");
        let catalog = carry(tarn_catalog::Error::TableNotFound { name: "default.x".into() });
        assert_eq!(Error::from(catalog).kind(), ErrorKind::NotFound);
        let outage = carry(tarn_lake::Error::ObjectStore(object_store::Error::Generic {
            store: "S3",
            source: "connection refused".into(),
        }));
        assert_eq!(Error::from(outage).kind(), ErrorKind::Unavailable);
    }

    #[test]
    fn a_worker_failing_is_unavailable_and_a_query_error_on_a_worker_is_the_querys() {
        let gone = DataFusionError::External(Box::new(tonic::Status::unavailable(
            "error trying to connect: tcp connect error",
        )));
        let gone = Error::from(DataFusionError::Context("stage 2".into(), Box::new(gone)));
        assert!(matches!(gone, Error::WorkersUnavailable(_)), "{gone}");
        assert_eq!(gone.kind(), ErrorKind::Unavailable);
        assert!(gone.retry_after().is_some());
        let unreachable = Error::from(DataFusionError::Execution(
            "Error connecting to Distributed DataFusion worker on 'http://10.0.0.5:7000/': transport error"
                .into(),
        ));
        assert!(matches!(unreachable, Error::WorkersUnavailable(_)), "{unreachable}");
        // datafusion-distributed decodes a worker's own errors back into DataFusion's.
        let query =
            Error::from(DataFusionError::ArrowError(Box::new(ArrowError::DivideByZero), None));
        assert_eq!(query.kind(), ErrorKind::BadInput);
    }

    /// Found in review: a Parquet read stopped by storage was "unreadable data" (422), not an
    /// outage (503) or a file compacted away meanwhile (409).
    #[test]
    fn storage_failing_under_a_parquet_read_is_said_as_such() {
        use datafusion::parquet::errors::ParquetError;
        let under_parquet = |store: object_store::Error| {
            let io = std::io::Error::from(store);
            DataFusionError::ParquetError(Box::new(ParquetError::External(Box::new(io))))
        };
        let outage = under_parquet(object_store::Error::Generic {
            store: "S3",
            source: "connection refused".into(),
        });
        assert_eq!(Error::from(outage).kind(), ErrorKind::Unavailable);
        let gone = under_parquet(object_store::Error::NotFound {
            path: "default/t/part-0.parquet".into(),
            source: "no such key".into(),
        });
        assert_eq!(Error::from(gone).kind(), ErrorKind::Conflict);
        let corrupt = DataFusionError::ParquetError(Box::new(ParquetError::General(
            "Invalid Parquet file. Corrupt footer".into(),
        )));
        assert_eq!(Error::from(corrupt).kind(), ErrorKind::Unprocessable);
    }
}
