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
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

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
/// `@`.
pub fn split_name(name: &str) -> Result<(&str, Option<AsOf>), String> {
    let Some((table, suffix)) = name.split_once('@') else {
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
/// (a bad version or timestamp) say where.
pub fn rewrite(sql: &str) -> Result<String, String> {
    if !sql.to_ascii_uppercase().contains("OF") {
        return Ok(sql.to_string());
    }
    let dialect = GenericDialect {};
    let Ok(tokens) = Tokenizer::new(&dialect, sql).with_unescape(false).tokenize() else {
        // Let the parser report the problem.
        return Ok(sql.to_string());
    };
    let significant: Vec<usize> = tokens
        .iter()
        .enumerate()
        .filter(|(_, t)| !matches!(t, Token::Whitespace(_)))
        .map(|(i, _)| i)
        .collect();
    let keyword = |i: usize, k: Keyword| matches!(&tokens[i], Token::Word(w) if w.keyword == k && w.quote_style.is_none());
    // (index of the table name's last part, first and last token index to drop, replacement)
    let mut edits: Vec<(usize, usize, usize, String)> = Vec::new();
    let mut s = 1;
    while s + 3 < significant.len() {
        let [name, kind, as_, of] =
            [significant[s - 1], significant[s], significant[s + 1], significant[s + 2]];
        let travel = (keyword(kind, Keyword::VERSION) || keyword(kind, Keyword::TIMESTAMP))
            && keyword(as_, Keyword::AS)
            && keyword(of, Keyword::OF);
        let Token::Word(table) = &tokens[name] else {
            s += 1;
            continue;
        };
        if !travel {
            s += 1;
            continue;
        }
        let mut value_at = s + 3;
        let suffix = if keyword(kind, Keyword::VERSION) {
            match &tokens[significant[value_at]] {
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
            match &tokens[significant[value_at]] {
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
        let next = significant.get(value_at + 1).map(|&i| &tokens[i]);
        let has_alias = matches!(next, Some(Token::Word(w)) if w.keyword == Keyword::AS || w.keyword == Keyword::NoKeyword || w.quote_style.is_some());
        let mut replacement = quote(&format!("{}@{suffix}", table.value));
        if !has_alias {
            replacement.push_str(" AS ");
            replacement.push_str(&tokens[name].to_string());
        }
        edits.push((name, kind, significant[value_at], replacement));
        s = value_at + 2;
    }
    if edits.is_empty() {
        return Ok(sql.to_string());
    }
    let mut out = String::with_capacity(sql.len() + 16);
    let mut i = 0;
    for (name, _kind, last, replacement) in edits {
        for token in &tokens[i..name] {
            out.push_str(&token.to_string());
        }
        out.push_str(&replacement);
        i = last + 1;
    }
    for token in &tokens[i..] {
        out.push_str(&token.to_string());
    }
    Ok(out)
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
    }
}
