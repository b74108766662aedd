//! The crawler: registers data that is already in storage as catalog tables.
//!
//! [`Catalog::crawl`] lists everything under a location (a local directory or an
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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema};
use chrono::Utc;
use datafusion::datasource::file_format::csv::CsvFormat;
use datafusion::datasource::file_format::json::JsonFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::file_format::FileFormat;
use datafusion::prelude::SessionContext;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore};
use serde::Serialize;
use tarn_lake::LakeLocation;
use url::Url;

use crate::catalog::external_url;
use crate::{
    Catalog, DefineStatus, Error, ExternalColumn, ExternalFormat, ExternalSource, Result,
    TableDefinition, TableName, TableSpec,
};

/// Who asks for a crawl; decides which locations may be crawled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrawlFrom {
    /// `tarn crawl` on the command line: any location the user can read. Relative paths are
    /// relative to the working directory.
    CommandLine,
    /// `POST /v1/crawl`: `s3://` locations, and local directories only inside a local lake
    /// (anything else would let an API client make the server read arbitrary files). Relative
    /// paths are relative to the lake's root (`imports/sales` is `<lake>/imports/sales/`).
    Api,
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

/// A place the crawl did not register.
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    /// Its URL.
    pub location: String,
    /// Why.
    pub reason: String,
}

/// A table found by listing.
#[derive(Debug)]
struct Found {
    /// Directory segments from the crawled location to the table's root.
    root: Vec<String>,
    kind: FoundKind,
}

#[derive(Debug)]
enum FoundKind {
    Delta,
    Files { extension: String, files: Vec<(ObjectMeta, Vec<(String, String)>)>, notes: Vec<String> },
}

/// What the crawler learned about one table.
struct Inferred {
    source: ExternalSource,
    files: usize,
    notes: Vec<String>,
}

/// The format of a data file, by its name.
fn format_of(file_name: &str) -> Option<(ExternalFormat, &'static str)> {
    let lower = file_name.to_ascii_lowercase();
    [
        (".parquet", ExternalFormat::Parquet),
        (".csv", ExternalFormat::Csv),
        (".ndjson", ExternalFormat::Ndjson),
        (".jsonl", ExternalFormat::Ndjson),
        (".json", ExternalFormat::Ndjson),
    ]
    .into_iter()
    .find(|(ext, _)| lower.ends_with(ext) && lower.len() > ext.len())
    .map(|(ext, format)| (format, ext))
}

fn hidden(segment: &str) -> bool {
    segment.starts_with('_') || segment.starts_with('.')
}

/// True when `relative` (a path below an external table's root) is one of its data files:
/// no hidden segment, and the table's extension.
pub(crate) fn is_data_file(relative: &str, extension: &str) -> bool {
    let relative = relative.trim_start_matches('/');
    !relative.is_empty()
        && !relative.split('/').any(hidden)
        && relative.to_ascii_lowercase().ends_with(extension)
}

/// `key=value` of a Hive partition directory.
fn partition_segment(segment: &str) -> Option<(String, String)> {
    let (key, value) = segment.split_once('=')?;
    (!key.is_empty() && !hidden(key)).then(|| (key.to_string(), value.to_string()))
}

/// A valid table name from a directory name: lower case, `_` for anything but letters,
/// digits and `_`, `t_` before a leading digit.
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
    name
}

/// The type of a partition column from its values.
fn partition_type(values: &BTreeSet<String>) -> DataType {
    let integer = |v: &str| {
        v.parse::<i64>().is_ok() && !(v.len() > 1 && (v.starts_with('0') || v.starts_with("-0")))
    };
    let date = |v: &str| chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d").is_ok() && v.len() == 10;
    if !values.is_empty() && values.iter().all(|v| integer(v)) {
        DataType::Int64
    } else if !values.is_empty() && values.iter().all(|v| date(v)) {
        DataType::Date32
    } else {
        DataType::Utf8
    }
}

/// Lists `prefix` of `store` and groups what is there into tables.
fn discover(objects: Vec<ObjectMeta>, prefix: &Path) -> (Vec<Found>, Vec<(Vec<String>, String)>) {
    let relative = |meta: &ObjectMeta| -> Vec<String> {
        let full = meta.location.as_ref();
        let rest = if prefix.as_ref().is_empty() {
            full
        } else {
            full.strip_prefix(prefix.as_ref()).unwrap_or(full).trim_start_matches('/')
        };
        rest.split('/').filter(|s| !s.is_empty()).map(str::to_string).collect()
    };
    let mut delta_roots: BTreeSet<Vec<String>> = BTreeSet::new();
    let mut files = Vec::new();
    for meta in objects {
        let segments = relative(&meta);
        if let Some(i) = segments.iter().position(|s| s == "_delta_log") {
            if i + 1 < segments.len() && !segments[..i].iter().any(|s| hidden(s)) {
                delta_roots.insert(segments[..i].to_vec());
            }
            continue;
        }
        files.push((segments, meta));
    }
    // Tables by root, then by extension.
    type Grouped =
        BTreeMap<Vec<String>, BTreeMap<&'static str, Vec<(ObjectMeta, Vec<(String, String)>)>>>;
    let mut grouped: Grouped = BTreeMap::new();
    let mut ignored: BTreeMap<Vec<String>, usize> = BTreeMap::new();
    for (segments, meta) in files {
        let Some((file_name, directories)) = segments.split_last() else { continue };
        if segments.iter().any(|s| hidden(s)) {
            continue;
        }
        if (0..=directories.len()).any(|n| delta_roots.contains(&directories[..n])) {
            continue;
        }
        let split = directories.iter().position(|s| partition_segment(s).is_some());
        let root = directories[..split.unwrap_or(directories.len())].to_vec();
        let Some((_, extension)) = format_of(file_name) else {
            *ignored.entry(root).or_default() += 1;
            continue;
        };
        let partitions: Vec<(String, String)> =
            directories[root.len()..].iter().map_while(|s| partition_segment(s)).collect();
        grouped.entry(root).or_default().entry(extension).or_default().push((meta, partitions));
    }
    let mut found: Vec<Found> =
        delta_roots.into_iter().map(|root| Found { root, kind: FoundKind::Delta }).collect();
    let mut skipped = Vec::new();
    for (root, mut by_extension) in grouped {
        let extension = by_extension
            .iter()
            .max_by_key(|(_, files)| files.len())
            .map(|(ext, _)| *ext)
            .expect("groups are not empty");
        let files = by_extension.remove(extension).expect("present");
        let mut notes: Vec<String> = by_extension
            .iter()
            .map(|(ext, other)| {
                format!(
                    "{} {ext} files ignored: the table is read from its {extension} files",
                    other.len()
                )
            })
            .collect();
        if let Some(n) = ignored.remove(&root) {
            notes.push(format!("{n} files of other types ignored"));
        }
        // One partition layout per table; files outside it are not read by queries.
        let mut layouts: BTreeMap<Vec<String>, usize> = BTreeMap::new();
        for (_, partitions) in &files {
            let keys = partitions.iter().map(|(k, _)| k.clone()).collect();
            *layouts.entry(keys).or_default() += 1;
        }
        let partitioned: Vec<&Vec<String>> = layouts.keys().filter(|k| !k.is_empty()).collect();
        if partitioned.len() > 1 {
            let shown: Vec<String> = partitioned.iter().map(|k| k.join("/")).collect();
            skipped.push((
                root,
                format!("its files use different partition layouts ({}); crawl the layouts' directories separately", shown.join(" vs "))
            ));
            continue;
        }
        let files = match partitioned.first() {
            Some(keys) => {
                let keys = (*keys).clone();
                let (inside, outside): (Vec<_>, Vec<_>) =
                    files.into_iter().partition(|(_, p)| p.iter().map(|(k, _)| k).eq(keys.iter()));
                if !outside.is_empty() {
                    notes.push(format!(
                        "{} files outside the {} directories ignored",
                        outside.len(),
                        keys.iter().map(|k| format!("{k}=")).collect::<Vec<_>>().join("/")
                    ));
                }
                inside
            }
            None => files,
        };
        found.push(Found {
            root,
            kind: FoundKind::Files { extension: extension.to_string(), files, notes },
        });
    }
    (found, skipped)
}

impl Catalog {
    /// The URL of `location` if `from` may crawl it (see [`CrawlFrom`]).
    pub fn crawl_location(&self, location: &str, from: CrawlFrom) -> Result<Url> {
        let refuse = |reason: String, forbidden: bool| Error::Location {
            location: location.to_string(),
            reason,
            forbidden,
        };
        let trimmed = location.trim();
        let parsed = if from == CrawlFrom::Api
            && !trimmed.contains("://")
            && !trimmed.starts_with('/')
        {
            let relative = trimmed.trim_matches('/');
            if relative.split('/').any(|s| s == ".." || s == ".") {
                return Err(refuse("a path in the lake may not contain '.' or '..'".into(), false));
            }
            let url = if relative.is_empty() {
                self.lake().url().clone()
            } else {
                self.lake()
                    .url()
                    .join(&format!("{relative}/"))
                    .map_err(|e| refuse(e.to_string(), false))?
            };
            LakeLocation::parse(url.as_str()).map_err(|e| refuse(e.to_string(), false))?
        } else {
            LakeLocation::parse(trimmed).map_err(|e| refuse(e.to_string(), false))?
        };
        match (&parsed, from) {
            (LakeLocation::Memory, _) => {
                Err(refuse("memory:// holds nothing to crawl".into(), false))
            }
            (LakeLocation::Local(path), CrawlFrom::Api) => {
                let inside = match self.lake().location() {
                    LakeLocation::Local(lake) => {
                        let canonical = |p: &std::path::Path| {
                            std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
                        };
                        canonical(path).starts_with(canonical(lake))
                    }
                    _ => false,
                };
                if inside {
                    Ok(parsed.url())
                } else {
                    Err(refuse(
                        "over the HTTP API only s3:// locations and directories inside the lake \
                         may be crawled; crawl other local directories with `tarn crawl` on the \
                         command line"
                            .into(),
                        true,
                    ))
                }
            }
            _ => Ok(parsed.url()),
        }
    }

    /// Crawls `url` (from [`Catalog::crawl_location`]) and registers or updates the tables
    /// found there (see the [module documentation](crate::crawler)).
    pub async fn crawl(&self, url: &Url, options: &CrawlOptions) -> Result<CrawlReport> {
        TableName::new(&options.namespace, "t")?;
        if !options.table_prefix.is_empty() {
            TableName::new(&options.namespace, &format!("{}t", options.table_prefix))?;
        }
        let location_error = |reason: String| Error::Location {
            location: url.to_string(),
            reason,
            forbidden: false,
        };
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
        let store = self.lake().store_for_url(url)?;
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
        let (found, layout_skips) = discover(objects, &prefix);
        let table_url = |root: &[String]| -> Result<Url> {
            if root.is_empty() {
                return Ok(url.clone());
            }
            url.join(&format!("{}/", root.join("/")))
                .map_err(|e| location_error(format!("cannot build a table URL: {e}")))
        };
        let mut report = CrawlReport { location: url.to_string(), tables: vec![], skipped: vec![] };
        for (root, reason) in layout_skips {
            report.skipped.push(Skipped { location: table_url(&root)?.to_string(), reason });
        }

        // What the catalog holds already: Tarn's own tables by URL, external ones by URL.
        let mut own: HashMap<String, TableName> = HashMap::new();
        let mut external: HashMap<String, TableDefinition> = HashMap::new();
        for definition in self.list().await? {
            match &definition.external {
                Some(source) => {
                    external.insert(source.url.clone(), definition);
                }
                None => {
                    if let Ok(url) = self.lake().table_url(&definition.location) {
                        own.insert(url.to_string(), definition.name());
                    }
                }
            }
        }

        // Names: the directory's, or, when two tables found share it, their whole path.
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
        let mut name_counts: HashMap<String, usize> = HashMap::new();
        for f in &found {
            *name_counts.entry(table_name_from(&base_name(&f.root))).or_default() += 1;
        }

        for f in found {
            let turl = table_url(&f.root)?;
            let location = turl.to_string();
            if let Some(name) = own.get(&location) {
                report
                    .skipped
                    .push(Skipped { location, reason: format!("Tarn's own table {name}") });
                continue;
            }
            let simple = table_name_from(&base_name(&f.root));
            let derived = if name_counts[&simple] > 1 && !f.root.is_empty() {
                table_name_from(&f.root.join("_"))
            } else {
                simple
            };
            let inferred = match self.infer(&turl, &store, f.kind).await {
                Ok(inferred) => inferred,
                Err(e) if e.is_transient() => return Err(e.into()),
                Err(e) => {
                    report.skipped.push(Skipped { location, reason: e.to_string() });
                    continue;
                }
            };
            let previous = external.get(&location).cloned();
            let name = match &previous {
                Some(definition) => definition.name(),
                None => TableName::new(
                    &options.namespace,
                    &format!("{}{derived}", options.table_prefix),
                )?,
            };
            match self.register(&name, previous, inferred).await {
                Ok(table) => report.tables.push(table),
                Err(Error::TableExists { .. }) => report.skipped.push(Skipped {
                    location,
                    reason: format!(
                        "the name {name} is taken by another table; crawl with a table prefix \
                         to register it under another name"
                    ),
                }),
                Err(e) => return Err(e),
            }
        }
        Ok(report)
    }

    /// Reads a found table's schema.
    async fn infer(
        &self,
        url: &Url,
        store: &Arc<dyn ObjectStore>,
        kind: FoundKind,
    ) -> tarn_lake::Result<Inferred> {
        let crawled_at = Utc::now();
        match kind {
            FoundKind::Delta => {
                let table = self.lake().open_table_url(url).await?;
                let schema = table.schema()?;
                let partition_names = table.partition_columns()?;
                let (partitions, columns): (Vec<_>, Vec<_>) =
                    schema.fields().iter().partition(|f| partition_names.contains(f.name()));
                let partition_columns = partition_names
                    .iter()
                    .filter_map(|n| partitions.iter().find(|f| f.name() == n))
                    .map(|f| ExternalColumn::from_field(f))
                    .collect();
                Ok(Inferred {
                    source: ExternalSource {
                        url: url.to_string(),
                        format: ExternalFormat::Delta,
                        file_extension: None,
                        partition_columns,
                        columns: columns.iter().map(|f| ExternalColumn::from_field(f)).collect(),
                        partitions: 0,
                        crawled_at,
                    },
                    files: table.stats().files,
                    notes: vec![],
                })
            }
            FoundKind::Files { extension, files, mut notes } => {
                let format = format_of(&format!("x{extension}")).expect("known extension").0;
                let file_format: Arc<dyn FileFormat> = match format {
                    ExternalFormat::Parquet => Arc::new(ParquetFormat::default()),
                    ExternalFormat::Csv => Arc::new(CsvFormat::default().with_has_header(true)),
                    _ => Arc::new(JsonFormat::default()),
                };
                let mut values: Vec<(String, BTreeSet<String>)> = Vec::new();
                let mut partitions: BTreeSet<Vec<(String, String)>> = BTreeSet::new();
                for (_, parts) in &files {
                    for (i, (key, value)) in parts.iter().enumerate() {
                        if values.len() <= i {
                            values.push((key.clone(), BTreeSet::new()));
                        }
                        values[i].1.insert(value.clone());
                    }
                    if !parts.is_empty() {
                        partitions.insert(parts.clone());
                    }
                }
                let objects: Vec<ObjectMeta> =
                    files.iter().map(|(m, _)| m.clone()).filter(|m| m.size > 0).collect();
                if objects.is_empty() {
                    return Err(tarn_lake::Error::SchemaMismatch(
                        "its files are all empty; there is no schema to infer".into(),
                    ));
                }
                let ctx = SessionContext::new();
                let infer = |objects: Vec<ObjectMeta>| {
                    let (state, file_format) = (ctx.state(), file_format.clone());
                    async move {
                        file_format.infer_schema(&state, store, &objects).await.map_err(|e| {
                            tarn_lake::Error::SchemaMismatch(format!(
                                "cannot infer a schema from its {format} files: {}",
                                e.find_root()
                            ))
                        })
                    }
                };
                let schema = match format {
                    // Parquet footers name and type every column of every file.
                    ExternalFormat::Parquet | ExternalFormat::Delta => infer(objects).await?,
                    // DataFusion samples CSV and JSON across files up to a number of records
                    // in all: infer each file, so a column only newer files have is seen.
                    ExternalFormat::Csv | ExternalFormat::Ndjson => {
                        let mut schemas = Vec::new();
                        for object in objects.iter().take(MAX_FILES_INFERRED) {
                            schemas.push((
                                object.location.clone(),
                                infer(vec![object.clone()]).await?,
                            ));
                        }
                        if objects.len() > MAX_FILES_INFERRED {
                            notes.push(format!(
                                "columns inferred from the first {MAX_FILES_INFERRED} of {} files",
                                objects.len()
                            ));
                        }
                        if format == ExternalFormat::Csv {
                            same_csv_headers(&schemas)?;
                        }
                        Arc::new(merge_widening(schemas.iter().map(|(_, s)| s.as_ref())))
                    }
                };
                let partition_columns: Vec<ExternalColumn> = values
                    .iter()
                    .map(|(key, values)| {
                        ExternalColumn::from_field(&Field::new(key, partition_type(values), true))
                    })
                    .collect();
                let columns: Vec<ExternalColumn> = schema
                    .fields()
                    .iter()
                    .filter(|f| !values.iter().any(|(k, _)| k == f.name()))
                    .map(|f| ExternalColumn::from_field(&f.as_ref().clone().with_nullable(true)))
                    .collect();
                Ok(Inferred {
                    source: ExternalSource {
                        url: url.to_string(),
                        format,
                        file_extension: Some(extension),
                        partition_columns,
                        columns,
                        partitions: partitions.len() as u64,
                        crawled_at,
                    },
                    files: files.len(),
                    notes,
                })
            }
        }
    }

    /// Creates the entry of a newly found table, or a new revision of a known one when the
    /// crawl found something new.
    async fn register(
        &self,
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
                self.put_document(&definition).await?;
                self.cache_definition(name, Some(Arc::new(definition)));
                self.forget(name);
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
                    self.put_document(&definition).await?;
                    self.cache_definition(name, Some(Arc::new(definition)));
                    self.forget(name);
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

/// Files of a CSV or NDJSON table whose columns are inferred one by one.
const MAX_FILES_INFERRED: usize = 1000;

/// CSV files are read by column position: files with other headers than the first would
/// silently put values under the wrong columns, so such a prefix is not one table.
fn same_csv_headers(schemas: &[(Path, arrow::datatypes::SchemaRef)]) -> tarn_lake::Result<()> {
    let names = |schema: &Schema| -> Vec<String> {
        schema.fields().iter().map(|f| f.name().clone()).collect()
    };
    let Some((first_path, first)) = schemas.first() else { return Ok(()) };
    match schemas.iter().find(|(_, schema)| names(schema) != names(first)) {
        None => Ok(()),
        Some((path, schema)) => Err(tarn_lake::Error::SchemaMismatch(format!(
            "its CSV files have different headers ({first_path}: {}; {path}: {}); CSV columns are read by position, so they cannot be one table",
            names(first).join(","),
            names(schema).join(",")
        ))),
    }
}

/// One schema for all files: every column of any file, in order of appearance; where files
/// disagree on a column's type, integers and floats widen to float, anything else to string.
fn merge_widening<'a>(schemas: impl Iterator<Item = &'a Schema>) -> Schema {
    let mut fields: Vec<Field> = Vec::new();
    for schema in schemas {
        for field in schema.fields() {
            match fields.iter_mut().find(|f| f.name() == field.name()) {
                None => fields.push(field.as_ref().clone().with_nullable(true)),
                Some(known) if known.data_type() == field.data_type() => {}
                Some(known) => {
                    let numeric = |t: &DataType| t.is_integer() || t.is_floating();
                    let wider = match (known.data_type(), field.data_type()) {
                        (DataType::Null, other) | (other, DataType::Null) => other.clone(),
                        (a, b) if numeric(a) && numeric(b) => DataType::Float64,
                        _ => DataType::Utf8,
                    };
                    *known = known.clone().with_data_type(wider);
                }
            }
        }
    }
    Schema::new(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(path: &str) -> ObjectMeta {
        ObjectMeta {
            location: Path::from(path),
            last_modified: Utc::now(),
            size: 10,
            e_tag: None,
            version: None,
        }
    }

    #[test]
    fn csv_files_must_share_their_header_and_types_widen() {
        let schema = |fields: &[(&str, DataType)]| {
            Arc::new(Schema::new(
                fields.iter().map(|(n, t)| Field::new(*n, t.clone(), true)).collect::<Vec<_>>(),
            ))
        };
        let a = schema(&[("page", DataType::Utf8), ("ms", DataType::Int64)]);
        let b = schema(&[("page", DataType::Utf8), ("ms", DataType::Float64)]);
        let swapped = schema(&[("ms", DataType::Int64), ("page", DataType::Utf8)]);
        assert!(same_csv_headers(&[
            (Path::from("a.csv"), a.clone()),
            (Path::from("b.csv"), b.clone())
        ])
        .is_ok());
        let err =
            same_csv_headers(&[(Path::from("a.csv"), a.clone()), (Path::from("c.csv"), swapped)])
                .unwrap_err()
                .to_string();
        assert!(err.contains("different headers") && err.contains("c.csv: ms,page"), "{err}");

        let newer = schema(&[("page", DataType::Boolean), ("channel", DataType::Utf8)]);
        let merged = merge_widening([a.as_ref(), b.as_ref(), newer.as_ref()].into_iter());
        let got: Vec<(String, DataType)> =
            merged.fields().iter().map(|f| (f.name().clone(), f.data_type().clone())).collect();
        assert_eq!(
            got,
            vec![
                ("page".to_string(), DataType::Utf8),
                ("ms".to_string(), DataType::Float64),
                ("channel".to_string(), DataType::Utf8),
            ]
        );
    }

    #[test]
    fn finds_delta_tables_and_partitioned_prefixes() {
        let objects = [
            "root/sales/year=2025/month=1/part-0.parquet",
            "root/sales/year=2025/month=2/part-0.parquet",
            "root/sales/_SUCCESS",
            "root/orders/_delta_log/00000000000000000000.json",
            "root/orders/part-0.parquet",
            "root/logs/a.ndjson",
            "root/logs/notes.txt",
            "root/_tarn/catalog/tables/default/x/0.json",
            "root/.hidden/x.csv",
        ]
        .map(meta)
        .to_vec();
        let (found, skipped) = discover(objects, &Path::from("root"));
        assert!(skipped.is_empty());
        let summary: Vec<(String, String, usize)> = found
            .iter()
            .map(|f| match &f.kind {
                FoundKind::Delta => (f.root.join("/"), "delta".into(), 0),
                FoundKind::Files { extension, files, .. } => {
                    (f.root.join("/"), extension.clone(), files.len())
                }
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("orders".to_string(), "delta".to_string(), 0),
                ("logs".into(), ".ndjson".into(), 1),
                ("sales".into(), ".parquet".into(), 2),
            ]
        );
        let FoundKind::Files { files, .. } = &found[2].kind else { panic!() };
        assert_eq!(files[0].1, [("year".into(), "2025".into()), ("month".into(), "1".into())]);
    }

    #[test]
    fn names_and_partition_types() {
        assert_eq!(table_name_from("Sales-2025"), "sales_2025");
        assert_eq!(table_name_from("2025"), "t_2025");
        assert_eq!(table_name_from("__"), "data");
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        assert_eq!(partition_type(&set(&["2025", "2026"])), DataType::Int64);
        assert_eq!(partition_type(&set(&["01234"])), DataType::Utf8);
        assert_eq!(partition_type(&set(&["2025-01-02"])), DataType::Date32);
        assert_eq!(partition_type(&set(&["1", "__HIVE_DEFAULT_PARTITION__"])), DataType::Utf8);
    }
}
