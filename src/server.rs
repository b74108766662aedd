//! The server: the services of one Tarn process wired together, the HTTP API and the
//! Postgres endpoint served, and a graceful shutdown that commits what is buffered.

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use tarn_catalog::auth::KeyRing;
use tarn_catalog::limit::RateLimits;
use tarn_catalog::{Catalog, DefineStatus, TableName, TableSpec};
use tarn_ingest::maintenance::Maintenance;
use tarn_ingest::{CorsGrant, Ingestor, Loader, Tables};
use tarn_lake::{Classify, ErrorKind, Lake};
use tarn_pipelines::{Alerts, Jobs, Notifier, RetryPolicy};
use tarn_query::queries::QueryManager;
use tarn_query::QueryEngine;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::ServeConfig;

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

/// True when `error` only says storage cannot be reached now.
fn storage_down(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause.downcast_ref::<tarn_catalog::Error>().map(Classify::kind)
            == Some(ErrorKind::Unavailable)
    })
}

/// The services of one Tarn process, and the background work it runs.
pub struct Services {
    /// What the HTTP API serves.
    pub api: tarn_http::Services,
    /// Stops the drop zone and the other background loops.
    stop: watch::Sender<bool>,
}

impl Services {
    /// Opens the lake and builds the services over it. Storage being unreachable does not
    /// stop the start: the write-ahead log is replayed, and the configured tables applied,
    /// in the background once it answers (`/readyz` says so meanwhile).
    pub async fn open(config: &ServeConfig) -> anyhow::Result<Self> {
        let keys = Arc::new(KeyRing::new(&config.keys).map_err(|e| anyhow::anyhow!("{e}"))?);
        let limits = Arc::new(RateLimits::new(&keys, config.rate_limit));
        let lake = Lake::open(&config.lake, config.lake_options.clone())
            .await
            .with_context(|| format!("cannot open the lake at {}", config.lake))?;
        let catalog = Arc::new(Catalog::new(Arc::new(lake)));
        let configured = Arc::new(Mutex::new(None::<String>));
        if let Err(e) = apply_tables(&catalog, &config.tables).await {
            if !storage_down(&e) {
                return Err(e);
            }
            tracing::warn!(error = %format!("{e:#}"), "storage is unreachable: the configured tables are applied once it answers");
            *configured.lock().expect("configured") = Some(format!("{e:#}"));
            tokio::spawn(apply_later(catalog.clone(), config.tables.clone(), configured.clone()));
        }
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
        let wal = config.ingest.wal.dir.display().to_string();
        std::fs::create_dir_all(&ingest.wal.dir)
            .with_context(|| format!("cannot create the write-ahead log directory {wal}"))?;
        // The log directory is locked first: a second server pointed at it stops here, before
        // it clears the spool of uploads.
        let open = Ingestor::open(ingest.clone())
            .await
            .with_context(|| format!("cannot open the write-ahead log in {wal}"))?;
        let node = open.node_id().to_string();
        let tables = Arc::new(Tables::new(catalog.clone(), ingest.tables()));
        let events = tables.events().clone();
        let loader = Arc::new(Loader::new(tables.clone(), ingest.load()));
        let ingestor = open
            .start(tables)
            .await
            .with_context(|| format!("cannot start ingest (write-ahead log in {wal})"))?;
        let engine = Arc::new(
            QueryEngine::new(catalog.clone(), config.query.clone())
                .context("cannot set up the query engine")?,
        );
        let queries = QueryManager::start(engine.clone());
        let (stop, stopped) = watch::channel(false);
        let notifier = Notifier::new(config.smtp.clone(), RetryPolicy::default())
            .context("cannot set up notifications (--smtp-url, --smtp-from)")?;
        let jobs = Jobs::new(
            catalog.clone(),
            engine.clone(),
            notifier.clone(),
            node.clone(),
            config.jobs_config.clone(),
            Some(Arc::new(Maintenance::new(
                catalog.clone(),
                ingest.maintenance.clone(),
                events.clone(),
            ))),
        );
        jobs.check(&config.jobs)?;
        if let Err(e) = jobs.apply_config(&config.jobs).await {
            if e.kind() != ErrorKind::Unavailable {
                return Err(anyhow::Error::new(e).context("cannot apply the configured jobs"));
            }
            tracing::warn!(error = %e, "storage is unreachable: the configured jobs are applied once it answers");
            tokio::spawn(apply_jobs_later(jobs.clone(), config.jobs.clone()));
        }
        jobs.start(stopped.clone());
        if let Some(alerts) = Alerts::new(&config.alerts, notifier)
            .context("cannot set up the alarms ([alerts] in tarn.toml)")?
        {
            alerts.watch(&events, stopped.clone());
        }
        tokio::spawn(tarn_ingest::dropzone::run(
            loader.clone(),
            node,
            ingest.dropzone.clone(),
            stopped,
        ));
        let unreachable = Arc::new(Mutex::new(None::<String>));
        tokio::spawn(probe_storage(
            catalog.lake().store().clone(),
            unreachable.clone(),
            stop.subscribe(),
        ));
        let readiness: tarn_http::Readiness = {
            let ingestor = ingestor.clone();
            Arc::new(move || {
                let mut reasons: Vec<String> = Vec::new();
                if let Some(e) = unreachable.lock().expect("storage probe").as_ref() {
                    reasons.push(format!("the lake's storage does not answer: {e}"));
                }
                reasons.extend(ingestor.not_ready());
                if let Some(e) = configured.lock().expect("configured").as_ref() {
                    reasons.push(format!("applying the configured tables: {e}"));
                }
                reasons
            })
        };
        let api = tarn_http::Services {
            catalog,
            ingestor,
            loader,
            engine,
            queries,
            keys,
            readiness,
            jobs,
            limits,
        };
        Ok(Services { api, stop })
    }
}

/// How often `/readyz`'s look at storage is renewed, and how long one look may take.
const PROBE_EVERY: Duration = Duration::from_secs(2);
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Keeps `unreachable` saying whether the lake's storage answers: one `HEAD` of a key that
/// does not exist per [`PROBE_EVERY`] (a "not found" is an answer), until `stop`.
async fn probe_storage(
    store: Arc<dyn object_store::ObjectStore>,
    unreachable: Arc<Mutex<Option<String>>>,
    mut stop: watch::Receiver<bool>,
) {
    use object_store::ObjectStoreExt;
    let probe = object_store::path::Path::from("_tarn/readyz-probe");
    loop {
        let answer = tokio::time::timeout(PROBE_TIMEOUT, store.head(&probe)).await;
        let failure = match answer {
            Ok(Ok(_)) | Ok(Err(object_store::Error::NotFound { .. })) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!("no answer within {} s", PROBE_TIMEOUT.as_secs())),
        };
        let was = std::mem::replace(&mut *unreachable.lock().expect("storage probe"), failure);
        let now = unreachable.lock().expect("storage probe").clone();
        match (was.is_some(), now) {
            (false, Some(e)) => {
                tracing::warn!(error = %e, "the lake's storage does not answer; /readyz says 503")
            }
            (true, None) => tracing::info!("the lake's storage answers again"),
            _ => {}
        }
        tokio::select! {
            _ = tokio::time::sleep(PROBE_EVERY) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Applies the configured tables once storage answers (it did not at start).
async fn apply_later(
    catalog: Arc<Catalog>,
    tables: Vec<(String, TableSpec)>,
    failure: Arc<Mutex<Option<String>>>,
) {
    let mut backoff = Duration::from_millis(500);
    loop {
        tokio::time::sleep(backoff).await;
        match apply_tables(&catalog, &tables).await {
            Ok(()) => {
                tracing::info!("applied the configured tables");
                *failure.lock().expect("configured") = None;
                return;
            }
            Err(e) => {
                if !storage_down(&e) {
                    tracing::error!(error = %format!("{e:#}"), "cannot apply the configured tables");
                }
                *failure.lock().expect("configured") = Some(format!("{e:#}"));
            }
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

/// Applies the configured jobs once storage answers (it did not at start).
async fn apply_jobs_later(jobs: Arc<Jobs>, configured: Vec<(String, tarn_pipelines::JobSpec)>) {
    let mut backoff = Duration::from_millis(500);
    loop {
        tokio::time::sleep(backoff).await;
        match jobs.apply_config(&configured).await {
            Ok(()) => return tracing::info!("applied the configured jobs"),
            Err(e) => tracing::warn!(error = %e, "cannot apply the configured jobs yet"),
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

/// A bound, ready-to-run Tarn server.
pub struct Application {
    listener: TcpListener,
    services: Services,
    lake: String,
    /// The Postgres endpoint and its listener, unless turned off.
    pg: Option<(tarn_query::pg::PgServer, TcpListener)>,
    /// The Arrow Flight SQL endpoint and its listener, when turned on.
    flight: Option<(tarn_query::flight::FlightSqlServer, TcpListener)>,
}

impl Application {
    /// Opens the lake, builds the services and binds the listener (port 0 picks a free port).
    pub async fn build(config: ServeConfig) -> anyhow::Result<Self> {
        let services = Services::open(&config).await?;
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let lake = services.api.catalog.lake().location().to_string();
        let pg = match config.pg_listen {
            Some(address) => Some(bind_pg(&services.api, address).await?),
            None => None,
        };
        let flight = match config.flight_listen {
            Some(address) => {
                let listener = TcpListener::bind(address).await.with_context(|| {
                    format!("cannot listen on {address} for Arrow Flight SQL (--flight-listen)")
                })?;
                let api = &services.api;
                let server = tarn_query::flight::FlightSqlServer::new(
                    api.engine.clone(),
                    api.keys.clone(),
                    api.limits.clone(),
                );
                Some((server, listener))
            }
            None => None,
        };
        Ok(Application { listener, services, lake, pg, flight })
    }

    /// The address of the Arrow Flight SQL endpoint, when it is on.
    pub fn flight_addr(&self) -> Option<SocketAddr> {
        self.flight.as_ref().map(|(_, l)| l.local_addr().expect("a bound listener has an address"))
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
        if self.services.api.keys.is_open() {
            tracing::warn!(
                "no API keys are configured: every endpoint is open to anyone who can reach {addr}"
            );
        }
        // Every endpoint stops on the same signal.
        let shutdown = futures::FutureExt::shared(Box::pin(shutdown));
        let pg = self.pg_addr();
        let flight_addr = self.flight_addr();
        let pg = async {
            if let Some((server, listener)) = self.pg {
                tracing::info!("Tarn is serving the Postgres protocol on {}", pg.expect("bound"));
                server.serve(listener, shutdown.clone()).await;
            }
        };
        // Without TCP_NODELAY, a streamed answer's last small write (the end of a chunked body)
        // waits for the client's delayed ACK: +40 ms on every short query over a kept-alive
        // connection.
        let listener = axum::serve::ListenerExt::tap_io(self.listener, |tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY on a connection");
            }
        });
        let http = axum::serve(listener, tarn_http::router(&self.services.api))
            .with_graceful_shutdown(shutdown.clone())
            .into_future();
        let flight = async {
            if let Some((server, listener)) = self.flight {
                tracing::info!(
                    "Tarn is serving Arrow Flight SQL on {}",
                    flight_addr.expect("bound")
                );
                if let Err(e) = server.serve(listener, shutdown.clone()).await {
                    tracing::error!(error = %e, "the Arrow Flight SQL endpoint stopped");
                }
            }
        };
        let (http, (), ()) = tokio::join!(http, pg, flight);
        http?;
        let _ = self.services.stop.send(true);
        self.services.api.ingestor.shutdown().await;
        // Notifications of runs that just ended go out before the process does.
        if tokio::time::timeout(Duration::from_secs(15), self.services.api.jobs.notified())
            .await
            .is_err()
        {
            tracing::warn!("stopped before every job notification was delivered");
        }
        tracing::info!("Tarn stopped");
        Ok(())
    }
}

/// Sets up the Postgres endpoint over the services and binds its listener.
async fn bind_pg(
    services: &tarn_http::Services,
    address: SocketAddr,
) -> anyhow::Result<(tarn_query::pg::PgServer, TcpListener)> {
    let server = tarn_query::pg::PgServer::new(
        services.engine.clone(),
        services.keys.clone(),
        services.limits.clone(),
        tarn_query::pg::PgConfig::default(),
    )
    .await
    .context("cannot set up the Postgres endpoint")?;
    let listener = TcpListener::bind(address).await.with_context(|| {
        format!("cannot listen on {address} for the Postgres protocol (--pg-listen; `off` turns it off)")
    })?;
    Ok((server, listener))
}

/// Completes on SIGINT or SIGTERM.
pub(crate) async fn shutdown_signal() {
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
