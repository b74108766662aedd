//! Errors of the query service and how they map to HTTP answers.

use datafusion::error::DataFusionError;
use tarn_catalog::{ApiError, ErrorCode};

/// Everything that can go wrong while answering a query.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The statement would change something; the endpoint is read-only.
    #[error("the SQL endpoint is read-only: {0}")]
    ReadOnly(String),
    /// A table the query names is not in the catalog.
    #[error("table '{0}' does not exist")]
    TableNotFound(String),
    /// The request is not a query Tarn can run (empty, several statements, ...).
    #[error("{0}")]
    BadQuery(String),
    /// The queue of queries waiting for a slot is full.
    #[error("too many queries: {0}")]
    TooManyQueries(String),
    /// The query ran longer than its time limit and was stopped.
    #[error("the query ran longer than its limit of {} s and was stopped", .0.as_secs_f64())]
    Timeout(std::time::Duration),
    /// No async query has this id (never, or its results expired).
    #[error("no query '{0}': it never existed or its results expired")]
    QueryNotFound(String),
    /// The async query exists but its results cannot be read (yet).
    #[error("{0}")]
    NotReady(String),
    /// DataFusion reported an error while planning or running the query.
    #[error(transparent)]
    DataFusion(#[from] DataFusionError),
    /// The catalog reported an error.
    #[error(transparent)]
    Catalog(#[from] tarn_catalog::Error),
}

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e {
            Error::ReadOnly(_) => ApiError::new(ErrorCode::Forbidden, e.to_string()),
            Error::TableNotFound(_) => ApiError::new(ErrorCode::NotFound, e.to_string()),
            Error::BadQuery(_) => ApiError::bad_request(e.to_string()),
            Error::TooManyQueries(_) => ApiError {
                retry_after: Some(std::time::Duration::from_secs(1)),
                ..ApiError::new(ErrorCode::TooManyRequests, e.to_string())
            },
            Error::Timeout(_) => ApiError::new(ErrorCode::Timeout, e.to_string()),
            Error::QueryNotFound(_) => ApiError::new(ErrorCode::NotFound, e.to_string()),
            Error::NotReady(_) => ApiError::new(ErrorCode::Conflict, e.to_string()),
            Error::Catalog(e) => e.into(),
            Error::DataFusion(e) => datafusion_error(e),
        }
    }
}

/// 422: a data file that does not read as what it claims to be.
fn unreadable_data(root: &DataFusionError) -> ApiError {
    ApiError::new(
        ErrorCode::Unprocessable,
        format!("a data file of the table cannot be read: {root}"),
    )
}

/// Maps a DataFusion error by its root cause: mistakes in the query are 400, exhausted
/// resources 503, unimplemented features 501, storage outages 503; the rest is a bug (500).
fn datafusion_error(e: DataFusionError) -> ApiError {
    use arrow::error::ArrowError;
    let root = e.find_root();
    match root {
        DataFusionError::SQL(..)
        | DataFusionError::Plan(_)
        | DataFusionError::SchemaError(..)
        | DataFusionError::Execution(_) => ApiError::bad_request(root.to_string()),
        DataFusionError::ArrowError(arrow, _) => match arrow.as_ref() {
            ArrowError::CastError(_)
            | ArrowError::ParseError(_)
            | ArrowError::DivideByZero
            | ArrowError::ComputeError(_)
            | ArrowError::InvalidArgumentError(_)
            | ArrowError::ArithmeticOverflow(_) => ApiError::bad_request(root.to_string()),
            // Files Tarn did not write (crawled tables) that do not read as their format.
            ArrowError::CsvError(_) | ArrowError::JsonError(_) | ArrowError::ParquetError(_) => {
                unreadable_data(root)
            }
            _ => ApiError::internal(&e),
        },
        DataFusionError::ParquetError(_) => unreadable_data(root),
        DataFusionError::ObjectStore(store)
            if matches!(store.as_ref(), object_store::Error::NotFound { .. }) =>
        {
            ApiError::new(
                ErrorCode::Conflict,
                format!(
                    "a file of a table went away while the query read it; run it again: {store}"
                ),
            )
        }
        DataFusionError::ResourcesExhausted(_) => ApiError::unavailable(
            format!("the query needs more resources than this server grants it: {root}"),
            std::time::Duration::from_secs(5),
        ),
        DataFusionError::NotImplemented(_) => {
            ApiError::new(ErrorCode::NotImplemented, root.to_string())
        }
        DataFusionError::ObjectStore(store) if tarn_lake::is_transient_store_error(store) => {
            ApiError::unavailable(
                format!("storage is unavailable: {store}"),
                std::time::Duration::from_secs(1),
            )
        }
        // Errors of Tarn's own components that DataFusion carried (e.g. the catalog failing
        // while a table was resolved) keep the answer they were given there.
        DataFusionError::External(inner) => match inner.downcast_ref::<ApiError>() {
            Some(api) => api.clone(),
            None => ApiError::internal(&e),
        },
        _ => ApiError::internal(&e),
    }
}
