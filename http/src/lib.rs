//! Tarn's HTTP API.
//!
//! `tarn-http` is the edge of Tarn: it owns everything HTTP and no domain logic. It assembles
//! the routes of ingest (`/v1/ingest`, uploads), SQL (`/v1/sql`, `/v1/queries`) and the catalog
//! (`/v1/tables`, `/v1/namespaces`, `/v1/crawl`) and scheduled jobs (`/v1/jobs`) over the
//! domain crates' services; turns their
//! errors into answers through one table ([`error::status_of`]: an error's
//! [`tarn_lake::ErrorKind`] decides its status); checks API keys with the scope each route
//! declares where it is defined ([`auth`]) and their rate limits (`tarn_catalog::limit`); and adds CORS for
//! browser forms, body limits, gzip, request ids and tracing. `GET /healthz` says the process
//! runs; `GET /readyz` says whether it is ready for traffic (503 with the reasons while it is
//! not, e.g. while the write-ahead log is replayed into storage that is down); `GET /metrics`
//! is for Prometheus ([`metrics`]); `GET /` is the web console ([`console`]);
//! `GET /v1/openapi.json` describes the API in OpenAPI 3.1 ([`openapi`]).
//!
//! ```no_run
//! # async fn demo(services: tarn_http::Services) -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, tarn_http::router(&services)).await
//! # }
//! ```
#![warn(missing_docs)]

pub mod auth;
mod catalog;
pub mod console;
pub mod error;
mod health;
mod ingest;
mod jobs;
pub mod metrics;
pub mod openapi;
mod query;
mod stream;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tarn_catalog::auth::KeyRing;
use tarn_catalog::limit::RateLimits;
use tarn_catalog::Catalog;
use tarn_ingest::{Ingestor, Loader};
use tarn_query::queries::QueryManager;
use tarn_query::QueryEngine;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnFailure, DefaultOnResponse, TraceLayer};
use tower_http::LatencyUnit;

pub use auth::{Gate, Need, RouteEntry, Routes};
pub use error::ApiError;
pub use health::Readiness;
pub use query::NEXT_PAGE_HEADER;

/// The services the HTTP API serves.
#[derive(Clone)]
pub struct Services {
    /// The catalog (and through it, the lake).
    pub catalog: Arc<Catalog>,
    /// Ingest of requests and forms.
    pub ingestor: Arc<Ingestor>,
    /// Loads of uploaded files.
    pub loader: Arc<Loader>,
    /// The query engine.
    pub engine: Arc<QueryEngine>,
    /// Async queries.
    pub queries: Arc<QueryManager>,
    /// The API keys (none: open).
    pub keys: Arc<KeyRing>,
    /// What `/readyz` reports.
    pub readiness: Readiness,
    /// Scheduled jobs.
    pub jobs: Arc<tarn_pipelines::Jobs>,
    /// The keys' rate limits (shared with the Postgres endpoint: one budget per key).
    pub limits: Arc<RateLimits>,
}

/// The complete HTTP API over `services`.
pub fn router(services: &Services) -> Router {
    router_and_table(services).0
}

/// The complete HTTP API over `services`, and the table of its routes: every method at every
/// path, with what it needs (the OpenAPI document, [`openapi::document`], lists the same).
pub fn router_and_table(services: &Services) -> (Router, Vec<RouteEntry>) {
    let keys = &services.keys;
    let gate = Arc::new(Gate::new(keys.clone(), services.limits.clone()));
    // Installed before any request is counted.
    metrics::handle();
    let ingest = ingest::IngestState {
        ingestor: services.ingestor.clone(),
        loader: services.loader.clone(),
    };
    let sql =
        query::SqlState { engine: services.engine.clone(), queries: services.queries.clone() };
    let router = Router::new()
        .merge(health::routes(Routes::new(gate.clone())).with_state(services.readiness.clone()))
        .merge(ingest::routes(Routes::new(gate.clone()), &ingest).with_state(ingest))
        .merge(query::routes(Routes::new(gate.clone())).with_state(sql))
        .merge(catalog::routes(Routes::new(gate.clone())).with_state(services.catalog.clone()))
        .merge(jobs::routes(Routes::new(gate.clone())).with_state(services.jobs.clone()))
        .merge(metrics::routes(Routes::new(gate.clone())).with_state(services.clone()))
        .merge(auth::routes(Routes::new(gate.clone())).with_state(gate.clone()))
        .merge(console::routes(Routes::new(gate.clone())).with_state(()))
        .merge(openapi::routes(Routes::new(gate.clone())).with_state(()))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(keys.clone())
        .layer(axum::middleware::from_fn(metrics::record))
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(
                    TraceLayer::new_for_http()
                        // Every answer is logged at info with its status and latency, in the
                        // request's span (its id and, once checked, its key's name); 5xx are
                        // also logged where they arise (bugs as errors, back-pressure as
                        // warnings).
                        .on_request(())
                        .on_response(DefaultOnResponse::new().level(tracing::Level::INFO).latency_unit(LatencyUnit::Millis))
                        .on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG))
                        .make_span_with(|request: &Request<_>| {
                            let id = request
                                .headers()
                                .get("x-request-id")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("-");
                            tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), id, key = tracing::field::Empty)
                        }),
                )
                // Gzip for clients that take it (the console's scripts, JSON results); Arrow,
                // Parquet and already-compressed bodies are left alone.
                .layer(CompressionLayer::new().gzip(true))
                .layer(PropagateRequestIdLayer::x_request_id())
                // A bug that panics answers this request with 500 (logged with its message
                // and request id) instead of dropping the connection.
                .layer(CatchPanicLayer::custom(panic_response)),
        );
    (router, gate.routes())
}

/// The answer to a request whose handler panicked.
fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("a panic without a message");
    ApiError::internal(format_args!("a request handler panicked: {message}")).into_response()
}

/// Unrouted paths: 404, to callers whose key has the `admin` scope.
async fn not_found(State(keys): State<Arc<KeyRing>>, request: Request) -> Response {
    if let Err(e) = auth::check(&keys, Need::Admin, None, &request) {
        return e.into_response();
    }
    let message = format!("no route for {}", request.uri().path());
    ApiError::new(tarn_lake::ErrorKind::NotFound, message).into_response()
}

/// Routed paths asked with a method they do not take: 405.
async fn method_not_allowed(State(keys): State<Arc<KeyRing>>, request: Request) -> Response {
    if let Err(e) = auth::check(&keys, Need::Admin, None, &request) {
        return e.into_response();
    }
    let message = format!("{} does not take this method", request.uri().path());
    ApiError::new(tarn_lake::ErrorKind::NotAllowed, message).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_handler_answers_500_without_its_message() {
        for panic in [
            Box::new(String::from("index out of bounds: secret")) as Box<dyn std::any::Any + Send>,
            Box::new("secret"),
        ] {
            let response = panic_response(panic);
            assert_eq!(response.status(), axum::http::StatusCode::INTERNAL_SERVER_ERROR);
            let body = axum::body::to_bytes(response.into_body(), 4096).await.unwrap();
            let body = String::from_utf8_lossy(&body);
            assert!(body.contains(r#""code":"internal""#), "{body}");
            assert!(!body.contains("secret"), "{body}");
        }
    }
}
