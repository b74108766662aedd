//! Table names.

use std::fmt;

use crate::{Error, Result};

/// The namespace of tables named without one.
pub const DEFAULT_NAMESPACE: &str = "default";

/// The namespace of the tables Tarn keeps about itself (`system.job_runs`); only Tarn creates
/// tables in it.
pub const SYSTEM_NAMESPACE: &str = "system";

/// A table's qualified name: `namespace.table`.
///
/// Names are case-insensitive like unquoted SQL identifiers and stored in lower case; each part
/// starts with a letter, continues with ASCII letters, digits or `_`, and is at most 128
/// characters long, so it is a valid SQL identifier and a valid path segment everywhere.
///
/// Names beginning with `_` are the lake's own: `_delta_log` (a Delta table's log), `_tarn`
/// (the catalog, query results, the drop zone) and whatever Tarn adds beside them. Tables Tarn
/// makes for a table (`<table>_rejected`, `<table>_raw`) take a suffix, never a prefix.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableName {
    namespace: String,
    name: String,
}

impl TableName {
    /// Parses `table` (in the default namespace) or `namespace.table`.
    pub fn parse(qualified: &str) -> Result<Self> {
        let lower = qualified.trim().to_ascii_lowercase();
        let (namespace, name) = match lower.split_once('.') {
            Some((ns, name)) => (ns.to_string(), name.to_string()),
            None => (DEFAULT_NAMESPACE.to_string(), lower.clone()),
        };
        let invalid = |reason: String| Error::InvalidName { name: qualified.to_string(), reason };
        for (what, part) in [("namespace", &namespace), ("table name", &name)] {
            validate_part(part).map_err(|reason| invalid(format!("the {what} {reason}")))?;
        }
        Ok(TableName { namespace, name })
    }

    /// Builds a name from its parts, validating both.
    pub fn new(namespace: &str, name: &str) -> Result<Self> {
        Self::parse(&format!("{namespace}.{name}"))
    }

    /// The name of a table that exists already: read back from what Tarn stored (a catalog
    /// document, a write-ahead log record) or looked up by a query. The rules of
    /// [`TableName::parse`] but for the leading `_`, which Tarn 0.1 allowed, so that such tables
    /// stay readable; a lookup still finds only tables the catalog defines. Never for the name
    /// of a table being created or written to.
    pub fn parse_stored(qualified: &str) -> Result<Self> {
        let escaped = |part: &str| match part.strip_prefix('_') {
            Some(rest) => format!("x{rest}"),
            None => part.to_string(),
        };
        let lower = qualified.trim().to_ascii_lowercase();
        let (namespace, name) = match lower.split_once('.') {
            Some((ns, name)) => (ns.to_string(), name.to_string()),
            None => (DEFAULT_NAMESPACE.to_string(), lower.clone()),
        };
        // The same checks, with a leading '_' read as a letter.
        Self::new(&escaped(&namespace), &escaped(&name))?;
        Ok(TableName { namespace, name })
    }

    /// [`TableName::parse_stored`] from the two parts.
    pub fn stored(namespace: &str, name: &str) -> Result<Self> {
        Self::parse_stored(&format!("{namespace}.{name}"))
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The table name without namespace.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where the table's Delta data lives, relative to the lake root: `namespace/table`.
    pub fn path(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// Why a name part breaks the rules, said after "the namespace" / "the table name".
fn validate_part(part: &str) -> std::result::Result<(), String> {
    let mut chars = part.chars();
    match chars.next() {
        None => return Err("is empty".into()),
        Some('_') => {
            return Err("begins with '_': names beginning with '_' are reserved for the lake's \
                        own files (_delta_log, _tarn)"
                .into())
        }
        Some(c) if !c.is_ascii_alphabetic() => {
            return Err(format!("must start with a letter, not '{c}'"))
        }
        _ => {}
    }
    if let Some(c) = chars.find(|c| !(c.is_ascii_alphanumeric() || *c == '_')) {
        return Err(format!("may only contain letters, digits and '_', not '{c}'"));
    }
    if part.len() > 128 {
        return Err("is longer than 128 characters".into());
    }
    Ok(())
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.namespace, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_names_of_tarn_0_1_read_back() {
        assert!(TableName::parse("_old").is_err());
        let old = TableName::parse_stored("web._old").unwrap();
        assert_eq!(old.to_string(), "web._old");
        assert!(TableName::parse_stored("web.a-b").is_err());
        assert!(TableName::parse_stored("web.").is_err());
    }

    #[test]
    fn default_namespace_and_case() {
        let n = TableName::parse("Events").unwrap();
        assert_eq!((n.namespace(), n.name()), ("default", "events"));
        assert_eq!(n.to_string(), "default.events");
        assert_eq!(n.path(), "default/events");
        assert_eq!(TableName::parse("default.events").unwrap(), n);
        assert_eq!(TableName::parse("web.clicks").unwrap().path(), "web/clicks");
    }

    #[test]
    fn bad_names_say_why() {
        let e = TableName::parse("1abc").unwrap_err().to_string();
        assert!(e.contains("must start with a letter, not '1'"), "{e}");
        let e = TableName::parse("a-b").unwrap_err().to_string();
        assert!(e.contains("not '-'"), "{e}");
        let e = TableName::parse("a.b.c").unwrap_err().to_string();
        assert!(e.contains("not '.'"), "{e}");
        assert!(TableName::parse("").is_err());
        assert!(TableName::parse("../etc").is_err());
        assert!(TableName::parse(&"x".repeat(129)).is_err());
    }

    #[test]
    fn names_beginning_with_underscore_are_the_lakes() {
        for name in ["_delta_log", "_tarn", "default._delta_log", "_tarn.catalog", "web._x"] {
            let e = TableName::parse(name).unwrap_err().to_string();
            assert!(e.contains("reserved for the lake's own files (_delta_log, _tarn)"), "{e}");
        }
        let e = TableName::parse("_tarn.events").unwrap_err().to_string();
        assert!(e.contains("the namespace begins with '_'"), "{e}");
        // Companion tables take a suffix, and '_' inside a name is fine.
        assert_eq!(TableName::parse("leads_rejected").unwrap().name(), "leads_rejected");
        assert_eq!(TableName::parse("web_2026.raw__x").unwrap().path(), "web_2026/raw__x");
    }

    /// What every accepted name part is: a lower-case SQL identifier and a plain path segment.
    fn is_plain_identifier(part: &str) -> bool {
        part.len() <= 128
            && part.starts_with(|c: char| c.is_ascii_lowercase())
            && part.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    }

    proptest::proptest! {
        #[test]
        fn prop_table_names_are_identifiers_and_round_trip(
            text in "\\PC{0,40}|[ ._a-zA-Z0-9/\\\\-]{0,140}|_?[a-zA-Z_.][a-zA-Z0-9_]{0,20}(\\._?[a-zA-Z.][a-zA-Z0-9_]{0,20})?"
        ) {
            if let Ok(name) = TableName::parse(&text) {
                for part in [name.namespace(), name.name()] {
                    proptest::prop_assert!(is_plain_identifier(part), "{part:?} from {text:?}");
                    proptest::prop_assert!(!part.starts_with('_') && part != "..");
                }
                proptest::prop_assert_eq!(TableName::parse(&name.to_string()).unwrap(), name.clone());
                proptest::prop_assert_eq!(
                    name.path(),
                    format!("{}/{}", name.namespace(), name.name())
                );
            }
        }

        #[test]
        fn prop_identifiers_are_accepted(
            namespace in proptest::option::of("[a-zA-Z][a-zA-Z0-9_]{0,127}"),
            table in "[a-zA-Z][a-zA-Z0-9_]{0,127}",
        ) {
            let text = match &namespace {
                Some(ns) => format!("{ns}.{table}"),
                None => table.clone(),
            };
            let name = TableName::parse(&text).unwrap();
            proptest::prop_assert_eq!(name.name(), table.to_ascii_lowercase());
            let expected = namespace.map_or(DEFAULT_NAMESPACE.to_string(), |n| n.to_ascii_lowercase());
            proptest::prop_assert_eq!(name.namespace(), expected);
        }
    }
}
