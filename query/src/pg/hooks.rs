//! The read-only policy ([`crate::policy`]) as a datafusion-postgres hook, which runs before
//! the others.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::common::ParamValues;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion_postgres::hooks::HookClient;
use datafusion_postgres::pgwire;
use datafusion_postgres::QueryHook;
use pgwire::api::results::{Response, Tag};
use pgwire::api::ClientInfo;
use pgwire::error::PgWireResult;

use super::errors::{pg_error, user_error};
use crate::policy::{verdict, Verdict};
use crate::Error;

/// Refuses every statement that is not a read, a transaction or cursor statement, or a
/// session variable; answers the ones DataFusion has no use for. Runs before the other hooks.
#[derive(Debug)]
pub(super) struct ReadOnlyHook;

/// What a hook answers for a verdict: nothing for statements that go on, `answer(tag)` for
/// those answered here, the error for refused ones.
fn hook_answer<T>(
    verdict: Verdict,
    answer: impl FnOnce(&'static str) -> T,
) -> Option<PgWireResult<T>> {
    match verdict {
        Verdict::Allow => None,
        Verdict::Answer(tag) => Some(Ok(answer(tag))),
        Verdict::Refuse(why) => Some(Err(pg_error(Error::ReadOnly(why)))),
        Verdict::Unsupported(why) => Some(Err(user_error("ERROR", "0A000", why))),
    }
}

#[async_trait]
impl QueryHook for ReadOnlyHook {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        _ctx: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        hook_answer(verdict(statement), |tag| Response::Execution(Tag::new(tag)))
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        _ctx: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        hook_answer(verdict(statement), |_| {
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
pub(super) fn check_read_only(plan: &LogicalPlan) -> PgWireResult<()> {
    crate::policy::check_plan(plan).map_err(pg_error)
}

/// Whether a statement runs a query (and so takes an execution slot): everything but the
/// statements the hooks answer without reading tables.
pub(super) fn runs_query(statement: &Statement) -> bool {
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
            | Statement::Savepoint { .. }
            | Statement::ReleaseSavepoint { .. }
    )
}

/// Answers `SHOW server_version` as the startup parameter says (datafusion-postgres answers
/// `datafusion 55.2.0 on …`, which clients cannot read a version from).
#[derive(Debug)]
pub(super) struct ServerVersionHook;

impl ServerVersionHook {
    fn asks(statement: &Statement) -> bool {
        matches!(statement, Statement::ShowVariable { variable }
            if variable.len() == 1 && variable[0].value.eq_ignore_ascii_case("server_version"))
    }

    fn answer() -> PgWireResult<Response> {
        use pgwire::api::results::{DataRowEncoder, FieldFormat, FieldInfo, QueryResponse};
        use pgwire::api::Type;
        let fields = Arc::new(vec![FieldInfo::new(
            "server_version".into(),
            None,
            None,
            Type::VARCHAR,
            FieldFormat::Text,
        )]);
        let mut encoder = DataRowEncoder::new(fields.clone());
        encoder.encode_field(&Some(super::server_version()))?;
        let row = encoder.take_row();
        let rows = futures::stream::once(async move { Ok(row) });
        Ok(Response::Query(QueryResponse::new(fields, Box::pin(rows))))
    }
}

#[async_trait]
impl QueryHook for ServerVersionHook {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        _ctx: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        Self::asks(statement).then(Self::answer)
    }

    async fn handle_extended_parse_query(
        &self,
        _statement: &Statement,
        _ctx: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        // The SET/SHOW hook plans SHOW statements; the answer comes at execution, below.
        None
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        _plan: &LogicalPlan,
        _params: &ParamValues,
        _ctx: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        Self::asks(statement).then(Self::answer)
    }
}
