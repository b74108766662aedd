//! Shared helpers of the end-to-end tests: a Tarn server on a free loopback port.

use std::net::SocketAddr;

use serde_json::Value;
use tarn::config::ServeConfig;
use tarn::Application;
use tarn_lake::test_util::{Backend, TestLake};
use tokio::sync::oneshot;

/// A running server over its own test lake; stopped when dropped.
pub struct TestServer {
    pub lake: TestLake,
    _wal_dir: tempfile::TempDir,
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    _stop: oneshot::Sender<()>,
}

impl TestServer {
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, |_| {}).await
    }

    pub async fn start_with(backend: Backend, configure: impl FnOnce(&mut ServeConfig)) -> Self {
        // Logs go through the test harness, so they show only for failing tests.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tarn::telemetry::DEFAULT_FILTER)
            .with_test_writer()
            .try_init();
        let lake = TestLake::new(backend);
        let wal_dir = tempfile::tempdir().unwrap();
        let mut config = ServeConfig::for_lake(lake.location.clone());
        config.lake_options = lake.options.clone();
        config.ingest.wal.dir = wal_dir.path().to_path_buf();
        configure(&mut config);
        let app = Application::build(config)
            .await
            .expect("build the application");
        let addr = app.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(app.run_until(async move {
            let _ = stopped.await;
        }));
        TestServer {
            lake,
            _wal_dir: wal_dir,
            addr,
            client: reqwest::Client::new(),
            _stop: stop,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// POSTs `body` with `content_type` to `/v1/ingest/{table}?wait=commit` (so that queries
    /// right after see the rows).
    pub async fn ingest(&self, table: &str, content_type: &str, body: &str) -> (u16, Value) {
        let response = self
            .client
            .post(self.url(&format!("/v1/ingest/{table}?wait=commit")))
            .header("content-type", content_type)
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    /// Runs `sql` asking for `accept`; returns status, content type and body.
    pub async fn sql_as(&self, sql: &str, accept: &str) -> (u16, String, bytes::Bytes) {
        let response = self
            .client
            .post(self.url("/v1/sql"))
            .header("accept", accept)
            .json(&serde_json::json!({ "sql": sql }))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        (status, content_type, response.bytes().await.unwrap())
    }

    /// Runs `sql` as JSON; returns status and the parsed body.
    pub async fn sql(&self, sql: &str) -> (u16, Value) {
        let (status, _, body) = self.sql_as(sql, "application/json").await;
        (
            status,
            serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{e}: {body:?}")),
        )
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self.client.get(self.url(path)).send().await.unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }
}
