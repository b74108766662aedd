//! Tarn's errors as Postgres errors: SQLSTATEs from one table.
//!
//! Every error of a query is a [`crate::Error`]; [`sqlstate`] maps its kind to a SQLSTATE, more
//! precisely where Postgres clients tell cases apart that one kind holds (a syntax error
//! from another bad query, an undefined table from another thing not found). Errors that are
//! bugs are logged and sent without internals.

use datafusion::error::DataFusionError;
use datafusion::sql::sqlparser::parser::ParserError;
use datafusion_postgres::pgwire;
use pgwire::api::{ClientInfo, ErrorHandler};
use pgwire::error::{ErrorInfo, PgWireError};
use tarn_lake::{Classify, ErrorKind};

use crate::Error;

/// The SQLSTATE of an error: the one table of the Postgres endpoint.
pub(super) fn sqlstate(e: &Error) -> &'static str {
    match (e, e.kind()) {
        (Error::ReadOnly(_), _) => "25006", // read_only_sql_transaction
        (Error::Syntax(_), _) => "42601",   // syntax_error
        (Error::Data(_), _) => "22000",     // data_exception
        (Error::TableNotFound(_), _) => "42P01", // undefined_table
        (_, ErrorKind::BadInput) => "42000", // syntax_error_or_access_rule_violation
        (_, ErrorKind::NotFound) => "42P01",
        (_, ErrorKind::Unauthenticated) => "28P01", // invalid_password
        (_, ErrorKind::Forbidden) => "42501",       // insufficient_privilege
        (_, ErrorKind::Conflict) => "40001",        // serialization_failure: run it again
        (_, ErrorKind::TooLarge) => "54000",        // program_limit_exceeded
        (_, ErrorKind::UnsupportedFormat | ErrorKind::NotAcceptable) => "0A000",
        (_, ErrorKind::Unprocessable) => "22000",
        (_, ErrorKind::Busy) => "53300",    // too_many_connections
        (_, ErrorKind::Timeout) => "57014", // query_canceled
        (_, ErrorKind::Unavailable) => "58030", // io_error
        (_, ErrorKind::NotSupported) => "0A000", // feature_not_supported
        (_, ErrorKind::Internal) => "XX000", // internal_error
    }
}

/// A Postgres error with `code` and `message`.
pub(super) fn user_error(severity: &str, code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(severity.into(), code.into(), message)))
}

/// A Tarn error as a Postgres error.
pub(super) fn pg_error(e: Error) -> PgWireError {
    let code = sqlstate(&e);
    let message = if e.kind() == ErrorKind::Internal {
        tracing::error!(error = %e, "internal error in a Postgres query");
        "internal error; the server log has the details".to_string()
    } else {
        e.to_string()
    };
    user_error("ERROR", code, message)
}

/// Maps the errors datafusion-postgres hands back (DataFusion's, the SQL parser's) before
/// they are sent.
pub(super) struct TarnErrors;

impl ErrorHandler for TarnErrors {
    fn on_error<C>(&self, _client: &C, error: &mut PgWireError)
    where
        C: ClientInfo,
    {
        if let PgWireError::ApiError(inner) = error {
            let mapped = if let Some(e) = inner.downcast_ref::<DataFusionError>() {
                Some(pg_error(Error::from_ref(e)))
            } else {
                inner.downcast_ref::<ParserError>().map(|e| pg_error(Error::Syntax(e.to_string())))
            };
            if let Some(mapped) = mapped {
                *error = mapped;
            }
        }
        tracing::debug!(error = %error, "Postgres error sent");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_a_sqlstate() {
        for kind in ErrorKind::ALL {
            // One error of each kind, through the table.
            let e = match kind {
                ErrorKind::Busy => Error::TooManyQueries("x".into()),
                ErrorKind::Timeout => Error::Timeout(std::time::Duration::from_secs(1)),
                ErrorKind::Internal => Error::Engine(DataFusionError::Internal("x".into())),
                _ => continue,
            };
            assert_eq!(e.kind(), kind);
            assert_eq!(sqlstate(&e).len(), 5);
        }
        assert_eq!(sqlstate(&Error::ReadOnly("x".into())), "25006");
        assert_eq!(sqlstate(&Error::Syntax("x".into())), "42601");
        assert_eq!(sqlstate(&Error::TableNotFound("x".into())), "42P01");
        assert_eq!(sqlstate(&Error::Timeout(std::time::Duration::from_secs(1))), "57014");
        assert_eq!(sqlstate(&Error::TooManyQueries("x".into())), "53300");
    }
}
