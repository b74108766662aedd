//! The Postgres wire protocol: psql, Metabase, Redash, Grafana and every Postgres driver can
//! query the lake.
//!
//! The protocol, the `pg_catalog` tables clients read to list tables and columns, and the
//! encoding of Arrow results are the DataFusion ecosystem's (`datafusion-postgres`, `pgwire`,
//! `arrow-pg`, `datafusion-pg-catalog`); this module puts Tarn's rules around them:
//!
//! - **The same tables.** One long-lived session whose catalog `tarn` is the lake's (schema
//!   `default` first, so `events` and `default.events` both work), plus `information_schema`
//!   and `pg_catalog` (so psql's `\dt` and `\d events` work). The list of tables is re-read
//!   from the catalog before every query, so a table created a moment ago is there; time
//!   travel (`events VERSION AS OF 3`) works as over HTTP.
//! - **Read-only.** Queries (`SELECT`, `WITH`, `VALUES`, `EXPLAIN`, `SHOW`), transactions
//!   (`BEGIN`/`COMMIT`/`ROLLBACK`, which change nothing), `FETCH`/`CLOSE` (cursors themselves,
//!   `DECLARE`, are refused with `0A000`: results stream as they are computed), `DISCARD`,
//!   `DEALLOCATE` and the session variables clients set (`SET application_name`,
//!   `statement_timeout`, `DateStyle`, ...; other `SET`s are acknowledged and ignored, and
//!   `SET datafusion.*` is refused: the server's settings are shared). Anything else (DDL,
//!   DML, `COPY`) fails with SQLSTATE `25006` (read-only transaction), and every plan is
//!   checked again with DataFusion's `SQLOptions` before it runs.
//! - **The same limits.** Every query takes a slot of the engine's [`crate::Admission`] (a full
//!   queue fails at once with `53300`), runs within the engine's timeout from admission to its
//!   last row (`57014`), and shares the engine's memory pool with spill.
//! - **The same keys.** With API keys configured, the password is the key (cleartext
//!   password authentication, so use TLS-terminating tunnels beyond localhost); it needs the
//!   `query` scope (`admin` has it). The user name is free. A wrong or missing key fails
//!   with `28P01`, a key without the scope with `28000`. With no keys, no password is asked
//!   (like the HTTP API, open).
//! - **A bound on connections** ([`PgConfig::max_connections`]); beyond it, new connections
//!   get `53300` "too many connections".

mod auth;
mod catalog;
mod errors;
mod hooks;
mod params;
mod rewrite;
mod service;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use datafusion_postgres::datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::setup_pg_catalog;
use datafusion_postgres::datafusion_pg_catalog::sql::PostgresCompatibilityParser;
use datafusion_postgres::hooks::cursor::CursorStatementHook;
use datafusion_postgres::hooks::set_show::SetShowHook;
use datafusion_postgres::hooks::transactions::TransactionStatementHook;
use datafusion_postgres::pgwire;
use datafusion_postgres::QueryHook;
use pgwire::api::auth::{DefaultServerParameterProvider, StartupHandler};
use pgwire::api::cancel::DefaultCancelHandler;
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::{
    ConnectionManager, ErrorHandler, PgWireServerHandlers, RandomPidSecretKeyGenerator,
};
use tarn_catalog::auth::KeyRing;
use tarn_catalog::limit::RateLimits;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::provider::CATALOG_NAME;
use crate::QueryEngine;
use auth::{KeyStartup, TooManyConnections};
use catalog::LiveCatalog;
use errors::TarnErrors;
use hooks::ReadOnlyHook;
use service::{TarnParser, TarnService};

/// Settings of the Postgres endpoint beyond the engine's.
#[derive(Debug, Clone)]
pub struct PgConfig {
    /// Connections open at once; more are refused with `53300` "too many connections".
    pub max_connections: usize,
}

impl Default for PgConfig {
    fn default() -> Self {
        PgConfig { max_connections: 100 }
    }
}

/// The Postgres endpoint, set up (session, `pg_catalog`) and ready to serve.
pub struct PgServer {
    handlers: Arc<Handlers>,
    config: PgConfig,
}

impl PgServer {
    /// Sets up the endpoint over `engine`'s tables and limits; `keys` decide who may connect.
    pub async fn new(
        engine: Arc<QueryEngine>,
        keys: Arc<KeyRing>,
        limits: Arc<RateLimits>,
        config: PgConfig,
    ) -> crate::Result<Self> {
        Ok(PgServer { handlers: Arc::new(Handlers::new(engine, keys, limits).await?), config })
    }

    /// Serves connections accepted on `listener` until `shutdown` completes, then closes
    /// every connection (queries in flight are cancelled: Postgres sessions are long-lived,
    /// so waiting for them would hold a shutdown up indefinitely).
    pub async fn serve(self, listener: TcpListener, shutdown: impl Future<Output = ()> + Send) {
        let PgServer { handlers, config } = self;
        let refuse = Arc::new(TooManyConnections);
        let slots = Arc::new(Semaphore::new(config.max_connections.max(1)));
        let mut connections = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                () = &mut shutdown => break,
                Some(_) = connections.join_next(), if !connections.is_empty() => continue,
                accepted = listener.accept() => accepted,
            };
            let (socket, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    tracing::warn!(error = %e, "cannot accept a Postgres connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = socket.set_nodelay(true);
            match slots.clone().try_acquire_owned() {
                Ok(slot) => {
                    let handlers = handlers.clone();
                    connections.spawn(async move {
                        let _slot = slot;
                        tracing::debug!(%peer, "Postgres connection");
                        if let Err(e) = pgwire::tokio::process_socket(socket, None, handlers).await
                        {
                            tracing::debug!(%peer, error = %e, "Postgres connection failed");
                        }
                    });
                }
                Err(_) => {
                    tracing::warn!(%peer, max = config.max_connections, "Postgres connection refused: too many connections");
                    let refuse = refuse.clone();
                    connections.spawn(async move {
                        let _ = pgwire::tokio::process_socket(socket, None, refuse).await;
                    });
                }
            }
        }
        connections.shutdown().await;
    }
}

/// `server_version` as this endpoint reports it: `16.6 (Tarn 0.1.0)`.
fn server_version() -> String {
    format!("{} (Tarn {})", crate::POSTGRES_VERSION, env!("CARGO_PKG_VERSION"))
}

/// The settings `current_setting(name)` answers: the parameters sent at connection, and
/// `server_version_num` (`160006` for 16.6) beside them.
fn settings(parameters: &DefaultServerParameterProvider) -> BTreeMap<String, String> {
    let on = |flag: bool| if flag { "on" } else { "off" }.to_string();
    let (major, minor) =
        crate::POSTGRES_VERSION.split_once('.').unwrap_or((crate::POSTGRES_VERSION, "0"));
    let number = major.parse::<u32>().unwrap_or(0) * 10_000 + minor.parse::<u32>().unwrap_or(0);
    BTreeMap::from([
        ("server_version".to_string(), parameters.server_version.clone()),
        ("server_version_num".to_string(), number.to_string()),
        ("server_encoding".to_string(), parameters.server_encoding.clone()),
        (
            "client_encoding".to_string(),
            parameters.client_encoding.clone().unwrap_or_else(|| "UTF8".to_string()),
        ),
        ("integer_datetimes".to_string(), on(parameters.integer_datetimes)),
        ("in_hot_standby".to_string(), on(parameters.in_hot_standby)),
        ("search_path".to_string(), parameters.search_path.clone()),
        ("is_superuser".to_string(), on(parameters.is_superuser)),
        ("default_transaction_read_only".to_string(), on(parameters.default_transaction_read_only)),
        ("transaction_read_only".to_string(), on(parameters.default_transaction_read_only)),
        ("timezone".to_string(), parameters.time_zone.clone()),
        ("datestyle".to_string(), parameters.date_style.clone()),
        ("intervalstyle".to_string(), parameters.interval_style.clone()),
        ("standard_conforming_strings".to_string(), on(parameters.standard_conforming_strings)),
        ("max_identifier_length".to_string(), "63".to_string()),
    ])
}

/// The handlers of every connection: key check at startup, then Tarn's query service.
struct Handlers {
    service: Arc<TarnService>,
    startup: Arc<KeyStartup>,
    cancel: Arc<DefaultCancelHandler>,
}

impl Handlers {
    async fn new(
        engine: Arc<QueryEngine>,
        keys: Arc<KeyRing>,
        limits: Arc<RateLimits>,
    ) -> crate::Result<Self> {
        let tables = Arc::new(LiveCatalog::new(engine.catalog().clone(), engine.scans()));
        // The table list is read before every query (not here: storage may be down at start).
        let ctx = engine.session_over(tables.clone());
        setup_pg_catalog(&ctx, CATALOG_NAME, EmptyContextProvider).map_err(|e| *e)?;
        ctx.register_udf(catalog::pg_type_is_visible());
        ctx.register_udf(catalog::to_regtype());
        let mut parameters = DefaultServerParameterProvider::default();
        // What clients read the server's version from at connection (libpq, psycopg, JDBC):
        // PostgreSQL's major.minor first.
        parameters.server_version = server_version();
        parameters.default_transaction_read_only = true;
        // Quoted as PostgreSQL writes a reserved word in it: Grafana's table and column
        // pickers compare quote_ident(table_schema) with its parts.
        parameters.search_path = format!("\"{}\"", tarn_catalog::DEFAULT_NAMESPACE);
        ctx.register_udf(catalog::current_setting(settings(&parameters)));
        let ctx = Arc::new(ctx);
        let hooks: Vec<Arc<dyn QueryHook>> = vec![
            Arc::new(ReadOnlyHook),
            Arc::new(CursorStatementHook),
            Arc::new(hooks::ServerVersionHook),
            Arc::new(SetShowHook),
            Arc::new(TransactionStatementHook),
        ];
        let parser = Arc::new(TarnParser {
            ctx: ctx.clone(),
            tables: tables.clone(),
            hooks: hooks.clone(),
            sql_parser: PostgresCompatibilityParser::new(),
        });
        let connections = Arc::new(ConnectionManager::new());
        Ok(Handlers {
            service: Arc::new(TarnService {
                engine,
                ctx,
                tables,
                hooks,
                parser,
                keys: keys.clone(),
                limits,
            }),
            startup: Arc::new(KeyStartup {
                keys,
                connections: connections.clone(),
                parameters,
                pids: RandomPidSecretKeyGenerator::default(),
            }),
            cancel: Arc::new(DefaultCancelHandler::new(connections)),
        })
    }
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.service.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.service.clone()
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        self.startup.clone()
    }

    fn error_handler(&self) -> Arc<impl ErrorHandler> {
        Arc::new(TarnErrors)
    }

    fn cancel_handler(&self) -> Arc<impl pgwire::api::cancel::CancelHandler> {
        self.cancel.clone()
    }
}
