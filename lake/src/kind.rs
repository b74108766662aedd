//! What kind of failure an error is, in words every frontend shares.
//!
//! Each Tarn crate has an error enum of its own, with variants named after what went wrong in
//! its domain. Each of them also answers [`Classify::kind`]: one of a small, transport-neutral
//! set of kinds that decides how a frontend reports the error — the HTTP crate maps kinds to
//! statuses in one table, the Postgres frontend maps them to SQLSTATEs in one table, and async
//! queries store the kind of their failure. No domain crate knows HTTP status codes.
//!
//! The kinds' names ([`ErrorKind::as_str`]) are stable: they are the `code` of every error
//! body of the HTTP API and of stored query statuses.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The kind of a failure, independent of the protocol that reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorKind {
    /// The input is malformed or asks for something impossible; the message says where.
    #[serde(rename = "bad_request")]
    BadInput,
    /// No credentials, or unknown ones.
    #[serde(rename = "unauthorized")]
    Unauthenticated,
    /// The credentials (or the endpoint's policy) do not allow this.
    #[serde(rename = "forbidden")]
    Forbidden,
    /// No such table, version, query or route.
    #[serde(rename = "not_found")]
    NotFound,
    /// The resource exists but does not take this operation (an HTTP route asked with a
    /// method it does not serve).
    #[serde(rename = "method_not_allowed")]
    NotAllowed,
    /// The request conflicts with the current state (the table exists, someone else changed
    /// it meanwhile, a file went away during a read).
    #[serde(rename = "conflict")]
    Conflict,
    /// The input is larger than the configured limit.
    #[serde(rename = "payload_too_large")]
    TooLarge,
    /// The input's format (content type, encoding) is not one Tarn reads here.
    #[serde(rename = "unsupported_media_type")]
    UnsupportedFormat,
    /// None of the output formats the client accepts can be produced.
    #[serde(rename = "not_acceptable")]
    NotAcceptable,
    /// The input is well-formed but cannot be taken as a whole (it violates the table's
    /// schema, or the data read is not what it claims to be).
    #[serde(rename = "unprocessable")]
    Unprocessable,
    /// Too much work is queued already; retry later.
    #[serde(rename = "too_many_requests")]
    Busy,
    /// The operation ran longer than its time limit and was stopped.
    #[serde(rename = "timeout")]
    Timeout,
    /// Storage is unreachable, a resource is exhausted or Tarn is shedding load; retry later.
    #[serde(rename = "unavailable")]
    Unavailable,
    /// The feature is not offered.
    #[serde(rename = "not_implemented")]
    NotSupported,
    /// A bug. Frontends log the details and keep them out of their answers.
    #[serde(rename = "internal")]
    Internal,
}

impl ErrorKind {
    /// Every kind, for tables that must cover them all.
    pub const ALL: [ErrorKind; 15] = [
        ErrorKind::BadInput,
        ErrorKind::Unauthenticated,
        ErrorKind::Forbidden,
        ErrorKind::NotFound,
        ErrorKind::NotAllowed,
        ErrorKind::Conflict,
        ErrorKind::TooLarge,
        ErrorKind::UnsupportedFormat,
        ErrorKind::NotAcceptable,
        ErrorKind::Unprocessable,
        ErrorKind::Busy,
        ErrorKind::Timeout,
        ErrorKind::Unavailable,
        ErrorKind::NotSupported,
        ErrorKind::Internal,
    ];

    /// The kind's stable name (`bad_request`, `not_found`, ...): the `code` of error bodies.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::BadInput => "bad_request",
            ErrorKind::Unauthenticated => "unauthorized",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::NotFound => "not_found",
            ErrorKind::NotAllowed => "method_not_allowed",
            ErrorKind::Conflict => "conflict",
            ErrorKind::TooLarge => "payload_too_large",
            ErrorKind::UnsupportedFormat => "unsupported_media_type",
            ErrorKind::NotAcceptable => "not_acceptable",
            ErrorKind::Unprocessable => "unprocessable",
            ErrorKind::Busy => "too_many_requests",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::NotSupported => "not_implemented",
            ErrorKind::Internal => "internal",
        }
    }

    /// True for the kinds a client may retry unchanged after a while.
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorKind::Busy | ErrorKind::Unavailable | ErrorKind::Timeout)
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error that knows its [`ErrorKind`]: what every error enum of Tarn implements, and what
/// frontends take.
pub trait Classify: std::fmt::Display {
    /// What kind of failure this is.
    fn kind(&self) -> ErrorKind;

    /// For retryable kinds: how long the client should wait before trying again.
    fn retry_after(&self) -> Option<Duration> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_serialized_form() {
        for kind in ErrorKind::ALL {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
            assert_eq!(serde_json::from_str::<ErrorKind>(&json).unwrap(), kind);
        }
    }
}
