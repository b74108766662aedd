//! Errors of the catalog.

/// Everything that can go wrong while reading or changing the catalog.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A table or namespace name breaks the naming rules.
    #[error("invalid table name '{name}': {reason}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// Which rule it breaks.
        reason: String,
    },
    /// No table of that name is in the catalog.
    #[error("table '{name}' does not exist")]
    TableNotFound {
        /// The qualified name.
        name: String,
    },
    /// A table of that name is already in the catalog.
    #[error("table '{name}' already exists")]
    TableExists {
        /// The qualified name.
        name: String,
    },
    /// A table definition is not valid: an unknown field, a bad type, an expression that does
    /// not compile, a reference to a column that does not exist.
    #[error("invalid table definition: {reason}")]
    InvalidDefinition {
        /// What is wrong, and where.
        reason: String,
    },
    /// A change cannot be made in the table's current state (it would break existing data, or
    /// someone else changed the table meanwhile).
    #[error("cannot change table '{name}': {reason}")]
    Conflict {
        /// The qualified name.
        name: String,
        /// Why.
        reason: String,
    },
    /// The table is an external table of plain files (Parquet, CSV, NDJSON): it has no Delta
    /// log, hence no versions, history or Delta handle.
    #[error("table '{name}' is an external {format} table, not a Delta table: it has no Delta log (versions, history)")]
    NotDelta {
        /// The qualified name.
        name: String,
        /// The table's format.
        format: String,
    },
    /// A location to crawl does not exist, cannot be read, or may not be crawled from here.
    #[error("cannot crawl {location}: {reason}")]
    Location {
        /// The location as given.
        location: String,
        /// Why.
        reason: String,
        /// True when crawling it is not allowed (rather than impossible).
        forbidden: bool,
    },
    /// A document Tarn keeps in the lake (a table's definition, an async query's status)
    /// could not be parsed: written by something else, or damaged.
    #[error("the stored document {path} is not valid: {source}")]
    Document {
        /// The document's path inside the lake.
        path: String,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// The lake reported an error.
    #[error(transparent)]
    Lake(#[from] tarn_lake::Error),
    /// The object store reported an error while reading or writing catalog documents.
    #[error(transparent)]
    ObjectStore(#[from] object_store::Error),
}

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl tarn_lake::Classify for Error {
    fn kind(&self) -> tarn_lake::ErrorKind {
        use tarn_lake::ErrorKind;
        match self {
            Error::InvalidName { .. } | Error::InvalidDefinition { .. } => ErrorKind::BadInput,
            Error::Conflict { .. } | Error::NotDelta { .. } | Error::TableExists { .. } => {
                ErrorKind::Conflict
            }
            Error::Location { forbidden: true, .. } => ErrorKind::Forbidden,
            Error::Location { .. } => ErrorKind::BadInput,
            Error::TableNotFound { .. } => ErrorKind::NotFound,
            Error::Lake(e) => e.kind(),
            Error::ObjectStore(e) if tarn_lake::is_transient_store_error(e) => {
                ErrorKind::Unavailable
            }
            Error::ObjectStore(_) | Error::Document { .. } => ErrorKind::Internal,
        }
    }

    fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Error::Lake(e) => e.retry_after(),
            Error::ObjectStore(e) if tarn_lake::is_transient_store_error(e) => {
                Some(tarn_lake::STORAGE_RETRY_AFTER)
            }
            _ => None,
        }
    }
}
