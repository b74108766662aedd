//! A complete HTTP API over a test lake, served without a socket.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tarn_catalog::auth::KeyRing;
use tarn_catalog::{Catalog, TableName};
use tarn_ingest::{IngestConfig, Ingestor, Loader, Tables};
use tarn_lake::test_util::{Backend, TestLake};
use tarn_query::queries::QueryManager;
use tarn_query::{QueryConfig, QueryEngine};
use tower::ServiceExt;

pub struct Fixture {
    pub lake: TestLake,
    pub wal_dir: tempfile::TempDir,
    pub catalog: Arc<Catalog>,
    pub ingestor: Arc<Ingestor>,
    pub router: axum::Router,
    /// The router's route table: every method at every path.
    pub routes: Vec<tarn_http::RouteEntry>,
}

fn config(wal_dir: &std::path::Path) -> IngestConfig {
    let mut config = IngestConfig::default();
    config.wal.dir = wal_dir.to_path_buf();
    config
}

/// The services of one process over `catalog`, and the router over them.
async fn serve(
    catalog: Arc<Catalog>,
    ingest: IngestConfig,
    query: QueryConfig,
) -> (Arc<Ingestor>, axum::Router, Vec<tarn_http::RouteEntry>) {
    let tables = Arc::new(Tables::new(catalog.clone(), ingest.tables()));
    let loader = Arc::new(Loader::new(tables.clone(), ingest.load()));
    let ingestor = Ingestor::start(tables, ingest).await.unwrap();
    let engine = Arc::new(QueryEngine::new(catalog.clone(), query).unwrap());
    let notifier = tarn_pipelines::Notifier::new(None, Default::default()).unwrap();
    let jobs = tarn_pipelines::Jobs::new(
        catalog.clone(),
        engine.clone(),
        notifier,
        "http-test".into(),
        tarn_pipelines::JobsConfig::default(),
        None,
    );
    let services = tarn_http::Services {
        catalog,
        ingestor: ingestor.clone(),
        loader,
        queries: QueryManager::start(engine.clone()),
        engine,
        keys: Arc::new(KeyRing::default()),
        readiness: Arc::new(Vec::new),
        jobs,
        limits: Arc::new(tarn_catalog::limit::RateLimits::new(&KeyRing::default(), None)),
    };
    let (router, routes) = tarn_http::router_and_table(&services);
    (ingestor, router, routes)
}

impl Fixture {
    pub async fn new(backend: Backend, configure: impl FnOnce(&mut IngestConfig)) -> Fixture {
        Self::with_query(backend, configure, QueryConfig::default()).await
    }

    pub async fn with_query(
        backend: Backend,
        configure: impl FnOnce(&mut IngestConfig),
        query: QueryConfig,
    ) -> Fixture {
        let lake = TestLake::new(backend);
        let wal_dir = tempfile::tempdir().unwrap();
        let mut config = config(wal_dir.path());
        configure(&mut config);
        let catalog = Arc::new(Catalog::new(Arc::new(lake.open().await)));
        let (ingestor, router, routes) = serve(catalog.clone(), config, query).await;
        Fixture { lake, wal_dir, catalog, ingestor, router, routes }
    }

    /// Starts new services (a new process) on the same lake and WAL directory.
    pub async fn restart(&mut self, configure: impl FnOnce(&mut IngestConfig)) {
        let mut config = config(self.wal_dir.path());
        configure(&mut config);
        self.catalog = Arc::new(Catalog::new(Arc::new(self.lake.open().await)));
        let (ingestor, router, routes) =
            serve(self.catalog.clone(), config, QueryConfig::default()).await;
        self.ingestor = ingestor;
        self.router = router;
        self.routes = routes;
    }

    /// Rows of `table` at its latest version.
    pub async fn rows(&self, table: &str) -> u64 {
        let (_, table) = self.catalog.open(&TableName::parse(table).unwrap()).await.unwrap();
        table.stats().rows.unwrap()
    }

    /// Waits until the write-ahead log of a restarted process is replayed.
    pub async fn replayed(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while let Some(reason) = self.ingestor.not_ready() {
            assert!(std::time::Instant::now() < deadline, "never replayed: {reason}");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

/// Sends a request; answers the status and the JSON body (`null` when empty).
pub async fn call(
    router: &axum::Router,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = router.clone().oneshot(request.body(Body::from(body)).unwrap()).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let value =
        if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
    (status, value)
}

/// `POST`s `body` with `headers`.
pub async fn post(
    router: &axum::Router,
    uri: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (StatusCode, Value) {
    call(router, "POST", uri, headers, body).await
}
