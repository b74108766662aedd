//! The one map from errors to HTTP answers.
//!
//! Every error a handler returns becomes an [`ApiError`]: an [`ErrorKind`] (which decides the
//! status, in [`status_of`], the only table of statuses), a message for humans that says where
//! the problem is, and for back-pressure a `Retry-After`. The body is always
//! `{"error": {"code": "...", "message": "..."}}` with the kind's stable name as `code`.
//! Status 500 is reserved for bugs: their details go to the log (with the request id), never
//! into the body.
//!
//! Domain errors (`tarn_lake::Error`, `tarn_catalog::Error`, `tarn_ingest::Error`,
//! `tarn_query::Error`, ...) convert with `?`: they all implement [`Classify`]. Axum's
//! rejections of bodies and query strings convert with [`ApiError::from_body`] and
//! [`ApiError::from_query`].

use std::time::Duration;

use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tarn_lake::{Classify, ErrorKind};

/// The HTTP status of each kind of error: the one place that decides statuses.
pub fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::BadInput => StatusCode::BAD_REQUEST,
        ErrorKind::Unauthenticated => StatusCode::UNAUTHORIZED,
        ErrorKind::Forbidden => StatusCode::FORBIDDEN,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::NotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorKind::UnsupportedFormat => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ErrorKind::NotAcceptable => StatusCode::NOT_ACCEPTABLE,
        ErrorKind::Unprocessable => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorKind::Busy => StatusCode::TOO_MANY_REQUESTS,
        // Druid and gateways answer a query stopped at its time limit the same way.
        ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::NotSupported => StatusCode::NOT_IMPLEMENTED,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// What clients are told instead of an internal error's details.
const INTERNAL_MESSAGE: &str =
    "internal error; the server log has the details under this request's x-request-id";

/// How long a client is asked to wait when an error of a retryable kind names no time.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// An error answer of the HTTP API.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// What kind of failure; decides the status.
    pub kind: ErrorKind,
    /// For humans: what went wrong and where.
    pub message: String,
    /// For 429/503: when to try again.
    pub retry_after: Option<Duration>,
}

impl ApiError {
    /// An error of the given kind.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ApiError { kind, message: message.into(), retry_after: None }
    }

    /// 400 with the given message.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadInput, message)
    }

    /// 500 for a bug: `detail` is logged here and kept out of the answer.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        Self::new(ErrorKind::Internal, INTERNAL_MESSAGE)
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        status_of(self.kind)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

/// Every domain error: its kind and message; internal errors are logged and replaced, and
/// back-pressure (429, 503) always says when to retry.
impl<E: Classify> From<E> for ApiError {
    fn from(e: E) -> Self {
        let kind = e.kind();
        if kind == ErrorKind::Internal {
            return ApiError::internal(&e);
        }
        if kind == ErrorKind::Unavailable {
            tracing::warn!(error = %e, "answering 503");
        }
        let retry_after = matches!(kind, ErrorKind::Unavailable | ErrorKind::Busy)
            .then(|| e.retry_after().unwrap_or(DEFAULT_RETRY_AFTER));
        ApiError { kind, message: e.to_string(), retry_after }
    }
}

/// The body of every error answer: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// What went wrong: the kind of error and a message for humans.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// The kind of error, a stable name (its HTTP status follows from it).
    #[schema(schema_with = error_codes)]
    pub code: String,
    /// For humans: what went wrong and where.
    pub message: String,
}

/// The schema of [`ErrorDetail::code`]: one of the kinds' names.
fn error_codes() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .description(Some("The kind of error, a stable name (its HTTP status follows from it)."))
        .enum_values(Some(ErrorKind::ALL.iter().map(|kind| kind.as_str())))
        .examples([serde_json::json!(ErrorKind::BadInput.as_str())])
        .build()
}

/// The answer of every error.
pub(crate) fn error_response(
    status: StatusCode,
    code: &str,
    message: &str,
    retry_after: Option<Duration>,
) -> Response {
    let body = ErrorBody { error: ErrorDetail { code: code.into(), message: message.into() } };
    let mut response = (status, axum::Json(body)).into_response();
    if let Some(after) = retry_after {
        let secs = after.as_secs().max(1).to_string();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_str(&secs).expect("digits"));
    }
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error_response(self.status(), self.kind.as_str(), &self.message, self.retry_after)
    }
}

impl ApiError {
    /// A body that could not be read: too large (413) or broken off (400).
    pub fn from_body(rejection: BytesRejection) -> Self {
        let kind = if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ErrorKind::TooLarge
        } else {
            ErrorKind::BadInput
        };
        ApiError::new(kind, rejection.body_text())
    }

    /// A query string that does not parse (400).
    pub fn from_query(rejection: QueryRejection) -> Self {
        ApiError::bad_request(rejection.body_text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kind has a status; only bugs are 500, and the body's code is the kind's name.
    #[test]
    fn every_kind_has_one_status() {
        for kind in ErrorKind::ALL {
            let status = status_of(kind);
            assert_eq!(status == StatusCode::INTERNAL_SERVER_ERROR, kind == ErrorKind::Internal);
            assert!(status.is_client_error() || status.is_server_error(), "{kind}: {status}");
        }
    }

    #[test]
    fn internal_details_stay_in_the_log() {
        struct Bug;
        impl std::fmt::Display for Bug {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("secret detail")
            }
        }
        impl Classify for Bug {
            fn kind(&self) -> ErrorKind {
                ErrorKind::Internal
            }
        }
        let error = ApiError::from(Bug);
        assert_eq!(error.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!error.message.contains("secret"), "{}", error.message);
    }
}
