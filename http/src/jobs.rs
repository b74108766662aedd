//! The jobs API: `GET /v1/jobs`, `GET`/`PUT`/`DELETE /v1/jobs/{name}`,
//! `POST /v1/jobs/{name}/runs` (run now), `GET /v1/jobs/{name}/runs[/{run_id}]`.
//!
//! Reading needs the `query` scope; defining, deleting and running need `admin` (a job runs
//! SQL on a schedule and writes tables or files, which only an administrator may set up).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use tarn_pipelines::{JobSpec, Jobs};

use crate::auth::{Need, Routes};
use crate::ApiError;

/// Most runs one answer lists.
const MAX_RUNS: usize = 1000;

/// The jobs routes.
pub(crate) fn routes(routes: Routes<Arc<Jobs>>) -> Routes<Arc<Jobs>> {
    routes
        .route("/v1/jobs", Need::Query, get(list))
        .route("/v1/jobs/{name}", Need::Query, get(get_job))
        .route("/v1/jobs/{name}", Need::Admin, axum::routing::put(put_job).delete(delete_job))
        .route("/v1/jobs/{name}/runs", Need::Query, get(runs))
        .route("/v1/jobs/{name}/runs", Need::Admin, axum::routing::post(run_now))
        .route("/v1/jobs/{name}/runs/{run_id}", Need::Query, get(run))
}

async fn list(State(jobs): State<Arc<Jobs>>) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({ "jobs": jobs.list().await? })))
}

async fn get_job(
    State(jobs): State<Arc<Jobs>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(serde_json::to_value(jobs.get(&name).await?).map_err(ApiError::internal)?))
}

/// `PUT /v1/jobs/{name}`: 201 when the job is new, 200 when it replaced one.
async fn put_job(
    State(jobs): State<Arc<Jobs>>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(ApiError::from_body)?;
    let value: Value = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "the job is not valid JSON (line {}, column {}): {e}",
            e.line(),
            e.column()
        ))
    })?;
    let spec = JobSpec::from_json(value)?;
    let (info, created) = jobs.put(&name, spec).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(serde_json::to_value(info).map_err(ApiError::internal)?)).into_response())
}

async fn delete_job(
    State(jobs): State<Arc<Jobs>>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    jobs.delete(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/jobs/{name}/runs`: 202 with the run, which goes on in the background.
async fn run_now(
    State(jobs): State<Arc<Jobs>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let started = jobs.run_now(&name).await?;
    let value = serde_json::to_value(started).map_err(ApiError::internal)?;
    Ok((StatusCode::ACCEPTED, Json(value)).into_response())
}

#[derive(Deserialize)]
struct RunsParams {
    limit: Option<usize>,
}

async fn runs(
    State(jobs): State<Arc<Jobs>>,
    Path(name): Path<String>,
    params: Result<Query<RunsParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(params) = params.map_err(ApiError::from_query)?;
    let limit = params.limit.unwrap_or(100).clamp(1, MAX_RUNS);
    Ok(Json(json!({ "runs": jobs.runs(&name, None, limit).await? })))
}

/// `GET /v1/jobs/{name}/runs/{run_id}`: the run's state (`running` until it is over) and its
/// attempts, newest first.
async fn run(
    State(jobs): State<Arc<Jobs>>,
    Path((name, run_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    if !tarn_pipelines::runs::check_run_id(&run_id) {
        return Err(ApiError::new(
            tarn_lake::ErrorKind::NotFound,
            format!("job '{name}' has no run '{run_id}'"),
        ));
    }
    Ok(Json(serde_json::to_value(jobs.run(&name, &run_id).await?).map_err(ApiError::internal)?))
}
