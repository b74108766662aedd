//! The HTTP application: every service's router behind one set of tower-http layers.

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::http::{Request, Uri};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tarn_catalog::auth::KeyRing;
use tarn_catalog::{ApiError, Catalog, DefineStatus, ErrorCode, TableName, TableSpec};
use tarn_ingest::{CorsGrant, Ingestor};
use tarn_lake::Lake;
use tarn_query::QueryEngine;
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnFailure, TraceLayer};

use crate::config::ServeConfig;

/// The services of one Tarn process, shared by the HTTP routers and the subcommands.
pub struct Services {
    /// The catalog (and through it, the lake).
    pub catalog: Arc<Catalog>,
    /// The ingest service.
    pub ingestor: Arc<Ingestor>,
    /// The query engine.
    pub engine: Arc<QueryEngine>,
    /// The API keys (none: open).
    pub keys: Arc<KeyRing>,
}

/// Creates or evolves the tables `tarn.toml` declares.
pub async fn apply_tables(catalog: &Catalog, tables: &[(String, TableSpec)]) -> anyhow::Result<()> {
    for (name, spec) in tables {
        let parsed = TableName::parse(name)?;
        let defined = catalog.define(&parsed, spec.clone(), "config").await.with_context(|| {
            format!("cannot apply the definition of table '{name}' from the configuration")
        })?;
        if defined.status != DefineStatus::Unchanged {
            tracing::info!(table = %parsed, status = ?defined.status, "applied the table's definition from the configuration");
        }
    }
    Ok(())
}

impl Services {
    /// Opens the lake, applies the configured tables and builds the services over it.
    pub async fn open(config: &ServeConfig) -> anyhow::Result<Self> {
        let keys = Arc::new(KeyRing::new(&config.keys).map_err(|e| anyhow::anyhow!("{e}"))?);
        let lake = Lake::open(&config.lake, config.lake_options.clone())
            .await
            .with_context(|| format!("cannot open the lake at {}", config.lake))?;
        let catalog = Arc::new(Catalog::new(Arc::new(lake)));
        apply_tables(&catalog, &config.tables).await?;
        let mut ingest = config.ingest.clone();
        if !config.auto_create_set && !keys.is_open() {
            // Open servers create tables on first write; with keys, tables are declared.
            ingest.auto_create = false;
        }
        ingest.cors.extend(
            keys.publishable_origins()
                .into_iter()
                .map(|(tables, origins)| CorsGrant { tables, origins }),
        );
        let ingestor = Ingestor::start(catalog.clone(), ingest).await.with_context(|| {
            format!("cannot start ingest (write-ahead log in {})", config.ingest.wal.dir.display())
        })?;
        let engine = QueryEngine::new(catalog.clone(), config.query.clone())
            .context("cannot set up the query engine")?;
        Ok(Services { ingestor, engine: Arc::new(engine), catalog, keys })
    }

    /// The complete HTTP API.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
            .merge(tarn_ingest::router(self.ingestor.clone()))
            .merge(tarn_query::router(self.engine.clone()))
            .merge(tarn_catalog::router(self.catalog.clone()))
            .fallback(not_found)
            .method_not_allowed_fallback(method_not_allowed)
            .layer(axum::middleware::from_fn_with_state(
                self.keys.clone(),
                tarn_catalog::auth::require_key,
            ))
            .layer(
                ServiceBuilder::new()
                    .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                    .layer(TraceLayer::new_for_http()
                        // Answers of 5xx are logged where they arise (bugs as errors, back-pressure
                        // as warnings); the access-level trace stays at debug.
                        .on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG))
                        .make_span_with(|request: &Request<_>| {
                        let id = request
                            .headers()
                            .get("x-request-id")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("-");
                        tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), id)
                    }))
                    .layer(PropagateRequestIdLayer::x_request_id()),
            )
    }
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::new(ErrorCode::NotFound, format!("no route for {}", uri.path()))
}

async fn method_not_allowed(uri: Uri) -> ApiError {
    ApiError::new(ErrorCode::MethodNotAllowed, format!("{} does not take this method", uri.path()))
}

/// A bound, ready-to-run Tarn server.
pub struct Application {
    listener: TcpListener,
    services: Services,
    lake: String,
    /// The Postgres endpoint and its listener, unless turned off.
    pg: Option<(tarn_query::pg::PgServer, TcpListener)>,
}

impl Application {
    /// Opens the lake, builds the services and binds the listener (port 0 picks a free port).
    pub async fn build(config: ServeConfig) -> anyhow::Result<Self> {
        let services = Services::open(&config).await?;
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let lake = services.catalog.lake().location().to_string();
        let pg = match config.pg_listen {
            Some(address) => Some(bind_pg(&services, address).await?),
            None => None,
        };
        Ok(Application { listener, services, lake, pg })
    }

    /// The address of the Postgres endpoint, unless it is off.
    pub fn pg_addr(&self) -> Option<SocketAddr> {
        self.pg.as_ref().map(|(_, l)| l.local_addr().expect("a bound listener has an address"))
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// Serves until SIGINT or SIGTERM, then finishes the requests in flight and returns.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.run_until(shutdown_signal()).await
    }

    /// Serves until `shutdown` completes, then finishes the requests in flight, commits the
    /// buffered records (what storage does not take in time stays in the write-ahead log for
    /// the next start) and returns.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let addr = self.local_addr();
        tracing::info!(lake = %self.lake, "Tarn is serving the lake at {} on http://{addr}", self.lake);
        if self.services.keys.is_open() {
            tracing::warn!(
                "no API keys are configured: every endpoint is open to anyone who can reach {addr}"
            );
        }
        // Both endpoints stop on the same signal.
        let shutdown = futures::FutureExt::shared(Box::pin(shutdown));
        let pg = self.pg_addr();
        let pg = async {
            if let Some((server, listener)) = self.pg {
                tracing::info!("Tarn is serving the Postgres protocol on {}", pg.expect("bound"));
                server.serve(listener, shutdown.clone()).await;
            }
        };
        let http = axum::serve(self.listener, self.services.router())
            .with_graceful_shutdown(shutdown.clone())
            .into_future();
        let (http, ()) = tokio::join!(http, pg);
        http?;
        self.services.ingestor.shutdown().await;
        tracing::info!("Tarn stopped");
        Ok(())
    }
}

/// Sets up the Postgres endpoint over the services and binds its listener.
async fn bind_pg(
    services: &Services,
    address: SocketAddr,
) -> anyhow::Result<(tarn_query::pg::PgServer, TcpListener)> {
    let server = tarn_query::pg::PgServer::new(
        services.engine.clone(),
        services.keys.clone(),
        tarn_query::pg::PgConfig::default(),
    )
    .await
    .context("cannot set up the Postgres endpoint")?;
    let listener = TcpListener::bind(address).await.with_context(|| {
        format!("cannot listen on {address} for the Postgres protocol (--pg-listen; `off` turns it off)")
    })?;
    Ok((server, listener))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received, shutting down"),
        _ = terminate => tracing::info!("SIGTERM received, shutting down"),
    }
}
