//! `GET /healthz` (the process runs) and `GET /readyz` (it is ready for traffic).

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};
use tarn_lake::ErrorKind;

use crate::auth::{get, Need, Routes};
use crate::error::ErrorBody;
use crate::openapi::HealthStatus;
use crate::ApiError;

/// What keeps the server from being ready: one reason per line, none when it is ready (e.g.
/// "replaying the write-ahead log: ...", while storage is unreachable at start).
pub type Readiness = Arc<dyn Fn() -> Vec<String> + Send + Sync>;

/// How long a load balancer is asked to wait before asking `/readyz` again.
const READY_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// The health routes, open to everyone.
pub(crate) fn routes(routes: Routes<Readiness>) -> Routes<Readiness> {
    routes.route("/healthz", Need::Open, get(healthz)).route("/readyz", Need::Open, get(ready))
}

/// Liveness
///
/// 200 while the process runs.
///
/// Scope: `open`.
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    tag = "operations",
    security(()),
    responses((status = 200, description = "The process runs", body = HealthStatus))
)]
async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Readiness
///
/// 200 when the server is ready for traffic; 503 with `Retry-After` and the reasons while it
/// is not (e.g. while the write-ahead log is replayed into storage that is down).
///
/// Scope: `open`.
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    tag = "operations",
    security(()),
    responses(
        (status = 200, description = "Ready for traffic", body = HealthStatus),
        (status = 503, description = "Not ready; the message gives the reasons", body = ErrorBody),
    )
)]
async fn ready(State(readiness): State<Readiness>) -> Result<Json<Value>, ApiError> {
    let reasons = readiness();
    if reasons.is_empty() {
        return Ok(Json(json!({"status": "ready"})));
    }
    Err(ApiError {
        retry_after: Some(READY_RETRY_AFTER),
        ..ApiError::new(ErrorKind::Unavailable, format!("not ready: {}", reasons.join("; ")))
    })
}
