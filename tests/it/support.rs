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
    /// The Postgres endpoint's address, when the configuration turned it on.
    pub pg_addr: Option<SocketAddr>,
    /// The Arrow Flight SQL endpoint's address, when the configuration turned it on.
    pub flight_addr: Option<SocketAddr>,
    pub client: reqwest::Client,
    _stop: oneshot::Sender<()>,
}

impl TestServer {
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, |_| {}).await
    }

    pub async fn start_with(backend: Backend, configure: impl FnOnce(&mut ServeConfig)) -> Self {
        Self::start_on(TestLake::new(backend), configure).await
    }

    /// A server on `lake` (a new one, or another server's [`TestLake::alias`]).
    pub async fn start_on(lake: TestLake, configure: impl FnOnce(&mut ServeConfig)) -> Self {
        // Logs go through the test harness, so they show only for failing tests.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tarn::telemetry::DEFAULT_FILTER)
            .with_test_writer()
            .try_init();
        let wal_dir = tempfile::tempdir().unwrap();
        let mut config = ServeConfig::for_lake(lake.location.clone());
        config.lake_options = lake.options.clone();
        config.ingest.wal.dir = wal_dir.path().to_path_buf();
        configure(&mut config);
        let app = Application::build(config).await.expect("build the application");
        let addr = app.local_addr();
        let pg_addr = app.pg_addr();
        let flight_addr = app.flight_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(app.run_until(async move {
            let _ = stopped.await;
        }));
        TestServer {
            lake,
            _wal_dir: wal_dir,
            addr,
            pg_addr,
            flight_addr,
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
        (status, serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{e}: {body:?}")))
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self.client.get(self.url(path)).send().await.unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    /// `PUT /v1/tables/{table}` with a definition.
    pub async fn define(&self, table: &str, definition: Value) -> (u16, Value) {
        let response = self
            .client
            .put(self.url(&format!("/v1/tables/{table}")))
            .json(&definition)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    /// The rows of `sql` as JSON arrays.
    pub async fn rows(&self, sql: &str) -> Vec<Value> {
        let (status, body) = self.sql(sql).await;
        assert_eq!(status, 200, "{sql}: {body}");
        body["rows"].as_array().unwrap().clone()
    }

    /// Polls `sql` until it answers `expected` (for records acknowledged with 202, which
    /// commit within the flush interval); panics with the last answer after 30 s.
    pub async fn eventually(&self, sql: &str, expected: Vec<Value>) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let rows = self.rows(sql).await;
            if rows == expected {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{sql}\n got {rows:?}\nwant {expected:?} (waited 30 s)"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}

/// Scheduled jobs over the HTTP API.
impl TestServer {
    /// `PUT /v1/jobs/{name}` with `job`: the status and the answer.
    pub async fn put_job(&self, name: &str, job: Value) -> (u16, Value) {
        let response =
            self.client.put(self.url(&format!("/v1/jobs/{name}"))).json(&job).send().await.unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    /// Runs the job now and waits for the run's end; returns its attempts (newest first).
    pub async fn run_job(&self, name: &str) -> Value {
        let response =
            self.client.post(self.url(&format!("/v1/jobs/{name}/runs"))).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 202);
        let started: Value = response.json().await.unwrap();
        let run_id = started["run_id"].as_str().unwrap().to_string();
        self.wait_for_run(name, &run_id).await
    }

    /// Waits (up to 2 minutes) until run `run_id` of job `name` is no longer running; returns it.
    pub async fn wait_for_run(&self, name: &str, run_id: &str) -> Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        loop {
            let (status, run) = self.get(&format!("/v1/jobs/{name}/runs/{run_id}")).await;
            assert_eq!(status, 200, "{run}");
            if run["state"] != "running" {
                return run;
            }
            assert!(std::time::Instant::now() < deadline, "the run did not end: {run}");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}

/// A `tarn serve` child process, for tests that kill it.
pub struct ServeProcess {
    pub child: tokio::process::Child,
    pub addr: String,
    log: tokio::task::JoinHandle<String>,
}

impl ServeProcess {
    /// Starts `tarn serve` with `args` and the lake's environment; returns once it listens.
    pub async fn start(lake: &TestLake, args: &[&str]) -> Self {
        Self::start_with_env(lake, args, &[]).await
    }

    /// [`ServeProcess::start`] with `env` over the lake's environment.
    pub async fn start_with_env(lake: &TestLake, args: &[&str], env: &[(&str, &str)]) -> Self {
        use tokio::io::{AsyncBufReadExt, BufReader};
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tarn"))
            .args(["serve", "--lake", &lake.location, "--listen", "127.0.0.1:0"])
            .args(["--pg-listen", "127.0.0.1:0"])
            .args(args)
            .envs(lake.env())
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn tarn serve");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut seen = String::new();
        let addr = tokio::time::timeout(std::time::Duration::from_secs(120), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                seen.push_str(&line);
                seen.push('\n');
                // Text or JSON lines (`..."message":"... on http://127.0.0.1:1234",...`).
                if let Some(rest) = line.split("on http://").nth(1) {
                    let end = rest.find(|c: char| c.is_whitespace() || c == '"');
                    return rest[..end.unwrap_or(rest.len())].to_string();
                }
            }
            panic!("tarn serve exited before listening:\n{seen}");
        })
        .await
        .expect("tarn serve starts");
        // Keep reading the log so the child never blocks on a full pipe.
        let log = tokio::spawn(async move {
            let mut rest = String::new();
            while let Ok(Some(line)) = lines.next_line().await {
                rest.push_str(&line);
                rest.push('\n');
            }
            rest
        });
        ServeProcess { child, addr, log }
    }

    /// SIGKILL: no shutdown code runs.
    pub async fn kill(mut self) -> String {
        self.child.kill().await.unwrap();
        self.log.await.unwrap_or_default()
    }

    /// SIGTERM, then waits for the exit; returns the log.
    pub async fn terminate(mut self) -> String {
        let pid = self.child.id().unwrap().to_string();
        std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let status = tokio::time::timeout(std::time::Duration::from_secs(60), self.child.wait())
            .await
            .expect("tarn stops after SIGTERM")
            .unwrap();
        let log = self.log.await.unwrap_or_default();
        assert!(status.success(), "exit {status:?}:\n{log}");
        log
    }
}

/// A TCP proxy that can cut every connection and refuse new ones, to stage a storage outage
/// between Tarn and the S3 server.
pub struct FaultProxy {
    pub addr: SocketAddr,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    connections: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl FaultProxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let connections: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>> =
            Default::default();
        let (flag, conns) = (cut.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if flag.load(Ordering::SeqCst) {
                    drop(inbound); // refused: closed at once
                    continue;
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                let mut conns = conns.lock().unwrap();
                conns.retain(|t| !t.is_finished());
                conns.push(task);
            }
        });
        FaultProxy { addr, cut, connections }
    }

    /// Drops every open connection and refuses new ones.
    pub fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        for task in self.connections.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    /// Lets connections through again.
    pub fn heal(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The `(name, type)` of each column of a table as `GET /v1/tables/{t}` shows it.
pub fn column_types(table: &Value) -> Vec<(String, String)> {
    table["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap().into(), c["type"].as_str().unwrap().into()))
        .collect()
}

/// An API key for tests: `secret` hashed, with `scopes`; a publishable one is taken from
/// `https://www.example.com`.
pub fn key(
    name: &str,
    secret: &str,
    scopes: &[&str],
    publishable: bool,
) -> tarn_catalog::auth::KeySpec {
    tarn_catalog::auth::KeySpec {
        name: name.into(),
        hash: tarn_catalog::auth::hash_secret(secret),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        publishable,
        allowed_origins: if publishable { vec!["https://www.example.com".into()] } else { vec![] },
        rate_limit: None,
    }
}
