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
    /// A catalog document could not be parsed: written by something else, or damaged.
    #[error("catalog document {path} is not valid: {source}")]
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
