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
//!   (`BEGIN`/`COMMIT`/`ROLLBACK`, which change nothing), cursors (`DECLARE`/`FETCH`/`CLOSE`),
//!   `DISCARD`, `DEALLOCATE` and the session variables clients set (`SET application_name`,
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

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::future::Future;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use datafusion::catalog::{CatalogProvider, SchemaProvider};
use datafusion::common::ParamValues;
use datafusion::error::DataFusionError;
use datafusion::execution::context::SQLOptions;
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{Expr, Query, Set, SetExpr, Statement};
use datafusion::sql::sqlparser::parser::ParserError;
use datafusion_postgres::arrow_pg::datatypes::df::encode_dataframe;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::setup_pg_catalog;
use datafusion_postgres::datafusion_pg_catalog::sql::PostgresCompatibilityParser;
use datafusion_postgres::hooks::cursor::CursorStatementHook;
use datafusion_postgres::hooks::set_show::SetShowHook;
use datafusion_postgres::hooks::transactions::TransactionStatementHook;
use datafusion_postgres::hooks::HookClient;
use datafusion_postgres::pgwire;
use datafusion_postgres::{DfSessionService, Parser, QueryHook};
use futures::{Sink, StreamExt};
use pgwire::api::auth::{
    finish_authentication, protocol_negotiation, save_startup_parameters_to_metadata,
    DefaultServerParameterProvider, StartupHandler,
};
use pgwire::api::cancel::DefaultCancelHandler;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::{
    ClientInfo, ClientPortalStore, ConnectionHandle, ConnectionManager, ErrorHandler,
    PgWireConnectionState, PgWireServerHandlers, PidSecretKeyGenerator,
    RandomPidSecretKeyGenerator, Type,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::startup::Authentication;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use pgwire::types::format::FormatOptions;
use tarn_catalog::auth::{KeyRing, Scope};
use tarn_catalog::{ApiError, Catalog, ErrorCode};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::provider::{LakeCatalog, CATALOG_NAME};
use crate::{timetravel, Error, QueryEngine};

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
        config: PgConfig,
    ) -> crate::Result<Self> {
        Ok(PgServer { handlers: Arc::new(Handlers::new(engine, keys).await?), config })
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

/// The handlers of every connection: key check at startup, then Tarn's query service.
struct Handlers {
    service: Arc<TarnService>,
    startup: Arc<KeyStartup>,
    cancel: Arc<DefaultCancelHandler>,
}

impl Handlers {
    async fn new(engine: Arc<QueryEngine>, keys: Arc<KeyRing>) -> crate::Result<Self> {
        let tables = Arc::new(LiveCatalog::new(engine.catalog().clone(), engine.scan_session()));
        tables.refresh().await?;
        let ctx = engine.session_over(tables.clone());
        setup_pg_catalog(&ctx, CATALOG_NAME, EmptyContextProvider).map_err(|e| *e)?;
        let ctx = Arc::new(ctx);
        let hooks: Vec<Arc<dyn QueryHook>> = vec![
            Arc::new(ReadOnlyHook),
            Arc::new(CursorStatementHook),
            Arc::new(SetShowHook),
            Arc::new(TransactionStatementHook),
        ];
        let inner = DfSessionService::new_with_hooks(ctx.clone(), hooks.clone());
        let parser = Arc::new(TarnParser { inner: inner.query_parser(), tables: tables.clone() });
        let connections = Arc::new(ConnectionManager::new());
        let mut parameters = DefaultServerParameterProvider::default();
        parameters.default_transaction_read_only = true;
        parameters.search_path = tarn_catalog::DEFAULT_NAMESPACE.to_string();
        Ok(Handlers {
            service: Arc::new(TarnService {
                engine,
                ctx,
                tables,
                hooks,
                inner,
                parser,
                sql_parser: PostgresCompatibilityParser::new(),
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

/// Startup with the API key as password (cleartext), checked against the key ring's hashes;
/// no password when no keys are configured.
struct KeyStartup {
    keys: Arc<KeyRing>,
    connections: Arc<ConnectionManager>,
    parameters: DefaultServerParameterProvider,
    pids: RandomPidSecretKeyGenerator,
}

impl KeyStartup {
    /// Registers the connection (for cancel requests) and says the session is ready.
    async fn accept<C>(&self, client: &mut C) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let (pid, secret_key) = self.pids.generate(client);
        client.set_pid_and_secret_key(pid, secret_key.clone());
        let (handle, guard) = self.connections.register(pid, secret_key);
        client.session_extensions().insert::<Arc<ConnectionHandle>>(handle);
        client.session_extensions().insert(guard);
        finish_authentication(client, &self.parameters).await
    }
}

#[async_trait]
impl StartupHandler for KeyStartup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match message {
            PgWireFrontendMessage::Startup(startup) => {
                protocol_negotiation(client, &startup).await?;
                save_startup_parameters_to_metadata(client, &startup);
                if self.keys.is_open() {
                    return self.accept(client).await;
                }
                client.set_state(PgWireConnectionState::AuthenticationInProgress);
                futures::SinkExt::send(
                    client,
                    PgWireBackendMessage::Authentication(Authentication::CleartextPassword),
                )
                .await?;
            }
            PgWireFrontendMessage::PasswordMessageFamily(password) => {
                let password = password.into_password()?;
                let user = client.metadata().get(pgwire::api::METADATA_USER).cloned();
                match self.keys.authorize(Some(&password.password), false, None, &Scope::Query) {
                    Ok(()) => {
                        tracing::debug!(user = user.as_deref().unwrap_or(""), "Postgres login");
                        return self.accept(client).await;
                    }
                    Err(e) => {
                        tracing::info!(user = user.as_deref().unwrap_or(""), reason = %e.message, "Postgres login refused");
                        let code = match e.code {
                            ErrorCode::Forbidden => "28000",
                            _ => "28P01",
                        };
                        let mut info = ErrorInfo::new("FATAL".into(), code.into(), e.message);
                        info.hint =
                            Some("the password is a Tarn API key with the query scope".to_string());
                        return Err(PgWireError::UserError(Box::new(info)));
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// The handlers of a connection over the bound: it is refused at startup.
struct TooManyConnections;

struct RefuseStartup;

#[async_trait]
impl StartupHandler for RefuseStartup {
    async fn on_startup<C>(
        &self,
        _client: &mut C,
        _message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        Err(user_error("FATAL", "53300", "sorry, too many clients already".into()))
    }
}

impl PgWireServerHandlers for TooManyConnections {
    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        Arc::new(RefuseStartup)
    }
}

/// Maps DataFusion's and Tarn's errors to SQLSTATEs and messages before they are sent
/// (errors that are bugs are logged and sent without internals).
struct TarnErrors;

impl ErrorHandler for TarnErrors {
    fn on_error<C>(&self, _client: &C, error: &mut PgWireError)
    where
        C: ClientInfo,
    {
        if let PgWireError::ApiError(inner) = error {
            let mapped = if let Some(e) = inner.downcast_ref::<DataFusionError>() {
                Some(datafusion_error(e))
            } else if let Some(e) = inner.downcast_ref::<ParserError>() {
                Some(user_error("ERROR", "42601", e.to_string()))
            } else {
                inner.downcast_ref::<ApiError>().map(|e| api_error(e.clone()))
            };
            if let Some(mapped) = mapped {
                *error = mapped;
            }
        }
        tracing::debug!(error = %error, "Postgres error sent");
    }
}

fn user_error(severity: &str, code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(severity.into(), code.into(), message)))
}

/// A Tarn error as a Postgres error.
fn pg_error(e: Error) -> PgWireError {
    let code = match &e {
        Error::ReadOnly(_) => "25006",
        Error::TableNotFound(_) => "42P01",
        Error::BadQuery(_) => "42601",
        Error::TooManyQueries(_) => "53300",
        Error::Timeout(_) => "57014",
        Error::QueryNotFound(_) | Error::NotReady(_) => "XX000",
        Error::DataFusion(e) => return datafusion_error(e),
        Error::Catalog(_) => return api_error(ApiError::from(e)),
    };
    user_error("ERROR", code, e.to_string())
}

/// A DataFusion error by its root cause, with the message the HTTP API gives.
fn datafusion_error(e: &DataFusionError) -> PgWireError {
    let root = e.find_root();
    let code = match root {
        DataFusionError::SQL(..) => "42601",
        DataFusionError::Plan(m) if m.contains("not found") && m.starts_with("table") => "42P01",
        DataFusionError::Plan(_) | DataFusionError::SchemaError(..) => "42000",
        DataFusionError::Execution(_) | DataFusionError::ArrowError(..) => "22000",
        DataFusionError::ResourcesExhausted(_) => "53200",
        DataFusionError::NotImplemented(_) => "0A000",
        DataFusionError::External(inner) => {
            if let Some(api) = inner.downcast_ref::<ApiError>() {
                return api_error(api.clone());
            }
            "XX000"
        }
        _ => "XX000",
    };
    let message = if code == "XX000" {
        tracing::error!(error = %e, "internal error in a Postgres query");
        "internal error; the server log has the details".to_string()
    } else {
        root.to_string()
    };
    user_error("ERROR", code, message)
}

fn api_error(e: ApiError) -> PgWireError {
    let code = match e.code {
        ErrorCode::BadRequest | ErrorCode::Unprocessable => "42000",
        ErrorCode::Unauthorized => "28P01",
        ErrorCode::Forbidden => "42501",
        ErrorCode::NotFound => "42P01",
        ErrorCode::TooManyRequests => "53300",
        ErrorCode::NotImplemented => "0A000",
        ErrorCode::Timeout => "57014",
        ErrorCode::Unavailable => "58030",
        _ => "XX000",
    };
    user_error("ERROR", code, e.message)
}

/// Refuses every statement that is not a read, a transaction or cursor statement, or a
/// session variable; answers the ones DataFusion has no use for. Runs before the other hooks.
#[derive(Debug)]
struct ReadOnlyHook;

/// What [`ReadOnlyHook`] decides.
enum Verdict {
    /// Goes on to the other hooks and DataFusion.
    Allow,
    /// Answered here with this tag, nothing done.
    Answer(&'static str),
    /// Refused: not a read.
    Refuse(String),
    /// Refused: a feature Tarn does not offer over the wire.
    Unsupported(String),
}

impl Verdict {
    /// What a hook answers: nothing for statements that go on, `answer(tag)` for those
    /// answered here, the error for refused ones.
    fn hook_answer<T>(self, answer: impl FnOnce(&'static str) -> T) -> Option<PgWireResult<T>> {
        match self {
            Verdict::Allow => None,
            Verdict::Answer(tag) => Some(Ok(answer(tag))),
            Verdict::Refuse(why) => Some(Err(read_only(why))),
            Verdict::Unsupported(why) => Some(Err(user_error("ERROR", "0A000", why))),
        }
    }
}

fn verdict(statement: &Statement) -> Verdict {
    match statement {
        Statement::Query(query) => query_verdict(query),
        Statement::Explain { statement, .. } => match verdict(statement) {
            Verdict::Refuse(why) => Verdict::Refuse(why),
            _ => Verdict::Allow,
        },
        Statement::ExplainTable { .. }
        | Statement::ShowTables { .. }
        | Statement::ShowColumns { .. }
        | Statement::ShowVariable { .. }
        | Statement::ShowStatus { .. }
        | Statement::ShowCatalogs { .. }
        | Statement::ShowSchemas { .. }
        | Statement::ShowFunctions { .. }
        | Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. }
        | Statement::Fetch { .. }
        | Statement::Close { .. } => Verdict::Allow,
        // A declared cursor would run its query in the background, outside the execution
        // slots and the time limit; rows stream to the client as they are computed anyway.
        Statement::Declare { .. } => Verdict::Unsupported(
            "cursors (DECLARE ... CURSOR) are not supported: query results stream as they are computed".into(),
        ),
        Statement::Discard { .. } => Verdict::Answer("DISCARD ALL"),
        Statement::Deallocate { .. } => Verdict::Answer("DEALLOCATE"),
        Statement::Set(set) => set_verdict(set),
        other => Verdict::Refuse(format!("{} statements are not allowed", statement_kind(other))),
    }
}

/// Queries are reads unless they write (`SELECT ... INTO`, DML in a `WITH`).
fn query_verdict(query: &Query) -> Verdict {
    fn writes(body: &SetExpr) -> bool {
        match body {
            SetExpr::Select(select) => select.into.is_some(),
            SetExpr::Query(query) => query_writes(query),
            SetExpr::SetOperation { left, right, .. } => writes(left) || writes(right),
            SetExpr::Values(_) | SetExpr::Table(_) => false,
            _ => true,
        }
    }
    fn query_writes(query: &Query) -> bool {
        writes(&query.body)
            || query
                .with
                .as_ref()
                .is_some_and(|with| with.cte_tables.iter().any(|cte| query_writes(&cte.query)))
    }
    if query_writes(query) {
        Verdict::Refuse("statements that write are not allowed (SELECT ... INTO, DML)".into())
    } else {
        Verdict::Allow
    }
}

/// The session variables the `SET` hook keeps per connection pass; `datafusion.*` settings
/// are shared by every session and refused; the rest are acknowledged and ignored.
fn set_verdict(set: &Set) -> Verdict {
    match set {
        Set::SingleAssignment { variable, .. }
            if variable.to_string().to_lowercase().starts_with("datafusion.") =>
        {
            let name = variable.to_string().to_lowercase();
            Verdict::Refuse(format!("the server's settings ({name}) cannot be changed"))
        }
        Set::SingleAssignment { scope: None, hivevar: false, variable, values } => {
            let name = variable.to_string().to_lowercase();
            let literal = matches!(values.first(), Some(Expr::Value(_)));
            if name.starts_with("datafusion.") {
                Verdict::Refuse(format!("the server's settings ({name}) cannot be changed"))
            } else if name == "statement_timeout"
                || (literal
                    && matches!(
                        name.as_str(),
                        "datestyle"
                            | "bytea_output"
                            | "intervalstyle"
                            | "application_name"
                            | "extra_float_digits"
                            | "search_path"
                    ))
            {
                Verdict::Allow
            } else {
                Verdict::Answer("SET")
            }
        }
        Set::SetTimeZone { local: false, .. } => Verdict::Allow,
        _ => Verdict::Answer("SET"),
    }
}

/// `CREATE TABLE`, `INSERT`, `COPY`: the words that name a statement's kind.
fn statement_kind(statement: &Statement) -> String {
    let text = statement.to_string();
    let mut words = text.split_whitespace().map(|w| w.to_ascii_uppercase());
    let first = words.next().unwrap_or_default();
    match first.as_str() {
        "CREATE" | "DROP" | "ALTER" | "TRUNCATE" => match words.next() {
            Some(second) if second.chars().all(|c| c.is_ascii_alphabetic()) => {
                format!("{first} {second}")
            }
            _ => first,
        },
        _ => first,
    }
}

fn read_only(why: String) -> PgWireError {
    pg_error(Error::ReadOnly(why))
}

#[async_trait]
impl QueryHook for ReadOnlyHook {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        _ctx: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        verdict(statement).hook_answer(|tag| Response::Execution(Tag::new(tag)))
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        _ctx: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        verdict(statement).hook_answer(|_| {
            LogicalPlan::EmptyRelation(datafusion::logical_expr::EmptyRelation {
                produce_one_row: false,
                schema: Arc::new(datafusion::common::DFSchema::empty()),
            })
        })
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        _plan: &LogicalPlan,
        _params: &ParamValues,
        ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        self.handle_simple_query(statement, ctx, client).await
    }
}

/// Refuses plans that are not reads (the second line of defence after [`ReadOnlyHook`]).
fn check_read_only(plan: &LogicalPlan) -> PgWireResult<()> {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
        .verify_plan(plan)
        .map_err(|e| read_only(e.strip_backtrace()))
}

/// Whether a statement runs a query (and so takes an execution slot): everything but the
/// statements the hooks answer without reading tables.
fn runs_query(statement: &Statement) -> bool {
    !matches!(
        statement,
        Statement::Set(_)
            | Statement::ShowVariable { .. }
            | Statement::ShowStatus { .. }
            | Statement::ShowCatalogs { .. }
            | Statement::StartTransaction { .. }
            | Statement::Commit { .. }
            | Statement::Rollback { .. }
            | Statement::Declare { .. }
            | Statement::Close { .. }
            | Statement::Discard { .. }
            | Statement::Deallocate { .. }
    )
}

/// Tarn's query service over the wire: DataFusion on the lake, read-only, within the
/// engine's limits.
struct TarnService {
    engine: Arc<QueryEngine>,
    ctx: Arc<SessionContext>,
    tables: Arc<LiveCatalog>,
    hooks: Vec<Arc<dyn QueryHook>>,
    /// datafusion-postgres's service, for the extended protocol (parse, bind, describe).
    inner: DfSessionService,
    parser: Arc<TarnParser>,
    sql_parser: PostgresCompatibilityParser,
}

/// A query's execution slot and its deadline. The statements of one simple-query message
/// share one slot: pgwire sends their rows only after all of them are planned, so a slot per
/// statement would let a message of more statements than slots wait for itself.
#[derive(Clone)]
struct Slot {
    permit: Arc<OwnedSemaphorePermit>,
    deadline: Instant,
    limit: Duration,
    /// Rows one answer may hold before it fails with `54000`, for answers pgwire collects in
    /// memory before sending (an extended-protocol Execute without a row limit).
    max_rows: Option<usize>,
}

impl TarnService {
    /// Waits for an execution slot (or fails at once when the queue is full); the time limit
    /// counts from admission, as over HTTP.
    async fn slot(&self) -> PgWireResult<Slot> {
        let ticket = self.engine.admission().enter().map_err(pg_error)?;
        let permit = Arc::new(ticket.admit().await);
        let limit = self.engine.config().timeout;
        Ok(Slot { permit, deadline: Instant::now() + limit, limit, max_rows: None })
    }

    /// Runs `work` within the slot's deadline; a query's rows stream within it too, and the
    /// slot is held until the last row.
    async fn within(
        slot: Slot,
        work: impl Future<Output = PgWireResult<Response>>,
    ) -> PgWireResult<Response> {
        let response = tokio::time::timeout_at(slot.deadline, work)
            .await
            .map_err(|_| pg_error(Error::Timeout(slot.limit)))??;
        Ok(match response {
            Response::Query(query) => Response::Query(limit_rows(query, slot)),
            other => other,
        })
    }

    /// Plans one statement with the pg session, checks it is a read and starts it.
    async fn run<C>(&self, client: &C, statement: Statement) -> PgWireResult<Response>
    where
        C: ClientInfo + ?Sized,
    {
        let state = self.ctx.state();
        let plan = state
            .statement_to_plan(DfStatement::Statement(Box::new(statement)))
            .await
            .map_err(|e| datafusion_error(&e))?;
        check_read_only(&plan)?;
        let frame = self.ctx.execute_logical_plan(plan).await.map_err(|e| datafusion_error(&e))?;
        let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
        Ok(Response::Query(encode_dataframe(frame, &Format::UnifiedText, Some(options)).await?))
    }
}

/// The rows of `query`, cut with `57014` at the slot's deadline (and with `54000` past the
/// slot's row cap); the slot is freed after the last row (or when the client stops reading
/// and the response is dropped).
fn limit_rows(query: QueryResponse, slot: Slot) -> QueryResponse {
    let tag = query.command_tag().to_string();
    let schema = query.row_schema();
    let Slot { permit, deadline, limit, max_rows } = slot;
    let state = Some((query.data_rows, permit, 0usize));
    let rows = futures::stream::unfold(state, move |state| async move {
        let (mut rows, permit, sent) = state?;
        match tokio::time::timeout_at(deadline, rows.next()).await {
            Ok(Some(_)) if max_rows.is_some_and(|cap| sent >= cap) => {
                let message = format!(
                    "the answer has more than {sent} rows, the most one Execute without a row limit may hold; fetch it in pages (e.g. JDBC setFetchSize) or add a LIMIT"
                );
                Some((Err(user_error("ERROR", "54000", message)), None))
            }
            Ok(Some(row)) => Some((row, Some((rows, permit, sent + 1)))),
            Ok(None) => None,
            Err(_) => Some((Err(pg_error(Error::Timeout(limit))), None)),
        }
    });
    let mut limited = QueryResponse::new(schema, rows);
    limited.set_command_tag(&tag);
    limited
}

#[async_trait]
impl SimpleQueryHandler for TarnService {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let sql = timetravel::rewrite(query).map_err(|e| pg_error(Error::BadQuery(e)))?;
        let statements =
            self.sql_parser.parse(&sql).map_err(|e| PgWireError::ApiError(Box::new(e)))?;
        if statements.is_empty() {
            return Ok(vec![Response::EmptyQuery]);
        }
        let mut responses = Vec::with_capacity(statements.len());
        let mut shared: Option<Slot> = None;
        'statements: for statement in statements {
            // Refused statements are refused before they wait for a slot.
            if let Some(answer) =
                self.hooks[0].handle_simple_query(&statement, &self.ctx, client).await
            {
                responses.push(answer?);
                continue;
            }
            if !runs_query(&statement) {
                for hook in &self.hooks[1..] {
                    if let Some(answer) =
                        hook.handle_simple_query(&statement, &self.ctx, client).await
                    {
                        responses.push(answer?);
                        continue 'statements;
                    }
                }
            }
            self.tables.refresh().await.map_err(pg_error)?;
            let slot = match &shared {
                Some(slot) => slot.clone(),
                None => shared.insert(self.slot().await?).clone(),
            };
            let response = Self::within(slot, async {
                for hook in &self.hooks[1..] {
                    if let Some(answer) =
                        hook.handle_simple_query(&statement, &self.ctx, &mut *client).await
                    {
                        return answer;
                    }
                }
                self.run(&*client, statement.clone()).await
            })
            .await?;
            responses.push(response);
        }
        Ok(responses)
    }
}

#[async_trait]
impl ExtendedQueryHandler for TarnService {
    type Statement = <DfSessionService as ExtendedQueryHandler>::Statement;
    type QueryParser = TarnParser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        self.parser.clone()
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
        max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let runs =
            matches!(&portal.statement.statement.1, Some((statement, _)) if runs_query(statement));
        if !runs {
            return ExtendedQueryHandler::do_query(&self.inner, client, portal, max_rows).await;
        }
        let mut slot = self.slot().await?;
        if max_rows == 0 {
            // pgwire holds such an answer in memory before it sends a row.
            slot.max_rows = Some(self.engine.config().max_result_rows);
        }
        Self::within(slot, ExtendedQueryHandler::do_query(&self.inner, client, portal, max_rows))
            .await
    }
}

/// datafusion-postgres's parser, after time travel is rewritten and the table list
/// refreshed; the plans it makes are checked to be reads.
struct TarnParser {
    inner: Arc<Parser>,
    tables: Arc<LiveCatalog>,
}

#[async_trait]
impl QueryParser for TarnParser {
    type Statement = <Parser as QueryParser>::Statement;

    async fn parse_sql<C>(
        &self,
        client: &C,
        sql: &str,
        types: &[Option<Type>],
    ) -> PgWireResult<Option<Self::Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let sql = timetravel::rewrite(sql).map_err(|e| pg_error(Error::BadQuery(e)))?;
        self.tables.refresh().await.map_err(pg_error)?;
        let parsed = self.inner.parse_sql(client, &sql, types).await?;
        if let Some((_, Some((_, plan)))) = &parsed {
            check_read_only(plan)?;
        }
        Ok(parsed)
    }

    fn get_parameter_types(&self, statement: &Self::Statement) -> PgWireResult<Vec<Type>> {
        self.inner.get_parameter_types(statement)
    }

    fn get_result_schema(
        &self,
        statement: &Self::Statement,
        format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        self.inner.get_result_schema(statement, format)
    }
}

/// Catalog `tarn` for a long-lived session: the lake's tables, re-listed by
/// [`LiveCatalog::refresh`] (before every query), plus the schemas registered on it
/// (`pg_catalog`).
#[derive(Debug)]
struct LiveCatalog {
    catalog: Arc<Catalog>,
    scan_session: Arc<SessionState>,
    lake: RwLock<Arc<LakeCatalog>>,
    extra: RwLock<BTreeMap<String, Arc<dyn SchemaProvider>>>,
}

impl LiveCatalog {
    fn new(catalog: Arc<Catalog>, scan_session: Arc<SessionState>) -> Self {
        let lake = Arc::new(LakeCatalog::new(
            catalog.clone(),
            Vec::new(),
            Arc::default(),
            scan_session.clone(),
        ));
        LiveCatalog { catalog, scan_session, lake: RwLock::new(lake), extra: RwLock::default() }
    }

    /// Re-reads the table names from the catalog. Reads are not recorded: this session
    /// neither reuses results nor reports versions.
    async fn refresh(&self) -> crate::Result<()> {
        let names = self.catalog.names().await?;
        let lake = Arc::new(
            LakeCatalog::new(
                self.catalog.clone(),
                names,
                Arc::new(Mutex::default()),
                self.scan_session.clone(),
            )
            .latest_at_scan(),
        );
        *self.lake.write().expect("catalog lock") = lake;
        Ok(())
    }

    fn lake(&self) -> Arc<LakeCatalog> {
        self.lake.read().expect("catalog lock").clone()
    }
}

impl CatalogProvider for LiveCatalog {
    fn schema_names(&self) -> Vec<String> {
        let mut names = self.lake().schema_names();
        names.extend(self.extra.read().expect("catalog lock").keys().cloned());
        names
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        if let Some(schema) = self.extra.read().expect("catalog lock").get(name) {
            return Some(schema.clone());
        }
        self.lake().schema(name)
    }

    fn register_schema(
        &self,
        name: &str,
        schema: Arc<dyn SchemaProvider>,
    ) -> datafusion::error::Result<Option<Arc<dyn SchemaProvider>>> {
        Ok(self.extra.write().expect("catalog lock").insert(name.to_string(), schema))
    }
}
