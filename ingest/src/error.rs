//! Errors of the ingest service.

use tarn_catalog::{ApiError, ErrorCode};

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
    /// The table does not exist and auto-create is off.
    #[error("table '{name}' does not exist (auto-create is off: create the table first)")]
    TableNotFound {
        /// The qualified table name.
        name: String,
    },
    /// The catalog reported an error.
    #[error(transparent)]
    Catalog(#[from] tarn_catalog::Error),
    /// The lake reported an error.
    #[error(transparent)]
    Lake(#[from] tarn_lake::Error),
}

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e {
            Error::Decode(_) => ApiError::bad_request(e.to_string()),
            Error::UnsupportedMediaType(_) => {
                ApiError::new(ErrorCode::UnsupportedMediaType, e.to_string())
            }
            Error::TableNotFound { .. } => ApiError::new(ErrorCode::NotFound, e.to_string()),
            Error::Catalog(e) => e.into(),
            Error::Lake(e) => e.into(),
        }
    }
}
