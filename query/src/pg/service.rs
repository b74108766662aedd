//! Running statements over the wire: the simple and the extended protocol, within the
//! engine's admission, time limit and row cap.

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion_postgres::arrow_pg::datatypes::arrow_schema_to_pg_fields;
use datafusion_postgres::arrow_pg::datatypes::df::encode_dataframe;
use datafusion_postgres::datafusion_pg_catalog::sql::PostgresCompatibilityParser;
use datafusion_postgres::pgwire;
use datafusion_postgres::QueryHook;
use futures::{Sink, StreamExt};
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{FieldInfo, QueryResponse, Response};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, Type};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::types::format::FormatOptions;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use super::catalog::LiveCatalog;
use super::errors::{pg_error, user_error};
use super::hooks::{check_read_only, runs_query};
use super::{params, rewrite};
use tarn_catalog::auth::{Caller, KeyRing};
use tarn_catalog::limit::RateLimits;

use crate::observe::{Outcome, QueryRecord};
use crate::{timetravel, Error, QueryEngine};

/// Tarn's query service over the wire: DataFusion on the lake, read-only, within the
/// engine's limits.
pub(super) struct TarnService {
    pub engine: Arc<QueryEngine>,
    pub ctx: Arc<SessionContext>,
    pub tables: Arc<LiveCatalog>,
    pub hooks: Vec<Arc<dyn QueryHook>>,
    pub parser: Arc<TarnParser>,
    /// The keys, for the name of a connection's key in a refusal.
    pub keys: Arc<KeyRing>,
    /// The keys' rate limits, the same the HTTP API applies: each query message (simple
    /// protocol) and each Execute (extended) counts as a request of the connection's key.
    pub limits: Arc<RateLimits>,
}

/// A statement of the extended protocol: its SQL, and the statement with its plan (none for
/// an empty query). The same as datafusion-postgres's, whose hooks read it.
pub(super) type PgStatement = (String, Option<(Statement, LogicalPlan)>);

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
    /// Counts a statement against the rate limit of the connection's key (set at login):
    /// `53400` when it is over.
    fn admit<C: ClientInfo + ?Sized>(&self, client: &C) -> PgWireResult<()> {
        let caller = client.session_extensions().get::<Caller>().map_or(Caller::Anonymous, |c| *c);
        match self.limits.admit(caller, false, self.keys.name_of(caller), "pg") {
            Ok(_) => Ok(()),
            Err(refused) => Err(user_error("ERROR", "53400", refused.message)),
        }
    }

    /// Waits for an execution slot (or fails at once when the queue is full); the time limit
    /// counts from admission, as over HTTP.
    async fn slot(&self) -> PgWireResult<Slot> {
        let ticket = self.engine.admission().enter().map_err(pg_error)?;
        let permit = Arc::new(ticket.admit().await);
        let limit = self.engine.config().timeout;
        Ok(Slot { permit, deadline: Instant::now() + limit, limit, max_rows: None })
    }

    /// Runs `work` within the slot's deadline; a query's rows stream within it too, and the
    /// slot is held until the last row. The statement is counted and logged as a query of the
    /// `pg` interface when its answer ends ([`QueryRecord`]).
    async fn within(
        slot: Slot,
        work: impl Future<Output = PgWireResult<Response>>,
    ) -> PgWireResult<Response> {
        let record = QueryRecord::start("pg");
        let response = match tokio::time::timeout_at(slot.deadline, work).await {
            Ok(Ok(response)) => response,
            Ok(Err(e)) => {
                record.finish(Outcome::Failed);
                return Err(e);
            }
            Err(_) => {
                record.finish(Outcome::TimedOut);
                return Err(pg_error(Error::Timeout(slot.limit)));
            }
        };
        Ok(match response {
            Response::Query(query) => Response::Query(limit_rows(query, slot, record)),
            other => {
                record.finish(Outcome::Succeeded);
                other
            }
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
            .map_err(|e| pg_error(e.into()))?;
        check_read_only(&plan)?;
        let frame = self.ctx.execute_logical_plan(plan).await.map_err(|e| pg_error(e.into()))?;
        let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
        Ok(Response::Query(encode_dataframe(frame, &Format::UnifiedText, Some(options)).await?))
    }
}

/// The rows of `query`, cut with `57014` at the slot's deadline (and with `54000` past the
/// slot's row cap); the slot is freed after the last row (or when the client stops reading
/// and the response is dropped), and `record` finished with how the rows ended.
fn limit_rows(query: QueryResponse, slot: Slot, record: QueryRecord) -> QueryResponse {
    let tag = query.command_tag().to_string();
    let schema = query.row_schema();
    let Slot { permit, deadline, limit, max_rows } = slot;
    let state = Some((query.data_rows, permit, 0usize, record));
    let rows = futures::stream::unfold(state, move |state| async move {
        let (mut rows, permit, sent, mut record) = state?;
        match tokio::time::timeout_at(deadline, rows.next()).await {
            Ok(Some(_)) if max_rows.is_some_and(|cap| sent >= cap) => {
                record.finish(Outcome::Failed);
                let message = format!(
                    "the answer has more than {sent} rows, the most one Execute without a row limit may hold; fetch it in pages (e.g. JDBC setFetchSize) or add a LIMIT"
                );
                Some((Err(user_error("ERROR", "54000", message)), None))
            }
            Ok(Some(Err(e))) => {
                record.finish(Outcome::Failed);
                Some((Err(e), None))
            }
            Ok(Some(row)) => {
                record.rows(1);
                Some((row, Some((rows, permit, sent + 1, record))))
            }
            Ok(None) => {
                record.finish(Outcome::Succeeded);
                None
            }
            Err(_) => {
                record.finish(Outcome::TimedOut);
                Some((Err(pg_error(Error::Timeout(limit))), None))
            }
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
        self.admit(&*client)?;
        let sql = timetravel::rewrite(query).map_err(|e| pg_error(Error::BadQuery(e)))?;
        let statements = self.parser.parse(&sql)?;
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
    type Statement = PgStatement;
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
        let (_, Some((statement, plan))) = &portal.statement.statement else {
            return Ok(Response::EmptyQuery);
        };
        self.admit(&*client)?;
        if !runs_query(statement) {
            return self.execute(client, portal, statement, plan).await;
        }
        let mut slot = self.slot().await?;
        if max_rows == 0 {
            // pgwire holds such an answer in memory before it sends a row.
            slot.max_rows = Some(self.engine.config().max_result_rows);
        }
        Self::within(slot, self.execute(client, portal, statement, plan)).await
    }
}

impl TarnService {
    /// Executes a portal: its parameters bound by position ([`params::bind`]), then the
    /// hooks' answer or the plan's rows, in the result formats the client asked for.
    async fn execute<C>(
        &self,
        client: &mut C,
        portal: &Portal<PgStatement>,
        statement: &Statement,
        plan: &LogicalPlan,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = PgStatement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let values = params::bind(portal, plan)?;
        for hook in &self.hooks {
            if let Some(answer) =
                hook.handle_extended_query(statement, plan, &values, &self.ctx, client).await
            {
                return answer;
            }
        }
        let plan =
            plan.clone().replace_params_with_values(&values).map_err(|e| pg_error(e.into()))?;
        let frame = self.ctx.execute_logical_plan(plan).await.map_err(|e| pg_error(e.into()))?;
        let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
        Ok(Response::Query(
            encode_dataframe(frame, &portal.result_column_format, Some(options)).await?,
        ))
    }
}

/// Parses and plans statements: datafusion-pg-catalog's PostgreSQL rewrites, then Tarn's
/// ([`rewrite`]); for the extended protocol, time travel is rewritten and the table list
/// refreshed first, the hooks plan the statements they answer, and every plan is checked to
/// be a read.
pub(super) struct TarnParser {
    pub ctx: Arc<SessionContext>,
    pub tables: Arc<LiveCatalog>,
    pub hooks: Vec<Arc<dyn QueryHook>>,
    pub sql_parser: PostgresCompatibilityParser,
}

impl TarnParser {
    /// The statements of `sql`, rewritten for DataFusion.
    pub fn parse(&self, sql: &str) -> PgWireResult<Vec<Statement>> {
        let statements = self
            .sql_parser
            .parse(&rewrite::before_parsing(sql))
            .map_err(|e| PgWireError::ApiError(Box::new(e)))?;
        let state = self.ctx.state();
        Ok(statements.into_iter().map(|s| rewrite::rewrite(s, &state)).collect())
    }
}

#[async_trait]
impl QueryParser for TarnParser {
    type Statement = PgStatement;

    async fn parse_sql<C>(
        &self,
        client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<Self::Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let sql = timetravel::rewrite(sql).map_err(|e| pg_error(Error::BadQuery(e)))?;
        self.tables.refresh().await.map_err(pg_error)?;
        let Some(statement) = self.parse(&sql)?.into_iter().next() else {
            return Ok(None);
        };
        let query = statement.to_string();
        let mut planned = None;
        for hook in &self.hooks {
            if let Some(plan) =
                hook.handle_extended_parse_query(&statement, &self.ctx, client).await
            {
                planned = Some(plan?);
                break;
            }
        }
        let plan = match planned {
            Some(plan) => plan,
            None => self
                .ctx
                .state()
                .statement_to_plan(DfStatement::Statement(Box::new(statement.clone())))
                .await
                .map_err(|e| pg_error(e.into()))?,
        };
        check_read_only(&plan)?;
        Ok(Some((query, Some((statement, plan)))))
    }

    fn get_parameter_types(&self, statement: &Self::Statement) -> PgWireResult<Vec<Type>> {
        match statement {
            (_, Some((_, plan))) => {
                Ok(params::parameters(plan)?.into_iter().map(|p| p.wire).collect())
            }
            (_, None) => Ok(Vec::new()),
        }
    }

    fn get_result_schema(
        &self,
        statement: &Self::Statement,
        format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        match statement {
            (_, Some((_, plan))) => arrow_schema_to_pg_fields(
                plan.schema().as_arrow(),
                format.unwrap_or(&Format::UnifiedText),
                None,
            ),
            (_, None) => Ok(Vec::new()),
        }
    }
}
