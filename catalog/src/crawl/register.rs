//! From what a crawl inferred to catalog entries: the tables' names, new entries, new
//! revisions when something changed, and the changes in words.
//!
//! A table is recognised by its URL, so crawling again keeps its name and writes a new
//! revision only when the format, the columns, the partition columns or the number of
//! partitions changed; otherwise it is `unchanged`.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::Utc;
use serde::Serialize;
use url::Url;

use super::infer::Inferred;
use crate::{
    Catalog, DefineStatus, ExternalColumn, ExternalFormat, ExternalSource, Result, TableDefinition,
    TableName, TableSpec,
};

/// The longest table name (see [`TableName`]).
const MAX_NAME: usize = 128;

/// One table a crawl found.
#[derive(Debug, Clone, Serialize)]
pub struct CrawledTable {
    /// The table's name (without namespace).
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// The data's URL.
    pub location: String,
    /// The data's format.
    pub format: ExternalFormat,
    /// Partition columns, outermost first.
    pub partition_columns: Vec<String>,
    /// Number of columns, partition columns included.
    pub columns: usize,
    /// Number of data files.
    pub files: usize,
    /// Number of partitions (`key=value/` directories; 0 for Delta tables).
    pub partitions: u64,
    /// `created`, `updated` or `unchanged`.
    pub status: DefineStatus,
    /// What changed (for `updated`) or what to know (ignored files).
    pub changes: Vec<String>,
}

impl CrawledTable {
    /// `namespace.name`.
    pub fn qualified_name(&self) -> String {
        format!("{}.{}", self.namespace, self.name)
    }
}

/// A valid table name from a directory name: lower case, `_` for anything but letters,
/// digits and `_`, no `_` at either end, `t_` before a leading digit, `data` when nothing is
/// left, at most 120 characters.
pub fn table_name_from(directory: &str) -> String {
    let mut name: String = directory
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' })
        .collect();
    name = name.trim_matches('_').to_string();
    if name.is_empty() {
        name = "data".into();
    }
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        name = format!("t_{name}");
    }
    name.truncate(120);
    // Cutting may leave a '_' at the end again.
    name.truncate(name.trim_end_matches('_').len());
    name
}

/// The names (before any prefix) of tables found at `roots` below `url`: each root's last
/// directory (the crawled location's own for the root itself); when several tables would
/// share a name, their whole path below `url`.
pub(crate) fn derived_names(url: &Url, roots: &[&[String]]) -> Vec<String> {
    let base_name = |root: &[String]| -> String {
        match root.last() {
            Some(last) => last.clone(),
            None => url
                .path_segments()
                .and_then(|mut s| s.rfind(|s| !s.is_empty()).map(str::to_string))
                .or_else(|| url.host_str().map(str::to_string))
                .unwrap_or_else(|| "data".into()),
        }
    };
    let simple: Vec<String> = roots.iter().map(|root| table_name_from(&base_name(root))).collect();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for name in &simple {
        *counts.entry(name.as_str()).or_default() += 1;
    }
    roots
        .iter()
        .zip(&simple)
        .map(|(root, name)| {
            if counts[name.as_str()] > 1 && !root.is_empty() {
                table_name_from(&root.join("_"))
            } else {
                name.clone()
            }
        })
        .collect()
}

/// The name of a new table: `prefix` and `derived` (from [`derived_names`]), the latter cut
/// so that the whole stays within the longest name allowed.
pub(crate) fn new_table_name(namespace: &str, prefix: &str, derived: &str) -> Result<TableName> {
    let room = MAX_NAME.saturating_sub(prefix.len()).max(1);
    let derived = &derived[..derived.len().min(room)];
    TableName::new(namespace, &format!("{prefix}{derived}"))
}

/// Creates the entry of a newly found table, or a new revision of a known one when the crawl
/// found something new.
pub(crate) async fn register(
    catalog: &Catalog,
    name: &TableName,
    previous: Option<TableDefinition>,
    inferred: Inferred,
) -> Result<CrawledTable> {
    let Inferred { source, files, notes } = inferred;
    let spec = TableSpec {
        partition_by: source.partition_columns.iter().map(|c| c.name.clone()).collect(),
        ..TableSpec::default()
    };
    let (status, changes) = match previous {
        None => {
            let definition = TableDefinition {
                namespace: name.namespace().to_string(),
                name: name.name().to_string(),
                location: source.url.clone(),
                created_at: Utc::now(),
                created_by: "crawler".into(),
                updated_at: None,
                revision: 0,
                owner: None,
                external: Some(source.clone()),
                spec,
            };
            let e_tag = catalog.put_document(&definition).await?;
            catalog.cache_definition(name, Some(Arc::new(definition)), e_tag);
            catalog.forget(name);
            tracing::info!(table = %name, url = %source.url, format = %source.format, "registered a crawled table");
            (DefineStatus::Created, notes)
        }
        Some(current) => {
            let old = current.external.as_ref().expect("crawled tables are external");
            let changes = differences(old, &source);
            if changes.is_empty() {
                (DefineStatus::Unchanged, notes)
            } else {
                let definition = TableDefinition {
                    revision: current.revision + 1,
                    updated_at: Some(Utc::now()),
                    external: Some(source.clone()),
                    spec,
                    ..current
                };
                let e_tag = catalog.put_document(&definition).await?;
                catalog.cache_definition(name, Some(Arc::new(definition)), e_tag);
                catalog.forget(name);
                tracing::info!(table = %name, ?changes, "updated a crawled table");
                (DefineStatus::Updated, changes.into_iter().chain(notes).collect())
            }
        }
    };
    Ok(CrawledTable {
        name: name.name().to_string(),
        namespace: name.namespace().to_string(),
        location: source.url.clone(),
        format: source.format,
        partition_columns: source.partition_columns.iter().map(|c| c.name.clone()).collect(),
        columns: source.columns.len() + source.partition_columns.len(),
        files,
        partitions: source.partitions,
        status,
        changes,
    })
}

/// What changed between two crawls of one table, for people.
fn differences(old: &ExternalSource, new: &ExternalSource) -> Vec<String> {
    let mut changes = Vec::new();
    if old.format != new.format {
        changes.push(format!("format is now {} (was {})", new.format, old.format));
    }
    if old.file_extension != new.file_extension {
        changes.push(format!(
            "files read are now *{} (were *{})",
            new.file_extension.as_deref().unwrap_or(""),
            old.file_extension.as_deref().unwrap_or("")
        ));
    }
    let names =
        |columns: &[ExternalColumn]| columns.iter().map(|c| c.name.clone()).collect::<Vec<_>>();
    if names(&old.partition_columns) != names(&new.partition_columns) {
        changes.push(format!(
            "partition columns are now [{}] (were [{}])",
            names(&new.partition_columns).join(", "),
            names(&old.partition_columns).join(", ")
        ));
    }
    let all = |s: &ExternalSource| -> Vec<ExternalColumn> {
        s.columns.iter().chain(&s.partition_columns).cloned().collect()
    };
    let (before, after) = (all(old), all(new));
    for column in &after {
        match before.iter().find(|c| c.name == column.name) {
            None => changes.push(format!("new column {} ({})", column.name, column.type_name)),
            Some(was) if was.arrow_type != column.arrow_type => changes.push(format!(
                "column {} is now {} (was {})",
                column.name, column.type_name, was.type_name
            )),
            Some(_) => {}
        }
    }
    for column in &before {
        if !after.iter().any(|c| c.name == column.name) {
            changes.push(format!("column {} is gone", column.name));
        }
    }
    if old.partitions != new.partitions {
        changes.push(format!("partitions: {} -> {}", old.partitions, new.partitions));
    }
    changes
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn names_from_directories() {
        assert_eq!(table_name_from("Sales-2025"), "sales_2025");
        assert_eq!(table_name_from("2025"), "t_2025");
        assert_eq!(table_name_from("__"), "data");
        assert_eq!(table_name_from("_tarn"), "tarn");
    }

    #[test]
    fn tables_sharing_a_name_are_named_by_their_path() {
        let url = Url::parse("s3://bucket/warehouse/").unwrap();
        let roots: Vec<Vec<String>> = [vec!["eu", "sales"], vec!["us", "sales"], vec!["orders"]]
            .map(|r| r.into_iter().map(String::from).collect())
            .to_vec();
        let roots: Vec<&[String]> = roots.iter().map(Vec::as_slice).collect();
        assert_eq!(derived_names(&url, &roots), ["eu_sales", "us_sales", "orders"]);
        assert_eq!(derived_names(&url, &[&[]]), ["warehouse"]);
    }

    /// Before, a table prefix and a long directory name made a name over 128 characters, and
    /// the whole crawl stopped with "invalid table name" after registering part of the tables.
    #[test]
    fn a_prefix_and_a_long_directory_name_still_make_a_valid_name() {
        let derived = table_name_from(&"d".repeat(300));
        let name = new_table_name("default", "raw_imports_2026_", &derived).unwrap();
        assert_eq!(name.name().len(), 128);
        assert!(name.name().starts_with("raw_imports_2026_ddd"));
    }

    proptest! {
        /// Any directory name makes a valid table name that is not one of the lake's own
        /// (`_...`), alone, after any valid prefix, and among other tables sharing its name.
        #[test]
        fn prop_table_names_from_directories_are_valid(
            directory in any::<String>(),
            prefix in "([a-z][a-z0-9_]{0,126})?",
            others in prop::collection::vec(prop::collection::vec(any::<String>(), 0..3), 0..4),
        ) {
            let derived = table_name_from(&directory);
            prop_assert!(TableName::new("default", &derived).is_ok(), "{derived}");
            prop_assert!(!derived.starts_with('_'));
            prop_assert!(new_table_name("default", &prefix, &derived).is_ok());
            let url = Url::parse("s3://bucket/crawl/").unwrap();
            let mut roots: Vec<Vec<String>> = others;
            roots.push(vec![directory.clone()]);
            roots.push(vec![directory]);
            let roots: Vec<&[String]> = roots.iter().map(Vec::as_slice).collect();
            for name in derived_names(&url, &roots) {
                prop_assert!(new_table_name("default", &prefix, &name).is_ok(), "{name}");
            }
        }
    }
}
