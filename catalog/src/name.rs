//! Table names.

use std::fmt;

use crate::{Error, Result};

/// The namespace of tables named without one.
pub const DEFAULT_NAMESPACE: &str = "default";

/// A table's qualified name: `namespace.table`.
///
/// Names are case-insensitive like unquoted SQL identifiers and stored in lower case; each part
/// starts with a letter or `_`, continues with letters, digits or `_`, and is at most 128
/// characters long, so it is a valid SQL identifier and a valid path segment everywhere.
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

fn validate_part(part: &str) -> std::result::Result<(), String> {
    let mut chars = part.chars();
    match chars.next() {
        None => return Err("is empty".into()),
        Some(c) if !(c.is_ascii_alphabetic() || c == '_') => {
            return Err(format!("must start with a letter or '_', not '{c}'"))
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
        assert!(e.contains("must start with a letter"), "{e}");
        let e = TableName::parse("a-b").unwrap_err().to_string();
        assert!(e.contains("not '-'"), "{e}");
        let e = TableName::parse("a.b.c").unwrap_err().to_string();
        assert!(e.contains("not '.'"), "{e}");
        assert!(TableName::parse("").is_err());
        assert!(TableName::parse("../etc").is_err());
        assert!(TableName::parse(&"x".repeat(129)).is_err());
    }
}
