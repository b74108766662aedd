//! PostgreSQL spellings DataFusion does not take, rewritten after datafusion-pg-catalog's
//! own rewrites. Grafana's table and column pickers use each of them:
//!
//! - `user` (PostgreSQL's `current_user`) is `session_user()`.
//! - A scalar function in `FROM` (`string_to_array(...) s`) is a table of one row whose one
//!   column is named after the alias, as in PostgreSQL: `(SELECT string_to_array(...) AS s) s`.
//! - `generate_series(...) AS i` (and `range`) name their one column after the alias, as in
//!   PostgreSQL, where DataFusion calls it `value`: `generate_series(...) AS i(i)`.
//!
//! And one before parsing ([`before_parsing`]): datafusion-pg-catalog replaces the
//! search-path subquery of Grafana's pickers with `''` (written while `current_setting` was
//! missing), so Grafana found no columns and qualified every table; Tarn has
//! `current_setting`, and calls it `pg_catalog.current_setting` so that the replacement,
//! which matches the SQL's words, leaves the subquery alone. Only in a `WHERE` clause (up to
//! an `ORDER BY`): DataFusion runs `IN (subquery)` in filters only, so in a select list or an
//! `ORDER BY` the replacement stays (Grafana's table list then names every table with its
//! schema, and orders by name alone).

use std::borrow::Cow;
use std::ops::ControlFlow;

use datafusion::execution::session_state::SessionState;
use datafusion::sql::sqlparser::ast::{
    Expr, FunctionArguments, Ident, ObjectName, Statement, TableAliasColumnDef, TableFactor,
    VisitMut, VisitorMut,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::{Location, Token, Tokenizer};

/// `sql` with every unqualified call of `current_setting(...)` qualified with `pg_catalog.`
/// (see the module's doc); SQL that does not tokenize is left as it is, for the parser to
/// report.
pub(super) fn before_parsing(sql: &str) -> Cow<'_, str> {
    if !sql.to_ascii_lowercase().contains("current_setting") {
        return Cow::Borrowed(sql);
    }
    let Ok(tokens) = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize_with_location() else {
        return Cow::Borrowed(sql);
    };
    let words: Vec<_> =
        tokens.iter().filter(|t| !matches!(t.token, Token::Whitespace(_))).collect();
    let mut calls = Vec::new();
    let (mut filtering, mut ordering) = (false, false);
    for (i, word) in words.iter().enumerate() {
        if matches!(word.token, Token::SemiColon) {
            (filtering, ordering) = (false, false);
        }
        let Token::Word(w) = &word.token else { continue };
        if w.value.eq_ignore_ascii_case("where") {
            filtering = true;
        }
        if w.value.eq_ignore_ascii_case("order")
            && matches!(words.get(i + 1).map(|t| &t.token), Some(Token::Word(by)) if by.value.eq_ignore_ascii_case("by"))
        {
            // DataFusion cannot sort by a subquery: there the replacement stays.
            ordering = true;
        }
        if ordering || !filtering {
            continue;
        }
        let called = matches!(words.get(i + 1).map(|t| &t.token), Some(Token::LParen));
        let qualified = i > 0 && matches!(words[i - 1].token, Token::Period);
        if w.quote_style.is_none()
            && w.value.eq_ignore_ascii_case("current_setting")
            && called
            && !qualified
        {
            match offset(sql, word.span.start) {
                Some(at) => calls.push(at),
                None => return Cow::Borrowed(sql),
            }
        }
    }
    if calls.is_empty() {
        return Cow::Borrowed(sql);
    }
    let mut qualified = sql.to_string();
    for at in calls.into_iter().rev() {
        qualified.insert_str(at, "pg_catalog.");
    }
    Cow::Owned(qualified)
}

/// The byte offset of a tokenizer location (line and column from 1, in characters).
fn offset(sql: &str, location: Location) -> Option<usize> {
    let line = usize::try_from(location.line).ok()?.checked_sub(1)?;
    let column = usize::try_from(location.column).ok()?.checked_sub(1)?;
    let start: usize = sql.split_inclusive('\n').take(line).map(str::len).sum();
    sql.get(start..)?.char_indices().nth(column).map(|(at, _)| start + at)
}

/// `statement` with the rewrites above, for `state`'s functions.
pub(super) fn rewrite(mut statement: Statement, state: &SessionState) -> Statement {
    let _ = statement.visit(&mut Rewrites { state });
    statement
}

struct Rewrites<'a> {
    state: &'a SessionState,
}

/// The last part of a function's name, lower-cased (`pg_catalog.f` is `f`).
fn function_name(name: &ObjectName) -> Option<String> {
    name.0.last().and_then(|part| part.as_ident()).map(|ident| ident.value.to_ascii_lowercase())
}

/// Table functions whose one column DataFusion calls `value`.
const ONE_COLUMN_TABLE_FUNCTIONS: &[&str] = &["generate_series", "range"];

impl VisitorMut for Rewrites<'_> {
    type Break = ();

    fn pre_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        if let Expr::Function(function) = expr {
            if matches!(function.args, FunctionArguments::None)
                && function_name(&function.name).as_deref() == Some("user")
            {
                function.name = ObjectName::from(vec![Ident::new("session_user")]);
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
        let TableFactor::Table { name, alias, args: Some(args), .. } = factor else {
            return ControlFlow::Continue(());
        };
        let Some(function) = function_name(name) else {
            return ControlFlow::Continue(());
        };
        if self.state.table_functions().contains_key(&function) {
            if let Some(alias) = alias.as_mut() {
                if alias.columns.is_empty() && ONE_COLUMN_TABLE_FUNCTIONS.contains(&&*function) {
                    alias.columns = vec![TableAliasColumnDef::from_name(alias.name.value.clone())];
                }
            }
            return ControlFlow::Continue(());
        }
        if !self.state.scalar_functions().contains_key(&function) {
            return ControlFlow::Continue(());
        }
        let column = match alias.as_ref() {
            Some(alias) if alias.columns.len() == 1 => alias.columns[0].name.clone(),
            Some(alias) if alias.columns.is_empty() => alias.name.clone(),
            Some(_) => return ControlFlow::Continue(()),
            None => Ident::new(&function),
        };
        let arguments: Vec<String> = args.args.iter().map(ToString::to_string).collect();
        let select = format!("SELECT {name}({}) AS {column}", arguments.join(", "));
        let Ok(subquery) = Parser::new(&PostgreSqlDialect {})
            .try_with_sql(&select)
            .and_then(|mut parser| parser.parse_query())
        else {
            return ControlFlow::Continue(());
        };
        let mut alias = alias.clone().unwrap_or(datafusion::sql::sqlparser::ast::TableAlias {
            explicit: true,
            name: column.clone(),
            columns: Vec::new(),
            at: None,
        });
        alias.columns.clear();
        *factor =
            TableFactor::Derived { lateral: false, subquery, alias: Some(alias), sample: None };
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    use datafusion::prelude::SessionContext;
    use datafusion_postgres::datafusion_pg_catalog::sql::PostgresCompatibilityParser;

    fn rewritten(sql: &str) -> String {
        let ctx = SessionContext::new();
        let mut statements = PostgresCompatibilityParser::new().parse(sql).unwrap();
        super::rewrite(statements.remove(0), &ctx.state()).to_string()
    }

    #[test]
    fn current_setting_is_qualified_before_parsing() {
        use super::before_parsing;
        assert_eq!(
            before_parsing("SELECT 1 WHERE\n  é, current_setting ('a'),\n  pg_catalog.current_setting('b'), 'current_setting(x)'"),
            "SELECT 1 WHERE\n  é, pg_catalog.current_setting ('a'),\n  pg_catalog.current_setting('b'), 'current_setting(x)'"
        );
        assert_eq!(before_parsing("SELECT 1"), "SELECT 1");
        assert_eq!(
            before_parsing("SELECT current_setting('a') WHERE current_setting('b') ORDER BY current_setting('c'); SELECT 1 WHERE current_setting('d')"),
            "SELECT current_setting('a') WHERE pg_catalog.current_setting('b') ORDER BY current_setting('c'); SELECT 1 WHERE pg_catalog.current_setting('d')"
        );
    }

    #[test]
    fn grafana_spellings_are_rewritten() {
        assert_eq!(rewritten("SELECT user"), "SELECT session_user");
        assert_eq!(
            rewritten("SELECT s[i] FROM generate_series(1, 2) AS i, string_to_array('a,b', ',') s"),
            "SELECT s[i] FROM generate_series(1, 2) AS i (i), (SELECT string_to_array('a,b', ',') AS s) s"
        );
        // Tables, table functions with column names and queries without either are left alone.
        for same in [
            "SELECT \"user\" FROM t",
            "SELECT * FROM t AS user_table",
            "SELECT x FROM generate_series(1, 2) AS i (x)",
            "SELECT * FROM generate_series(1, 2)",
        ] {
            assert_eq!(rewritten(same), same);
        }
    }

    #[tokio::test]
    async fn rewritten_queries_run() {
        use datafusion_postgres::datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
        let ctx = SessionContext::new();
        // session_user() is pg_catalog's.
        datafusion_postgres::datafusion_pg_catalog::pg_catalog::setup_pg_catalog(
            &ctx,
            "datafusion",
            EmptyContextProvider,
        )
        .unwrap();
        let sql = "SELECT CASE WHEN trim(s[i]) = '\"$user\"' THEN user ELSE trim(s[i]) END AS part \
                   FROM generate_series(1, 2) AS i, string_to_array('\"$user\", lake', ',') s ORDER BY i";
        let mut statements = PostgresCompatibilityParser::new().parse(sql).unwrap();
        let statement = super::rewrite(statements.remove(0), &ctx.state());
        let batches = ctx.sql(&statement.to_string()).await.unwrap().collect().await.unwrap();
        let text =
            datafusion::arrow::util::pretty::pretty_format_batches(&batches).unwrap().to_string();
        assert!(text.contains("| lake "), "{text}");
        assert_eq!(text.lines().count(), 6, "{text}");
    }
}
