//! The one map from errors to HTTP answers, shared by every Tarn router.
//!
//! Every error a handler returns becomes an [`ApiError`]: a machine-readable [`ErrorCode`], a
//! message for humans that says where the problem is, and for back-pressure a `Retry-After`.
//! The body is always `{"error": {"code": "...", "message": "..."}}`. Status 500 is reserved
//! for bugs: its details go to the log (with the request id), never into the body.

use std::time::Duration;

use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::Error;

/// What kind of failure an [`ApiError`] is; decides the HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// 400: the request is malformed; the message says where.
    BadRequest,
    /// 401: no or an unknown API key.
    Unauthorized,
    /// 403: the key (or the endpoint's policy) does not allow this.
    Forbidden,
    /// 404: no such table, query or route.
    NotFound,
    /// 405: the route exists but not with this method.
    MethodNotAllowed,
    /// 406: none of the formats the client accepts can be produced.
    NotAcceptable,
    /// 409: the request conflicts with the current state (e.g. the table exists).
    Conflict,
    /// 413: the body is larger than the configured limit.
    PayloadTooLarge,
    /// 415: the body's content type is not supported here.
    UnsupportedMediaType,
    /// 422: the request is well-formed but violates the table's schema as a whole.
    Unprocessable,
    /// 429: too many concurrent queries.
    TooManyRequests,
    /// 501: the feature is not implemented.
    NotImplemented,
    /// 504: a query ran longer than its time limit.
    Timeout,
    /// 503: storage is unreachable or Tarn is shedding load; retry after `Retry-After`.
    Unavailable,
    /// 500: a bug. Details are logged, not returned.
    Internal,
}

impl ErrorCode {
    /// The HTTP status of this code. The one place that decides statuses.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::BadRequest => StatusCode::BAD_REQUEST,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::NotAcceptable => StatusCode::NOT_ACCEPTABLE,
            ErrorCode::Conflict => StatusCode::CONFLICT,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::Unprocessable => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::NotImplemented => StatusCode::NOT_IMPLEMENTED,
            ErrorCode::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The code as it appears in error bodies (`bad_request`, `not_found`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::NotAcceptable => "not_acceptable",
            ErrorCode::Conflict => "conflict",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::Unprocessable => "unprocessable",
            ErrorCode::TooManyRequests => "too_many_requests",
            ErrorCode::NotImplemented => "not_implemented",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }
}

/// An error answer of the HTTP API.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// What kind of failure.
    pub code: ErrorCode,
    /// For humans: what went wrong and where.
    pub message: String,
    /// For 429/503: when to try again.
    pub retry_after: Option<Duration>,
}

impl ApiError {
    /// An error of the given kind.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError { code, message: message.into(), retry_after: None }
    }

    /// 400 with the given message.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    /// 503 with `Retry-After`.
    pub fn unavailable(message: impl Into<String>, retry_after: Duration) -> Self {
        ApiError { retry_after: Some(retry_after), ..Self::new(ErrorCode::Unavailable, message) }
    }

    /// 500 for a bug: `detail` is logged here and kept out of the answer.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        Self::new(
            ErrorCode::Internal,
            "internal error; the server log has the details under this request's x-request-id",
        )
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code.as_str(), "message": self.message}});
        let mut response = (self.code.status(), axum::Json(body)).into_response();
        if let Some(after) = self.retry_after {
            let secs = after.as_secs().max(1).to_string();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_str(&secs).expect("digits"));
        }
        response
    }
}

/// How long clients are asked to wait when storage is unreachable.
const STORAGE_RETRY_AFTER: Duration = Duration::from_secs(1);

impl From<tarn_lake::Error> for ApiError {
    fn from(e: tarn_lake::Error) -> Self {
        use tarn_lake::Error as E;
        if e.is_transient() {
            tracing::warn!(error = %e, "storage unavailable");
            return ApiError::unavailable(
                format!("storage is unavailable: {e}"),
                STORAGE_RETRY_AFTER,
            );
        }
        match e {
            E::InvalidLocation { .. } => ApiError::bad_request(e.to_string()),
            E::TableNotFound { .. } | E::VersionNotFound(_) => {
                ApiError::new(ErrorCode::NotFound, e.to_string())
            }
            E::TableExists { .. } => ApiError::new(ErrorCode::Conflict, e.to_string()),
            E::SchemaMismatch(_) => ApiError::new(ErrorCode::Unprocessable, e.to_string()),
            E::Delta(_) | E::ObjectStore(_) | E::Arrow(_) | E::Io { .. } => ApiError::internal(e),
        }
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e {
            Error::InvalidName { .. } | Error::InvalidDefinition { .. } => {
                ApiError::bad_request(e.to_string())
            }
            Error::Conflict { .. } | Error::NotDelta { .. } => {
                ApiError::new(ErrorCode::Conflict, e.to_string())
            }
            Error::Location { forbidden: true, .. } => {
                ApiError::new(ErrorCode::Forbidden, e.to_string())
            }
            Error::Location { .. } => ApiError::bad_request(e.to_string()),
            Error::TableNotFound { .. } => ApiError::new(ErrorCode::NotFound, e.to_string()),
            Error::TableExists { .. } => ApiError::new(ErrorCode::Conflict, e.to_string()),
            Error::Lake(e) => e.into(),
            Error::ObjectStore(e) => tarn_lake::Error::ObjectStore(e).into(),
            Error::Document { .. } => ApiError::internal(e),
        }
    }
}

impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> Self {
        let code = if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ErrorCode::PayloadTooLarge
        } else {
            ErrorCode::BadRequest
        };
        ApiError::new(code, rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::bad_request(rejection.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::bad_request(rejection.body_text())
    }
}
