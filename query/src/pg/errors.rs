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

/// The SQLSTATE of an error: its kind's ([`sqlstate_of`]), or a more precise one where
/// Postgres clients tell apart cases one kind holds (a syntax error from another bad query).
pub(super) fn sqlstate(e: &Error) -> &'static str {
    match e {
        Error::ReadOnly(_) => "25006",      // read_only_sql_transaction
        Error::Syntax(_) => "42601",        // syntax_error
        Error::Data(_) => "22000",          // data_exception
        Error::TableNotFound(_) => "42P01", // undefined_table
        _ => sqlstate_of(e.kind()),
    }
}

/// The SQLSTATE of each kind: the one table of the Postgres endpoint.
pub(super) fn sqlstate_of(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::BadInput => "42000", // syntax_error_or_access_rule_violation
        ErrorKind::NotFound => "42P01", // undefined_table
        ErrorKind::Unauthenticated => "28P01", // invalid_password
        ErrorKind::Forbidden => "42501", // insufficient_privilege
        ErrorKind::Conflict => "40001", // serialization_failure: run it again
        ErrorKind::TooLarge => "54000", // program_limit_exceeded
        ErrorKind::NotAllowed | ErrorKind::UnsupportedFormat | ErrorKind::NotAcceptable => "0A000",
        ErrorKind::Unprocessable => "22000", // data_exception
        ErrorKind::Busy => "53300",          // too_many_connections
        ErrorKind::Timeout => "57014",       // query_canceled
        ErrorKind::Unavailable => "58030",   // io_error
        ErrorKind::NotSupported => "0A000",  // feature_not_supported
        ErrorKind::Internal => "XX000",      // internal_error
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
        let mut states = std::collections::BTreeSet::new();
        for kind in ErrorKind::ALL {
            let state = sqlstate_of(kind);
            // Five characters of digits and upper-case letters, of a class Postgres defines.
            assert_eq!(state.len(), 5, "{kind}");
            assert!(state.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_uppercase()), "{kind}");
            states.insert(state);
        }
        // Only the kinds of unsupported things share a state.
        assert_eq!(states.len(), ErrorKind::ALL.len() - 3);
        assert_eq!(sqlstate(&Error::ReadOnly("x".into())), "25006");
        assert_eq!(sqlstate(&Error::Syntax("x".into())), "42601");
        assert_eq!(sqlstate(&Error::TableNotFound("x".into())), "42P01");
        assert_eq!(sqlstate(&Error::Timeout(std::time::Duration::from_secs(1))), "57014");
        assert_eq!(sqlstate(&Error::TooManyQueries("x".into())), "53300");
        assert_eq!(sqlstate(&Error::Engine(DataFusionError::Internal("x".into()))), "XX000");
    }
}
