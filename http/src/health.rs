//! `GET /healthz` (the process runs) and `GET /readyz` (it is ready for traffic).

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::Json;
use serde_json::{json, Value};
use tarn_lake::ErrorKind;

use crate::auth::{Need, Routes};
use crate::ApiError;

/// What keeps the server from being ready: one reason per line, none when it is ready (e.g.
/// "replaying the write-ahead log: ...", while storage is unreachable at start).
pub type Readiness = Arc<dyn Fn() -> Vec<String> + Send + Sync>;

/// How long a load balancer is asked to wait before asking `/readyz` again.
const READY_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// The health routes, open to everyone.
pub(crate) fn routes(routes: Routes<Readiness>) -> Routes<Readiness> {
    routes.route("/healthz", Need::Open, get(|| async { Json(json!({"status": "ok"})) })).route(
        "/readyz",
        Need::Open,
        get(ready),
    )
}

/// 200 when ready; 503 with `Retry-After` and the reasons otherwise.
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
