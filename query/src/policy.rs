//! What SQL Tarn runs: reads only. One policy for every frontend (`POST /v1/sql`, async
//! queries, the Postgres endpoint).
//!
//! Two lines of defence: [`verdict`] judges a statement before it is planned (so refusals
//! name the statement: "CREATE TABLE statements are not allowed"), and [`check_plan`] checks
//! every plan with DataFusion's `SQLOptions` (no DDL, no DML, no statements) before it runs.
//! Reading files or URLs as tables is off in the engine's sessions, and `CREATE EXTERNAL
//! TABLE` is DDL.

use datafusion::execution::context::SQLOptions;
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{Expr, Query, Set, SetExpr, Statement};

use crate::{Error, Result};

/// What the policy decides about a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Goes on to the other hooks and DataFusion.
    Allow,
    /// Answered here with this tag, nothing done.
    Answer(&'static str),
    /// Refused: not a read.
    Refuse(String),
    /// Refused: a feature Tarn does not offer over the wire.
    Unsupported(String),
}

/// The policy's verdict on one statement (sqlparser's AST, as the Postgres endpoint parses
/// it): reads go on, a few session statements are answered without doing anything, writes
/// are refused.
pub fn verdict(statement: &Statement) -> Verdict {
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
        // Nothing is written, so a savepoint has nothing to keep: drivers that wrap their
        // catalog queries in one (SQLAlchemy over psycopg 3) go on.
        Statement::Savepoint { .. } => Verdict::Answer("SAVEPOINT"),
        Statement::ReleaseSavepoint { .. } => Verdict::Answer("RELEASE"),
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

/// Refuses statements that are not reads, as parsed by DataFusion's parser (`/v1/sql`): the
/// same [`verdict`] for SQL statements; DataFusion's own statements (`CREATE EXTERNAL TABLE`,
/// `COPY`, `RESET`) write or change settings. Statements the verdict would answer without
/// doing anything (`BEGIN`, `SET application_name`) go on, and [`check_plan`] refuses them as
/// statements.
pub fn check_statement(statement: &DfStatement) -> Result<()> {
    match statement {
        DfStatement::Statement(statement) => match verdict(statement) {
            Verdict::Refuse(why) | Verdict::Unsupported(why) => Err(Error::ReadOnly(why)),
            Verdict::Allow | Verdict::Answer(_) if changes_a_session(statement) => {
                Err(Error::ReadOnly(format!(
                    "{} statements are not allowed: a request has no session to change",
                    statement_kind(statement)
                )))
            }
            Verdict::Allow | Verdict::Answer(_) => Ok(()),
        },
        DfStatement::Explain(explain) => check_statement(&explain.statement),
        DfStatement::CreateExternalTable(_) => {
            Err(Error::ReadOnly("CREATE EXTERNAL TABLE statements are not allowed".into()))
        }
        DfStatement::CopyTo(_) => Err(Error::ReadOnly("COPY statements are not allowed".into())),
        DfStatement::Reset(_) => {
            Err(Error::ReadOnly("the server's settings cannot be changed (RESET)".into()))
        }
    }
}

/// Statements that change a session (settings, transactions, cursors): the Postgres endpoint
/// answers them per connection; a request over HTTP has no session.
fn changes_a_session(statement: &Statement) -> bool {
    matches!(
        statement,
        Statement::Set(_)
            | Statement::StartTransaction { .. }
            | Statement::Commit { .. }
            | Statement::Rollback { .. }
            | Statement::Declare { .. }
            | Statement::Fetch { .. }
            | Statement::Close { .. }
            | Statement::Discard { .. }
            | Statement::Deallocate { .. }
            | Statement::Savepoint { .. }
            | Statement::ReleaseSavepoint { .. }
    )
}

/// Refuses plans that are not reads: DDL, DML and statements (`SET`, transactions).
pub fn check_plan(plan: &LogicalPlan) -> Result<()> {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
        .verify_plan(plan)
        .map_err(|e| Error::ReadOnly(e.strip_backtrace()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::parser::DFParser;

    fn judge(sql: &str) -> Result<()> {
        let mut statements = DFParser::parse_sql(sql).unwrap();
        check_statement(&statements.pop_front().unwrap())
    }

    #[test]
    fn reads_pass_writes_are_refused_by_name() {
        for sql in
            ["SELECT 1", "WITH t AS (SELECT 1) SELECT * FROM t", "EXPLAIN SELECT 1", "SHOW TABLES"]
        {
            assert!(judge(sql).is_ok(), "{sql}");
        }
        for (sql, words) in [
            ("CREATE TABLE t (a INT)", "CREATE TABLE statements"),
            ("INSERT INTO t VALUES (1)", "INSERT statements"),
            ("EXPLAIN DELETE FROM t", "DELETE statements"),
            (
                "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc/passwd'",
                "CREATE EXTERNAL TABLE",
            ),
            ("COPY (SELECT 1) TO '/tmp/x.csv'", "COPY statements"),
            ("SET datafusion.execution.batch_size = 1", "cannot be changed"),
            ("SELECT * INTO t2 FROM t", "write"),
            ("SET TIME ZONE '+01:00'", "SET statements are not allowed"),
            ("BEGIN", "no session"),
            ("SAVEPOINT sp", "no session"),
        ] {
            match judge(sql) {
                Err(Error::ReadOnly(why)) => assert!(why.contains(words), "{sql}: {why}"),
                other => panic!("{sql}: {other:?}"),
            }
        }
    }

    #[test]
    fn savepoints_are_answered_over_the_postgres_endpoint() {
        use datafusion::sql::sqlparser::{dialect::PostgreSqlDialect, parser::Parser};
        for (sql, tag) in [("SAVEPOINT sp", "SAVEPOINT"), ("RELEASE SAVEPOINT sp", "RELEASE")] {
            let statement = Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap().remove(0);
            assert!(matches!(verdict(&statement), Verdict::Answer(t) if t == tag), "{sql}");
        }
    }
}
