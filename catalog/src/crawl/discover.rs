//! From a listing to the tables in it: Delta directories, prefixes of data files, Hive
//! partitions, hidden files.
//!
//! Everything here is pure: it works on object paths, reads no file and knows no catalog.
//! Tables are found *below* the listed prefix only: an object that is not under the prefix
//! (component by component, so `root` does not hold `rootx/a.csv`) is ignored, and a table's
//! root is a list of the object paths' own segments (never empty, `.` or `..`), which
//! [`super::location::below`] turns into a URL under the crawled one.

use std::collections::{BTreeMap, BTreeSet};

use object_store::path::Path;
use object_store::ObjectMeta;

use crate::definition::hidden;
use crate::ExternalFormat;

/// A table found by listing.
#[derive(Debug)]
pub(crate) struct Found {
    /// Directory segments from the crawled location to the table's root.
    pub(crate) root: Vec<String>,
    /// What kind of table.
    pub(crate) kind: FoundKind,
}

/// The kind of a table found.
#[derive(Debug)]
pub(crate) enum FoundKind {
    /// A directory holding `_delta_log/`.
    Delta,
    /// Data files of one format.
    Files {
        /// The extension of the files read (`.parquet`, `.csv`, ...).
        extension: String,
        /// The files, each with its `key=value` partition segments, outermost first.
        files: Vec<PartitionedFile>,
        /// What to know about files left out.
        notes: Vec<String>,
    },
}

/// A data file with its `key=value` partition segments, outermost first.
pub(crate) type PartitionedFile = (ObjectMeta, Vec<(String, String)>);

/// A place that looked like a table but is not one: its root, and why.
pub(crate) type Refused = (Vec<String>, String);

/// The format of a data file, by its name, and the extension that says so.
pub(crate) fn format_of(file_name: &str) -> Option<(ExternalFormat, &'static str)> {
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

/// `key=value` of a Hive partition directory.
fn partition_segment(segment: &str) -> Option<(String, String)> {
    let (key, value) = segment.split_once('=')?;
    (!key.is_empty() && !hidden(key)).then(|| (key.to_string(), value.to_string()))
}

/// The segments of `location` below `prefix`, or `None` when it is not below it.
pub(crate) fn relative_segments(location: &Path, prefix: &Path) -> Option<Vec<String>> {
    let rest = location.prefix_match(prefix)?;
    Some(rest.map(|part| part.as_ref().to_string()).filter(|s| !s.is_empty()).collect())
}

/// Groups the objects listed under `prefix` into tables; also answers the places refused
/// (a prefix whose files use several partition layouts).
pub(crate) fn discover(objects: Vec<ObjectMeta>, prefix: &Path) -> (Vec<Found>, Vec<Refused>) {
    let mut delta_roots: BTreeSet<Vec<String>> = BTreeSet::new();
    let mut files = Vec::new();
    for meta in objects {
        let Some(segments) = relative_segments(&meta.location, prefix) else { continue };
        if let Some(i) = segments.iter().position(|s| s == "_delta_log") {
            if i + 1 < segments.len() && !segments[..i].iter().any(|s| hidden(s)) {
                delta_roots.insert(segments[..i].to_vec());
            }
            continue;
        }
        files.push((segments, meta));
    }
    // Tables by root, then by extension.
    let mut grouped: BTreeMap<Vec<String>, BTreeMap<&'static str, Vec<PartitionedFile>>> =
        BTreeMap::new();
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
    let mut refused = Vec::new();
    for (root, by_extension) in grouped {
        match files_table(by_extension, ignored.remove(&root)) {
            Ok(kind) => found.push(Found { root, kind }),
            Err(reason) => refused.push((root, reason)),
        }
    }
    (found, refused)
}

/// The table of one root's data files: the most common extension, one partition layout.
fn files_table(
    mut by_extension: BTreeMap<&'static str, Vec<PartitionedFile>>,
    ignored: Option<usize>,
) -> Result<FoundKind, String> {
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
    if let Some(n) = ignored {
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
        return Err(format!(
            "its files use different partition layouts ({}); crawl the layouts' directories separately",
            shown.join(" vs ")
        ));
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
    Ok(FoundKind::Files { extension: extension.to_string(), files, notes })
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use proptest::prelude::*;
    use url::Url;

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

    /// Before, the crawled prefix was cut off the object paths as text: `root` also cut
    /// `rootx/a.csv` (a table `x`), and objects not under the prefix at all were taken whole.
    #[test]
    fn objects_not_below_the_prefix_are_not_tables() {
        let objects = ["rootx/a.csv", "other/b.csv", "root/sales/c.csv"].map(meta).to_vec();
        let (found, skipped) = discover(objects, &Path::from("root"));
        assert!(skipped.is_empty());
        let roots: Vec<Vec<String>> = found.into_iter().map(|f| f.root).collect();
        assert_eq!(roots, [vec!["sales".to_string()]]);
    }

    #[test]
    fn several_partition_layouts_are_refused_with_the_layouts() {
        let objects = ["t/a=1/x.csv", "t/b=2/y.csv"].map(meta).to_vec();
        let (found, refused) = discover(objects, &Path::from(""));
        assert!(found.is_empty());
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].0, ["t"]);
        assert!(refused[0].1.contains("(a vs b)"), "{}", refused[0].1);
    }

    fn segment() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "_delta_log",
                "year=2025",
                "year=2026",
                "month=1",
                "=x",
                "a=",
                "_SUCCESS",
                ".hidden",
                "%2e%2e",
                "%2E.",
                "..",
                ".",
                "root",
                "rootx",
                "sales",
                "a.csv",
                "b.parquet",
                "c.ndjson",
                "d.json",
                "e.jsonl",
                "x.txt",
                ".csv",
                "k=v=w",
                "00000.json",
                "a\\b",
                "a?b",
            ])
            .prop_map(str::to_string),
            "[a-z=._%]{1,8}",
            any::<String>(),
        ]
    }

    /// A path as a listing gives it: the raw key when it is a valid one (S3), else encoded.
    fn path_of(segments: Vec<String>) -> Path {
        Path::parse(segments.join("/")).unwrap_or_else(|_| Path::from_iter(segments))
    }

    fn listing() -> impl Strategy<Value = (Path, Vec<ObjectMeta>)> {
        let prefix = prop_oneof![
            Just(vec![]),
            Just(vec!["root".to_string()]),
            Just(vec!["root".to_string(), "sales".to_string()]),
            prop::collection::vec(segment(), 0..3),
        ];
        let objects = prop::collection::vec(
            (prop::bool::weighted(0.9), prop::collection::vec(segment(), 0..6)),
            0..24,
        );
        (prefix, objects).prop_map(|(prefix, objects)| {
            let objects = objects
                .into_iter()
                .map(|(under, rest)| {
                    let segments = if under { [prefix.clone(), rest].concat() } else { rest };
                    let mut meta = meta("x");
                    meta.location = path_of(segments);
                    meta
                })
                .collect();
            (path_of(prefix), objects)
        })
    }

    proptest! {
        /// `discover` never panics, and every table it finds (or refuses) is rooted below the
        /// crawled prefix: its root is made of listed segments (never empty, `.` or `..`), and
        /// its URL, on a local disk as on S3, is below the crawled URL and names that root.
        #[test]
        fn prop_discover_never_roots_a_table_outside_the_prefix((prefix, objects) in listing()) {
            let listed: Vec<Vec<String>> =
                objects.iter().filter_map(|m| relative_segments(&m.location, &prefix)).collect();
            let (found, refused) = discover(objects, &prefix);
            let roots = found.iter().map(|f| &f.root).chain(refused.iter().map(|(root, _)| root));
            for root in roots {
                prop_assert!(root.iter().all(|s| !s.is_empty() && s != "." && s != ".."));
                prop_assert!(listed.iter().any(|l| l.starts_with(root) && l.len() > root.len()));
                for base in ["file:///data/crawl/", "s3://bucket/crawl/"] {
                    let base = Url::parse(base).unwrap();
                    let url = super::super::location::below(&base, root).expect("a URL");
                    prop_assert!(url.as_str().starts_with(base.as_str()), "{url} for {root:?}");
                    let path = Path::from_url_path(url.path()).unwrap();
                    let back = relative_segments(&path, &Path::from("data/crawl"))
                        .or_else(|| relative_segments(&path, &Path::from("crawl")));
                    prop_assert_eq!(back.as_ref(), Some(root), "{}", url);
                }
            }
            for f in &found {
                if let FoundKind::Files { files, .. } = &f.kind {
                    prop_assert!(!files.is_empty());
                    for (meta, _) in files {
                        let relative = relative_segments(&meta.location, &prefix);
                        prop_assert!(relative.is_some_and(|r| r.starts_with(&f.root)));
                    }
                }
            }
        }
    }
}
