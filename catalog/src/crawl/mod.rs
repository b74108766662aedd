//! The crawler: registers data that is already in storage as catalog tables.
//!
//! A [`Crawler`] lists everything under a location (a local directory or an
//! `s3://bucket/prefix`, read with the lake's credentials) and finds tables in it, the way an
//! AWS Glue crawler does:
//!
//! * a directory holding `_delta_log/` is a **Delta table** (written by Spark, delta-rs,
//!   Databricks, another Tarn); nothing below it is looked at further;
//! * otherwise a directory whose files end in `.parquet`, `.csv` or `.ndjson` / `.jsonl` /
//!   `.json`, directly or below Hive-style `key=value/` directories, is **one table** of that
//!   format, named after the directory; the `key=value` segments become partition columns
//!   (typed `int64` when every value is an integer, `date` when every value is a
//!   `YYYY-MM-DD` date, `string` otherwise);
//! * files and directories whose name starts with `_` or `.` (`_SUCCESS`, `_tarn/`,
//!   `.spark-staging/`) are ignored, and so are files of other types.
//!
//! The schema of file tables is inferred with DataFusion's readers (Parquet footers; the first
//! records of CSV, with a header line, and of NDJSON) and merged over all files, so a column
//! that only newer files have shows up (as nullable). Every column of an external table is
//! nullable: Tarn does not control what is written there next.
//!
//! Each table found becomes an **external** table ([`crate::ExternalSource`]): Tarn reads it
//! where it is, never writes to it and never deletes its data. Crawling again is idempotent:
//! a table is recognised by its URL, so it keeps its name and gets a new revision of its
//! definition only when something changed (columns added, removed or retyped, partition
//! columns, the number of partitions, the format); otherwise it is reported `unchanged`.
//! Files added later are read by queries without a crawl (the files are listed when a query
//! runs); new columns need one.
//!
//! Tables Tarn keeps itself (the lake's `<namespace>/<table>/`) are never registered a second
//! time, so crawling the lake's root is harmless.
//!
//! Which locations may be crawled depends on who asks ([`CrawlFrom`]): over the HTTP API,
//! `s3://` prefixes and directories inside a local lake only, and never a file whose real
//! place (symbolic links resolved) is outside the lake; see [`location`] for every rule.
//!
//! The work is cut along its seams, each file one step, none using a later one:
//! [`location`] (what may be read), `discover` (listing → tables found), `infer` (their
//! schemas), `register` (catalog entries and the changes), this file (the crawl itself).
//!
//! ```no_run
//! # async fn demo(catalog: &tarn_catalog::Catalog) -> tarn_catalog::Result<()> {
//! use tarn_catalog::crawl::{CrawlFrom, CrawlOptions, Crawler};
//!
//! let crawler = Crawler::new(catalog);
//! let location = crawler.location("imports/sales", CrawlFrom::Api)?;
//! let report = crawler.crawl(&location, &CrawlOptions::default()).await?;
//! for table in &report.tables {
//!     println!("{} {:?}", table.qualified_name(), table.status);
//! }
//! # Ok(()) }
//! ```

pub(crate) mod discover;
mod infer;
pub mod location;
mod register;

use std::collections::HashMap;

use arrow::datatypes::{DataType, Schema};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::ObjectMeta;
use serde::Serialize;
use url::Url;

use self::discover::{discover, relative_segments};
use self::location::{below, LinksLeaving};
use self::register::{derived_names, new_table_name, register};
use crate::catalog::external_url;
use crate::{Catalog, Error, ExternalSource, Result, TableDefinition, TableName};

pub use self::location::{CrawlFrom, CrawlLocation};
pub use self::register::{table_name_from, CrawledTable};

/// Registers the tables found under a location (see the [module documentation](self)).
#[derive(Debug, Clone, Copy)]
pub struct Crawler<'a> {
    catalog: &'a Catalog,
}

/// What to crawl into.
#[derive(Debug, Clone)]
pub struct CrawlOptions {
    /// The namespace new tables are registered in.
    pub namespace: String,
    /// Put before the name of every new table (e.g. `raw_`); empty by default.
    pub table_prefix: String,
}

impl Default for CrawlOptions {
    fn default() -> Self {
        CrawlOptions { namespace: crate::DEFAULT_NAMESPACE.into(), table_prefix: String::new() }
    }
}

/// What a crawl found and did.
#[derive(Debug, Clone, Serialize)]
pub struct CrawlReport {
    /// The crawled location's URL.
    pub location: String,
    /// The tables found, by location.
    pub tables: Vec<CrawledTable>,
    /// Places that looked like tables but were not registered, and why.
    pub skipped: Vec<Skipped>,
}

/// A place the crawl did not register.
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    /// Its URL.
    pub location: String,
    /// Why.
    pub reason: String,
}

impl CrawlReport {
    fn skip(&mut self, location: &Url, reason: String) {
        let location = location.to_string();
        if !self.skipped.iter().any(|s| s.location == location && s.reason == reason) {
            self.skipped.push(Skipped { location, reason });
        }
    }
}

impl<'a> Crawler<'a> {
    /// A crawler registering into `catalog`, reading with its lake's credentials.
    pub fn new(catalog: &'a Catalog) -> Self {
        Crawler { catalog }
    }

    /// The location `location` (a path, `file://` URL or `s3://` prefix) if `from` may crawl
    /// it (see [`CrawlFrom`] and [`location`]).
    pub fn location(&self, location: &str, from: CrawlFrom) -> Result<CrawlLocation> {
        location::locate(self.catalog.lake().location(), location, from)
    }

    /// Crawls `location` and registers or updates the tables found there.
    pub async fn crawl(
        &self,
        location: &CrawlLocation,
        options: &CrawlOptions,
    ) -> Result<CrawlReport> {
        TableName::new(&options.namespace, "t")?;
        if !options.table_prefix.is_empty() {
            TableName::new(&options.namespace, &format!("{}t", options.table_prefix))?;
        }
        let url = location.url();
        let location_error = |reason: String| Error::Location {
            location: url.to_string(),
            reason,
            forbidden: false,
        };
        location::recheck(location)?;
        if url.scheme() == "file" {
            let path = url.to_file_path().map_err(|_| location_error("not a local path".into()))?;
            match tokio::fs::metadata(&path).await {
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => return Err(location_error("it is a file; crawl its directory".into())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(location_error("the directory does not exist".into()))
                }
                Err(e) => return Err(location_error(format!("it cannot be read: {e}"))),
            }
        }
        let lake = self.catalog.lake();
        let store = lake.store_for_url(url)?;
        let prefix = Path::from_url_path(url.path())
            .map_err(|e| location_error(format!("not a valid path: {e}")))?;
        let objects: Vec<ObjectMeta> = match store.list(Some(&prefix)).try_collect().await {
            Ok(objects) => objects,
            Err(e) if tarn_lake::is_transient_store_error(&e) => return Err(e.into()),
            Err(e) => return Err(location_error(format!("it cannot be listed: {e}"))),
        };
        if objects.is_empty() {
            return Err(location_error(if url.scheme() == "file" {
                "the directory is empty".into()
            } else {
                "nothing is stored under it (the prefix does not exist or is empty)".into()
            }));
        }
        let leaving = self.links_leaving(location, &objects, &prefix).await?;
        let (found, refused) = discover(objects, &prefix);
        let table_url = |root: &[String]| -> Result<Url> {
            below(url, root).ok_or_else(|| location_error("cannot build a table URL".into()))
        };
        let mut report = CrawlReport { location: url.to_string(), tables: vec![], skipped: vec![] };
        for (root, reason) in refused {
            match leaving.refusal(url, &root) {
                Some((place, why)) => report.skip(&place, why),
                None => report.skip(&table_url(&root)?, reason),
            }
        }

        // What the catalog holds already: Tarn's own tables by URL, external ones by URL.
        let mut own: HashMap<String, TableName> = HashMap::new();
        let mut external: HashMap<String, TableDefinition> = HashMap::new();
        for definition in self.catalog.list().await? {
            match &definition.external {
                Some(source) => {
                    external.insert(source.url.clone(), definition);
                }
                None => {
                    if let Ok(url) = lake.table_url(&definition.location) {
                        own.insert(url.to_string(), definition.name());
                    }
                }
            }
        }

        let roots: Vec<&[String]> = found.iter().map(|f| f.root.as_slice()).collect();
        let names = derived_names(url, &roots);
        for (f, derived) in found.into_iter().zip(names) {
            let turl = table_url(&f.root)?;
            let location = turl.to_string();
            if let Some(name) = own.get(&location) {
                report.skip(&turl, format!("Tarn's own table {name}"));
                continue;
            }
            if let Some((place, why)) = leaving.refusal(url, &f.root) {
                report.skip(&place, why);
                continue;
            }
            let inferred = match infer::infer(lake, &turl, &store, f.kind).await {
                Ok(inferred) => inferred,
                Err(e) if e.is_transient() => return Err(e.into()),
                Err(e) => {
                    report.skip(&turl, e.to_string());
                    continue;
                }
            };
            let previous = external.get(&location).cloned();
            let name = match &previous {
                Some(definition) => definition.name(),
                None => new_table_name(&options.namespace, &options.table_prefix, &derived)?,
            };
            match register(self.catalog, &name, previous, inferred).await {
                Ok(table) => report.tables.push(table),
                Err(Error::TableExists { .. }) => report.skip(
                    &turl,
                    format!(
                        "the name {name} is taken by another table; crawl with a table prefix \
                         to register it under another name"
                    ),
                ),
                Err(e) => return Err(e),
            }
        }
        Ok(report)
    }

    /// For a location confined to the lake: the listed files whose real place is outside it.
    async fn links_leaving(
        &self,
        location: &CrawlLocation,
        objects: &[ObjectMeta],
        prefix: &Path,
    ) -> Result<LinksLeaving> {
        let (Some(root), Ok(dir)) = (location.confined_to(), location.url().to_file_path()) else {
            return Ok(LinksLeaving::default());
        };
        let root = root.to_path_buf();
        let files: Vec<Vec<String>> =
            objects.iter().filter_map(|m| relative_segments(&m.location, prefix)).collect();
        // A panic of the check is a bug: it goes on as one (the HTTP layer answers 500). The
        // task is cancelled only when the runtime shuts down.
        let check = tokio::task::spawn_blocking(move || LinksLeaving::find(&root, &dir, &files));
        Ok(check.await.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic())))
    }
}

/// The schema queries see for an external table of files (data columns, then partition
/// columns) and its partition columns, checked.
pub fn listing_schema(source: &ExternalSource) -> Result<(Schema, Vec<(String, DataType)>)> {
    external_url(source)?;
    let schema = source.file_schema()?;
    let partitions = source
        .partition_fields()?
        .into_iter()
        .map(|f| (f.name().clone(), f.data_type().clone()))
        .collect();
    Ok((schema, partitions))
}

#[cfg(test)]
#[path = "crawl_tests.rs"]
mod tests;
