//! Time travel: reading a table as it was at a Delta version or at a moment.
//!
//! The syntax is Delta Lake's own (Databricks SQL), after the table name:
//!
//! ```sql
//! SELECT count(*) FROM events VERSION AS OF 3;
//! SELECT count(*) FROM events TIMESTAMP AS OF '2026-11-25T10:00:00Z';
//! SELECT * FROM events VERSION AS OF 3 e JOIN events f ON e.id = f.id;
//! ```
//!
//! DataFusion's SQL dialect does not parse these clauses, so [`rewrite`] turns them, before
//! parsing, into a table name DataFusion takes as it is: `"events@v3"` (aliased back to
//! `events` unless the query gives an alias), which [`split_name`] takes apart again when the
//! catalog resolves the table. The timestamp is a literal: RFC 3339 (`2026-11-25T10:00:00Z`,
//! `...+01:00`), `YYYY-MM-DD HH:MM:SS[.ffffff]` (UTC) or a date (`YYYY-MM-DD`, midnight UTC),
//! optionally written `TIMESTAMP '...'`.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer, Word};

/// Which state of a table a query reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsOf {
    /// The table at this Delta version.
    Version(u64),
    /// The table at the last version committed at or before this moment.
    Time(DateTime<Utc>),
}

/// Splits a table name as the catalog sees it into the name and, for time-travel names
/// (`events@v3`, `events@2026-11-25T10:00:00Z`), what it asks for. Table names never contain
/// `@` (and what follows the last `@` never does either).
pub fn split_name(name: &str) -> Result<(&str, Option<AsOf>), String> {
    let Some((table, suffix)) = name.rsplit_once('@') else {
        return Ok((name, None));
    };
    if let Some(digits) = suffix.strip_prefix('v') {
        if let Ok(version) = digits.parse::<u64>() {
            return Ok((table, Some(AsOf::Version(version))));
        }
    }
    match parse_timestamp(suffix) {
        Some(at) => Ok((table, Some(AsOf::Time(at)))),
        None => Err(format!(
            "cannot read '{suffix}' in '{name}' as a version (v3) or a timestamp (2026-11-25T10:00:00Z)"
        )),
    }
}

/// Parses the timestamp literals time travel accepts (see the module documentation).
pub fn parse_timestamp(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Some(at.with_timezone(&Utc));
    }
    for format in
        ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M"]
    {
        if let Ok(at) = NaiveDateTime::parse_from_str(text, format) {
            return Some(at.and_utc());
        }
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|at| at.and_utc())
}

/// Rewrites `<table> VERSION AS OF <n>` and `<table> TIMESTAMP AS OF '<ts>'` into time-travel
/// names (see the module documentation). SQL without `AS OF` is returned as it is; errors
/// (a bad version or timestamp) say where. Only the clauses change: the rest of the text is
/// copied byte for byte.
///
/// The tokenizer and this scan are loops, not recursion, so nesting (`((((...))))`) costs
/// nothing here; the SQL parser that runs next refuses what is nested too deep.
pub fn rewrite(sql: &str) -> Result<String, String> {
    if !sql.to_ascii_uppercase().contains("OF") {
        return Ok(sql.to_string());
    }
    let dialect = GenericDialect {};
    let Ok(tokens) = Tokenizer::new(&dialect, sql).with_unescape(false).tokenize_with_location()
    else {
        // Let the parser report the problem.
        return Ok(sql.to_string());
    };
    let significant: Vec<usize> = tokens
        .iter()
        .enumerate()
        .filter(|(_, t)| !matches!(t.token, Token::Whitespace(_)))
        .map(|(i, _)| i)
        .collect();
    let keyword = |i: usize, k: Keyword| matches!(&tokens[i].token, Token::Word(w) if w.keyword == k && w.quote_style.is_none());
    // (index of the table name's last part, last token index to replace, replacement)
    let starts = byte_offsets(sql, &tokens);
    let mut edits: Vec<(usize, usize, String)> = Vec::new();
    let mut s = 1;
    while s + 3 < significant.len() {
        let [name, kind, as_, of] =
            [significant[s - 1], significant[s], significant[s + 1], significant[s + 2]];
        let travel = (keyword(kind, Keyword::VERSION) || keyword(kind, Keyword::TIMESTAMP))
            && keyword(as_, Keyword::AS)
            && keyword(of, Keyword::OF);
        let Token::Word(table) = &tokens[name].token else {
            s += 1;
            continue;
        };
        if !travel {
            s += 1;
            continue;
        }
        let mut value_at = s + 3;
        let suffix = if keyword(kind, Keyword::VERSION) {
            match &tokens[significant[value_at]].token {
                Token::Number(n, _) => match n.parse::<u64>() {
                    Ok(v) => format!("v{v}"),
                    Err(_) => {
                        return Err(format!("VERSION AS OF {n}: a version is a whole number"))
                    }
                },
                other => {
                    return Err(format!("VERSION AS OF takes a version number, not '{other}'"))
                }
            }
        } else {
            if keyword(significant[value_at], Keyword::TIMESTAMP)
                && value_at + 1 < significant.len()
            {
                value_at += 1;
            }
            match &tokens[significant[value_at]].token {
                Token::SingleQuotedString(text) => match parse_timestamp(text) {
                    Some(at) => at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
                    None => {
                        return Err(format!(
                            "TIMESTAMP AS OF '{text}': not a timestamp; write e.g. '2026-11-25T10:00:00Z' or '2026-11-25 10:00:00' (UTC)"
                        ))
                    }
                },
                other => {
                    return Err(format!(
                        "TIMESTAMP AS OF takes a quoted timestamp such as '2026-11-25T10:00:00Z', not '{other}'"
                    ))
                }
            }
        };
        // Keep the table's name for column references (`events.id`) unless an alias follows.
        let next = significant.get(value_at + 1).map(|&i| &tokens[i].token);
        let has_alias = matches!(next, Some(Token::Word(w)) if w.keyword == Keyword::AS || w.keyword == Keyword::NoKeyword || w.quote_style.is_some());
        let mut replacement = quote(&format!("{}@{suffix}", word_name(table)));
        if !has_alias {
            replacement.push_str(" AS ");
            replacement.push_str(&sql[starts[name]..starts[name + 1]]);
        }
        edits.push((name, significant[value_at], replacement));
        s = value_at + 2;
    }
    if edits.is_empty() {
        return Ok(sql.to_string());
    }
    let mut out = String::with_capacity(sql.len() + 16);
    let mut copied = 0;
    for (name, last, replacement) in edits {
        out.push_str(&sql[copied..starts[name]]);
        out.push_str(&replacement);
        copied = starts[last + 1];
    }
    out.push_str(&sql[copied..]);
    Ok(out)
}

/// The name a word stands for. The tokenizer runs without unescaping (so that the text can be
/// copied back as written), which leaves a quoted identifier's doubled quotes doubled.
fn word_name(word: &Word) -> String {
    match word.quote_style {
        Some(q) => word.value.replace(&format!("{q}{q}"), &q.to_string()),
        None => word.value.clone(),
    }
}

/// The byte offset in `sql` where each token starts, and `sql.len()` after the last one.
/// (Tokens cover the text without gaps; their spans count lines and characters.)
fn byte_offsets(sql: &str, tokens: &[TokenWithSpan]) -> Vec<usize> {
    let mut starts = Vec::with_capacity(tokens.len() + 1);
    let mut chars = sql.char_indices().peekable();
    let (mut line, mut column) = (1u64, 1u64);
    for token in tokens {
        let at = (token.span.start.line, token.span.start.column);
        while (line, column) < at {
            match chars.next() {
                Some((_, '\n')) => (line, column) = (line + 1, 1),
                Some(_) => column += 1,
                None => break,
            }
        }
        starts.push(chars.peek().map_or(sql.len(), |&(i, _)| i));
    }
    starts.push(sql.len());
    starts
}

fn quote(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_timestamps_become_names() {
        assert_eq!(
            rewrite("SELECT count(*) FROM events VERSION AS OF 3").unwrap(),
            "SELECT count(*) FROM \"events@v3\" AS events"
        );
        assert_eq!(
            rewrite("select * from default.events version as of 12 e where e.id = 1").unwrap(),
            "select * from default.\"events@v12\" e where e.id = 1"
        );
        assert_eq!(
            rewrite("SELECT 1 FROM events TIMESTAMP AS OF '2026-11-25 10:00:00' WHERE x = 'a''b'")
                .unwrap(),
            "SELECT 1 FROM \"events@2026-11-25T10:00:00Z\" AS events WHERE x = 'a''b'"
        );
        assert_eq!(
            rewrite("SELECT 1 FROM t TIMESTAMP AS OF TIMESTAMP '2026-11-25T10:00:00+01:00' AS x")
                .unwrap(),
            "SELECT 1 FROM \"t@2026-11-25T09:00:00Z\" AS x"
        );
        let plain = "SELECT 'VERSION AS OF 3' FROM t -- as of\n";
        assert_eq!(rewrite(plain).unwrap(), plain);
    }

    #[test]
    fn bad_values_are_explained() {
        assert!(rewrite("SELECT 1 FROM t VERSION AS OF 'x'").unwrap_err().contains("version"));
        assert!(rewrite("SELECT 1 FROM t TIMESTAMP AS OF 'yesterday'")
            .unwrap_err()
            .contains("not a timestamp"));
    }

    #[test]
    fn names_split() {
        assert_eq!(split_name("events").unwrap(), ("events", None));
        assert_eq!(split_name("events@v3").unwrap(), ("events", Some(AsOf::Version(3))));
        let (_, at) = split_name("events@2026-11-25T10:00:00Z").unwrap();
        assert_eq!(at, Some(AsOf::Time(parse_timestamp("2026-11-25 10:00:00").unwrap())));
        assert!(split_name("events@soon").is_err());
        // What follows the last '@' is what is asked for.
        assert_eq!(split_name("a@b@v2").unwrap(), ("a@b", Some(AsOf::Version(2))));
    }

    #[test]
    fn quoted_names_keep_their_quotes_once() {
        // The tokenizer does not unescape: a doubled quote inside a quoted name was doubled
        // again in the rewritten name, which then named another table.
        let sql = r#"SELECT 1 FROM "we""ird" VERSION AS OF 1"#;
        let out = rewrite(sql).unwrap();
        assert_eq!(out, r#"SELECT 1 FROM "we""ird@v1" AS "we""ird""#);
        assert_eq!(table_of(&out).0, r#"we"ird@v1"#);
        let out = rewrite("SELECT 1 FROM `a``b` VERSION AS OF 2 x").unwrap();
        assert_eq!(table_of(&out), ("a`b@v2".to_string(), Some("x".to_string())));
    }

    #[test]
    fn text_around_the_clause_is_copied_as_written() {
        let sql = "SELECT  E'\\n', $$ as of $$ /* é */ FROM\n\tt VERSION AS OF 3 -- x\n";
        assert_eq!(
            rewrite(sql).unwrap(),
            "SELECT  E'\\n', $$ as of $$ /* é */ FROM\n\t\"t@v3\" AS t -- x\n"
        );
    }

    #[test]
    fn deep_nesting_does_not_overflow_the_rewrite() {
        // A tokio worker's stack; the SQL parser that runs next refuses the nesting.
        let sql = format!(
            "SELECT {}1{} FROM t VERSION AS OF 1",
            "(".repeat(200_000),
            ")".repeat(200_000)
        );
        let out = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || rewrite(&sql).map(|s| s.len()))
            .unwrap()
            .join()
            .expect("no stack overflow");
        assert_eq!(out.unwrap(), 400_000 + "SELECT 1 FROM \"t@v1\" AS t".len());
    }

    /// The table a rewritten query reads (its last name part, as the parser sees it) and its
    /// alias.
    fn table_of(sql: &str) -> (String, Option<String>) {
        use datafusion::sql::sqlparser::ast::{SetExpr, Statement, TableFactor};
        use datafusion::sql::sqlparser::parser::Parser;
        let statements = Parser::parse_sql(&GenericDialect {}, sql).unwrap();
        let Statement::Query(query) = &statements[0] else { panic!("{sql}") };
        let SetExpr::Select(select) = query.body.as_ref() else { panic!("{sql}") };
        let TableFactor::Table { name, alias, .. } = &select.from[0].relation else {
            panic!("{sql}")
        };
        let last = name.0.last().and_then(|p| p.as_ident()).expect("a name").value.clone();
        (last, alias.as_ref().map(|a| a.name.value.clone()))
    }

    /// An identifier as written in SQL, and the name it stands for.
    fn identifier() -> impl proptest::strategy::Strategy<Value = (String, String)> {
        use proptest::prelude::*;
        prop_oneof![
            "t_[a-zA-Z0-9_]{0,12}".prop_map(|n| (n.clone(), n)),
            "[^\\x00]{1,16}".prop_map(|n| (format!("\"{}\"", n.replace('"', "\"\"")), n)),
            "[^\\x00]{1,16}".prop_map(|n| (format!("`{}`", n.replace('`', "``")), n)),
        ]
    }

    /// A moment, and how it may be written after `TIMESTAMP AS OF`.
    fn moment() -> impl proptest::strategy::Strategy<Value = (DateTime<Utc>, String)> {
        use proptest::prelude::*;
        (0i64..4_102_444_800, 0u32..1_000_000, 0usize..4).prop_map(|(secs, micros, form)| {
            let at = DateTime::from_timestamp(secs, micros * 1000).unwrap();
            match form {
                0 => (at, format!("'{}'", at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))),
                1 => (at, at.format("'%Y-%m-%d %H:%M:%S%.6f'").to_string()),
                2 => {
                    let at = DateTime::from_timestamp(secs - secs % 86_400, 0).unwrap();
                    (at, at.format("'%Y-%m-%d'").to_string())
                }
                _ => (at, format!("TIMESTAMP '{}'", at.to_rfc3339())),
            }
        })
    }

    /// SQL-ish tokens: keywords of the clause, literals that mention it, comments, oddities.
    const TOKENS: &[&str] = &[
        "SELECT",
        "*",
        "FROM",
        "t",
        "e",
        "AS",
        "as",
        "OF",
        "of",
        "VERSION",
        "TIMESTAMP",
        "3",
        "1.5e3",
        "'x'",
        "'AS OF'",
        "'it''s'",
        "\"q\"\"x\"",
        "`b`",
        "(",
        ")",
        ",",
        ".",
        ";",
        "--AS OF\n",
        "/* VERSION AS OF 1 */",
        "$$AS OF$$",
        "\n",
        "\t",
        "é",
        "@",
        "JOIN",
    ];

    /// Whether `sql`, as the SQL tokenizer reads it (strings, quoted names and comments
    /// aside), still holds a clause `name VERSION|TIMESTAMP AS OF value` (a name, then the
    /// clause, then something for its value: what [`rewrite`] takes).
    fn clause_left(sql: &str) -> bool {
        let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize() else { return false };
        let significant: Vec<&Token> =
            tokens.iter().filter(|t| !matches!(t, Token::Whitespace(_))).collect();
        let keyword = |t: &Token, k: Keyword| matches!(t, Token::Word(w) if w.quote_style.is_none() && w.keyword == k);
        significant.windows(5).any(|w| {
            matches!(w[0], Token::Word(_))
                && (keyword(w[1], Keyword::VERSION) || keyword(w[1], Keyword::TIMESTAMP))
                && keyword(w[2], Keyword::AS)
                && keyword(w[3], Keyword::OF)
        })
    }

    /// What every rewrite must do: text without a clause comes back unchanged; a rewrite that
    /// succeeds leaves no clause behind (each became a quoted name); a refusal says why.
    fn check_rewrite(text: &str) -> Result<(), proptest::test_runner::TestCaseError> {
        match rewrite(text) {
            Ok(out) if !clause_left(text) => proptest::prop_assert_eq!(out, text),
            Ok(out) => proptest::prop_assert!(!clause_left(&out), "{} -> {}", text, out),
            Err(e) => {
                proptest::prop_assert!(clause_left(text), "refused without a clause: {}", text);
                proptest::prop_assert!(e.contains("AS OF"), "{}", e);
            }
        }
        Ok(())
    }

    proptest::proptest! {
        #[test]
        fn prop_rewrite_edits_only_clauses_and_leaves_none(text in "\\PC{0,200}") {
            check_rewrite(&text)?;
        }

        #[test]
        fn prop_rewrite_of_sqlish_text(words in proptest::collection::vec(proptest::sample::select(TOKENS), 0..40)) {
            let text = words.join(" ");
            check_rewrite(&text)?;
        }

        #[test]
        fn prop_rewritten_names_split_back(
            namespace in proptest::option::of(identifier()),
            (written, table) in identifier(),
            version in proptest::option::of(proptest::num::u64::ANY),
            (at, literal) in moment(),
            alias in proptest::option::of("a_[a-z0-9]{0,6}"),
            tail in proptest::sample::select(vec!["", " WHERE x = 'AS OF'", " -- as of", "\n;"]),
        ) {
            let prefix = match &namespace {
                Some((ns, _)) => format!("SELECT 'VERSION AS OF 1', x FROM {ns}.{written}"),
                None => format!("SELECT 'VERSION AS OF 1', x FROM {written}"),
            };
            let clause = match version {
                Some(v) => format!(" VERSION AS OF {v}"),
                None => format!(" TIMESTAMP AS OF {literal}"),
            };
            let suffix = format!("{}{tail}", alias.as_ref().map_or(String::new(), |a| format!(" {a}")));
            let sql = format!("{prefix}{clause}{suffix}");
            let out = rewrite(&sql).unwrap();
            proptest::prop_assert!(out.starts_with(&prefix[..prefix.len() - written.len()]), "{out}");
            proptest::prop_assert!(out.ends_with(&suffix), "{out}");
            let (name, parsed_alias) = table_of(&out);
            let (split, as_of) = split_name(&name).unwrap();
            proptest::prop_assert_eq!(split, table.as_str(), "{}", out);
            let expected = match version {
                Some(v) => AsOf::Version(v),
                None => AsOf::Time(at),
            };
            proptest::prop_assert_eq!(as_of, Some(expected));
            // Without an alias the table keeps its own name for column references.
            let expected_alias = alias.clone().unwrap_or_else(|| table_of(&format!("SELECT 1 FROM {written}")).0);
            proptest::prop_assert_eq!(parsed_alias, Some(expected_alias));
        }
    }
}
