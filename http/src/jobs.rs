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
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use tarn_pipelines::{JobSpec, Jobs};

use crate::auth::{get, post, put, Need, Routes};
use crate::error::ErrorBody;
use crate::openapi::{JobInfo, JobList, RunList, RunStarted, RunView};
use crate::ApiError;

/// Most runs one answer lists.
const MAX_RUNS: usize = 1000;

/// The jobs routes.
pub(crate) fn routes(routes: Routes<Arc<Jobs>>) -> Routes<Arc<Jobs>> {
    routes
        .route("/v1/jobs", Need::Query, get(list))
        .route("/v1/jobs/{name}", Need::Query, get(get_job))
        .route("/v1/jobs/{name}", Need::Admin, put(put_job).delete(delete_job))
        .route("/v1/jobs/{name}/runs", Need::Query, get(runs))
        .route("/v1/jobs/{name}/runs", Need::Admin, post(run_now))
        .route("/v1/jobs/{name}/runs/{run_id}", Need::Query, get(run))
}

/// List jobs
///
/// Every scheduled job with its definition and next run.
///
/// Scope: `query`.
#[utoipa::path(
    get,
    path = "/v1/jobs",
    operation_id = "list_jobs",
    tag = "jobs",
    responses(
        (status = 200, description = "The jobs", body = JobList),
        (status = 403, description = "The key lacks the `query` scope", body = ErrorBody),
        (status = 503, description = "Storage is unavailable", body = ErrorBody),
    )
)]
async fn list(State(jobs): State<Arc<Jobs>>) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({ "jobs": jobs.list().await? })))
}

/// Describe a job
///
/// Its definition, next run and latest attempt.
///
/// Scope: `query`.
#[utoipa::path(
    get,
    path = "/v1/jobs/{name}",
    operation_id = "get_job",
    tag = "jobs",
    params(("name" = String, Path, description = "The job's name")),
    responses(
        (status = 200, description = "The job", body = JobInfo),
        (status = 400, description = "The name is not valid", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 403, description = "The key lacks the `query` scope", body = ErrorBody),
        (status = 503, description = "Storage is unavailable", body = ErrorBody),
    )
)]
async fn get_job(
    State(jobs): State<Arc<Jobs>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(serde_json::to_value(jobs.get(&name).await?).map_err(ApiError::internal)?))
}

/// Define a job
///
/// Creates or replaces a scheduled job: 201 when the job is new, 200 when it replaced one.
///
/// Scope: `admin`.
#[utoipa::path(
    put,
    path = "/v1/jobs/{name}",
    operation_id = "put_job",
    tag = "jobs",
    params(("name" = String, Path, description = "The job's name")),
    request_body(content = crate::openapi::JobSpec, content_type = "application/json", description = "The job's definition"),
    responses(
        (status = 200, description = "Replaced", body = JobInfo),
        (status = 201, description = "Created", body = JobInfo),
        (status = 400, description = "The name or the definition is not valid", body = ErrorBody),
        (status = 409, description = "A job defined in the configuration file cannot be changed here", body = ErrorBody),
        (status = 413, description = "The definition is larger than the server takes", body = ErrorBody),
        (status = 403, description = "The key lacks the `admin` scope", body = ErrorBody),
        (status = 503, description = "Storage is unavailable", body = ErrorBody),
    )
)]
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

/// Delete a job
///
/// Removes a job defined through the API; its runs' records stay.
///
/// Scope: `admin`.
#[utoipa::path(
    delete,
    path = "/v1/jobs/{name}",
    operation_id = "delete_job",
    tag = "jobs",
    params(("name" = String, Path, description = "The job's name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "The name is not valid", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 409, description = "A job defined in the configuration file cannot be deleted here", body = ErrorBody),
        (status = 403, description = "The key lacks the `admin` scope", body = ErrorBody),
        (status = 503, description = "Storage is unavailable", body = ErrorBody),
    )
)]
async fn delete_job(
    State(jobs): State<Arc<Jobs>>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    jobs.delete(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Run a job now
///
/// Starts a run by hand: 202 with the run, which goes on in the background.
///
/// Scope: `admin`.
#[utoipa::path(
    post,
    path = "/v1/jobs/{name}/runs",
    operation_id = "run_job_now",
    tag = "jobs",
    params(("name" = String, Path, description = "The job's name")),
    responses(
        (status = 202, description = "Started", body = RunStarted),
        (status = 400, description = "The name is not valid", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 409, description = "The job is running already", body = ErrorBody),
        (status = 403, description = "The key lacks the `admin` scope", body = ErrorBody),
        (status = 503, description = "Storage is unavailable", body = ErrorBody),
    )
)]
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

/// A job's runs
///
/// Its attempts, newest first, with those running now.
///
/// Scope: `query`.
#[utoipa::path(
    get,
    path = "/v1/jobs/{name}/runs",
    operation_id = "list_runs",
    tag = "jobs",
    params(
        ("name" = String, Path, description = "The job's name"),
        ("limit" = Option<u64>, Query, minimum = 1, maximum = 1000, description = "Most attempts to list (default 100)"),
    ),
    responses(
        (status = 200, description = "The attempts", body = RunList),
        (status = 400, description = "The name or the limit is not valid", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 403, description = "The key lacks the `query` scope", body = ErrorBody),
        (status = 503, description = "Storage is unavailable", body = ErrorBody),
    )
)]
async fn runs(
    State(jobs): State<Arc<Jobs>>,
    Path(name): Path<String>,
    params: Result<Query<RunsParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(params) = params.map_err(ApiError::from_query)?;
    let limit = params.limit.unwrap_or(100).clamp(1, MAX_RUNS);
    Ok(Json(json!({ "runs": jobs.runs(&name, None, limit).await? })))
}

/// A run of a job
///
/// The run's state (`running` until it is over) and its attempts, newest first.
///
/// Scope: `query`.
#[utoipa::path(
    get,
    path = "/v1/jobs/{name}/runs/{run_id}",
    operation_id = "get_run",
    tag = "jobs",
    params(
        ("name" = String, Path, description = "The job's name"),
        ("run_id" = String, Path, description = "The run's id"),
    ),
    responses(
        (status = 200, description = "The run", body = RunView),
        (status = 400, description = "The name is not valid", body = ErrorBody),
        (status = 404, description = "No such job or run", body = ErrorBody),
        (status = 403, description = "The key lacks the `query` scope", body = ErrorBody),
        (status = 503, description = "Storage is unavailable", body = ErrorBody),
    )
)]
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
