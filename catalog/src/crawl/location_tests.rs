//! Location checks: regression tests for each way out of the lake, and a property test over
//! compositions of path pieces.

use std::os::unix::fs::symlink;
use std::path::{Path as FsPath, PathBuf};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use tarn_lake::test_util::{Backend, TestLake};

use super::*;

/// A temporary directory holding a lake and what is around it:
///
/// ```text
/// lake/imports/sales/     lake/file.csv          outside/x/
/// lake/out -> ../outside  lake/abs -> <tmp>/outside
/// lake/dl -> ../nowhere   lake/loop -> loop      lake/in -> imports
/// lake2/                  (a sibling whose name starts like the lake's)
/// ```
struct Fixture {
    _test: TestLake,
    tmp: PathBuf,
    lake: PathBuf,
    location: LakeLocation,
}

impl Fixture {
    fn new() -> Self {
        let test = TestLake::new(Backend::Local);
        let lake = PathBuf::from(&test.location);
        let tmp = lake.parent().unwrap().to_path_buf();
        for dir in ["lake/imports/sales", "outside/x", "lake2"] {
            std::fs::create_dir_all(tmp.join(dir)).unwrap();
        }
        std::fs::write(lake.join("file.csv"), "a\n1\n").unwrap();
        symlink("../outside", lake.join("out")).unwrap();
        symlink(tmp.join("outside"), lake.join("abs")).unwrap();
        symlink("../nowhere", lake.join("dl")).unwrap();
        symlink("loop", lake.join("loop")).unwrap();
        symlink("imports", lake.join("in")).unwrap();
        let location = LakeLocation::parse(lake.to_str().unwrap()).unwrap();
        Fixture { _test: test, tmp, lake, location }
    }

    fn api(&self, text: &str) -> Result<CrawlLocation> {
        locate(&self.location, text, CrawlFrom::Api)
    }

    fn lake_url(&self, relative: &str) -> String {
        format!("{}{relative}", Url::from_directory_path(&self.lake).unwrap())
    }
}

/// The error's reason, and whether it is a refusal (403) rather than bad input (400).
fn refusal(result: Result<CrawlLocation>) -> (String, bool) {
    match result {
        Err(Error::Location { reason, forbidden, .. }) => (reason, forbidden),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn relative_paths_stay_below_the_lake() {
    let f = Fixture::new();
    assert_eq!(f.api("imports/sales").unwrap().url().as_str(), f.lake_url("imports/sales/"));
    assert_eq!(f.api("").unwrap().url().as_str(), f.lake_url(""));
    assert!(f.api("/imports/../x").is_err());
    // Percent-encoding names a directory; it is decoded once.
    assert_eq!(
        f.api("imports/my%20data").unwrap().url().as_str(),
        f.lake_url("imports/my%20data/")
    );
    // A link inside the lake that stays inside is fine.
    assert_eq!(f.api("in/sales").unwrap().url().as_str(), f.lake_url("in/sales/"));
    assert!(f.api(f.lake.join("imports").to_str().unwrap()).is_ok());
}

/// Before, `%2e%2e`, `.%2e` and backslashes were not seen by the `..` check: the URL join
/// turned them into `..` and `/`, and only the final check (403, "outside the lake") caught
/// them when the result was outside; now they are bad input, said as such.
#[test]
fn encoded_dots_and_backslashes_are_refused_in_relative_paths() {
    let f = Fixture::new();
    for text in
        ["%2e%2e/outside", "imports/%2E%2e", ".%2e", "%2e", "..\\outside", "imports\\..\\.."]
    {
        let (reason, forbidden) = refusal(f.api(text));
        assert!(!forbidden, "{text}: {reason}");
        assert!(reason.contains("'.' or '..'") || reason.contains("'\\'"), "{text}: {reason}");
    }
    for text in ["a%2f..%2f..%2foutside", "a%5c..", "a%00b", "%ff%fe"] {
        let (reason, forbidden) = refusal(f.api(text));
        assert!(!forbidden && reason.contains(&text[..2]), "{text}: {reason}");
    }
    let (_, forbidden) = refusal(f.api("../x"));
    assert!(!forbidden);
}

#[test]
fn absolute_paths_and_file_urls_outside_the_lake_are_forbidden() {
    let f = Fixture::new();
    let tmp = f.tmp.display();
    for text in [
        format!("{tmp}/outside"),
        format!("{tmp}/lake2"),
        format!("{tmp}/lake/../outside"),
        format!("file://{tmp}/outside"),
        format!("file://{tmp}/lake/%2e%2e/outside"),
        format!("file://localhost{tmp}/outside"),
        format!("file:///{tmp}/outside"),
        "/".to_string(),
        "/etc".to_string(),
    ] {
        let (reason, forbidden) = refusal(f.api(&text));
        assert!(forbidden && reason.contains("tarn crawl"), "{text}: {reason}");
    }
    // A file:// URL naming another host is not a local path at all.
    let (reason, forbidden) = refusal(f.api(&format!("file://evil{tmp}/lake")));
    assert!(!forbidden, "{reason}");
    assert!(refusal(f.api("memory://")).0.contains("nothing to crawl"));
}

/// Before, a path that did not exist was compared as written, without resolving the links on
/// its way: `out/new` (with `out` a link to outside the lake) and a dangling link `dl` were
/// accepted, so the answer (403, or 400 "does not exist" later) told whether a path outside
/// the lake existed, and whatever appeared there before the crawl would have been read.
#[test]
fn links_on_the_way_are_judged_by_where_they_lead_even_to_paths_that_do_not_exist() {
    let f = Fixture::new();
    let lake = f.lake.display();
    for text in [
        "out".to_string(),
        "out/x".to_string(),
        "out/new".to_string(),
        "abs/new/deeper".to_string(),
        format!("{lake}/out/new"),
        format!("file://{lake}/abs/new"),
        "dl".to_string(),
        "dl/new".to_string(),
        "loop".to_string(),
    ] {
        let (reason, forbidden) = refusal(f.api(&text));
        assert!(forbidden, "{text}: {reason}");
    }
    assert!(f.api("imports/new/deeper").is_ok());
}

/// Before, a lake opened through a link (`--lake /srv/alias`) refused every directory that
/// did not exist yet: the lake was resolved, the path was not.
#[test]
fn a_lake_opened_through_a_link_takes_paths_that_do_not_exist_yet() {
    let f = Fixture::new();
    let alias = f.tmp.join("alias");
    symlink(&f.lake, &alias).unwrap();
    let through = LakeLocation::parse(alias.to_str().unwrap()).unwrap();
    let location = locate(&through, "imports/new", CrawlFrom::Api).unwrap();
    assert!(location.url().as_str().ends_with("/alias/imports/new/"), "{location}");
    assert!(locate(&through, "out/new", CrawlFrom::Api).is_err());
}

#[test]
fn the_command_line_reads_what_its_user_can() {
    let f = Fixture::new();
    let outside = f.tmp.join("outside");
    let location = locate(&f.location, outside.to_str().unwrap(), CrawlFrom::CommandLine).unwrap();
    assert_eq!(location.confined_to(), None);
    assert!(recheck(&location).is_ok());
    assert!(locate(&f.location, "s3://bucket/x", CrawlFrom::Api).unwrap().confined_to().is_none());
}

#[test]
fn below_encodes_each_segment() {
    let base = Url::parse("file:///data/crawl/").unwrap();
    let url = |segments: &[&str]| {
        below(&base, &segments.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .map(|u| u.to_string())
    };
    assert_eq!(url(&[]).unwrap(), "file:///data/crawl/");
    assert_eq!(url(&["a b", "c"]).unwrap(), "file:///data/crawl/a%20b/c/");
    assert_eq!(url(&["%2e%2e"]).unwrap(), "file:///data/crawl/%252e%252e/");
    assert_eq!(url(&["a?b#c\\d"]).unwrap(), "file:///data/crawl/a%3Fb%23c%5Cd/");
    assert_eq!(url(&[".."]), None);
    let s3 = Url::parse("s3://bucket/").unwrap();
    assert_eq!(below(&s3, &["k".to_string()]).unwrap().as_str(), "s3://bucket/k/");
}

/// Where `path` really is by a second reading: every ancestor resolved by the OS, a link that
/// cannot be resolved is nowhere.
fn really_inside(path: &FsPath, real_lake: &FsPath) -> bool {
    for ancestor in path.ancestors() {
        if let Ok(real) = std::fs::canonicalize(ancestor) {
            return real.join(path.strip_prefix(ancestor).unwrap()).starts_with(real_lake);
        }
        if ancestor.symlink_metadata().is_ok_and(|m| m.is_symlink()) {
            return false;
        }
    }
    false
}

/// Location texts: a start (nothing, `/`, `file://` forms, `s3://`, the lake's path, paths
/// beside it) and pieces (`..`, `.`, encoded dots and slashes, links, names) joined by `/`,
/// `\` and `//`; or any string at all.
fn location_text(tmp: &FsPath) -> impl Strategy<Value = String> {
    let tmp = tmp.display().to_string();
    let start = prop_oneof![
        Just(String::new()),
        Just("/".to_string()),
        Just("file://".to_string()),
        Just("file:///".to_string()),
        Just("file://localhost".to_string()),
        Just("file://host".to_string()),
        Just("FILE://".to_string()),
        Just("s3://bucket/".to_string()),
        Just(format!("{tmp}/lake/")),
        Just(format!("file://{tmp}/lake/")),
        Just(format!("{tmp}/lake2/")),
        Just(format!("{tmp}/")),
    ];
    let piece = prop_oneof![
        prop::sample::select(vec![
            "..", ".", "%2e", "%2E%2e", ".%2e", "%2e.", "%2f", "%5c", "%00", "%", "imports",
            "sales", "out", "abs", "dl", "loop", "in", "new", "outside", "lake", "lake2", "x",
            "file.csv", "~", "file:", "a b", "?x", "#y", "",
        ])
        .prop_map(str::to_string),
        "[a-z.%2eE\\\\/]{1,6}",
    ];
    let separator = prop::sample::select(vec!["/", "\\", "//", "/./"]);
    let composed =
        (start, prop::collection::vec((piece, separator), 0..8)).prop_map(|(start, pieces)| {
            pieces.into_iter().fold(start, |text, (piece, sep)| format!("{text}{piece}{sep}"))
        });
    prop_oneof![4 => composed, 1 => any::<String>()]
}

/// Over the API, no text yields a local location outside the lake's real directory, and
/// none panics.
#[test]
fn prop_api_locations_never_leave_the_lake() {
    let f = Fixture::new();
    let real_lake = std::fs::canonicalize(&f.lake).unwrap();
    let mut runner = TestRunner::new(Config::default());
    let result = runner.run(&location_text(&f.tmp), |text| {
        match f.api(&text) {
            Err(Error::Location { .. }) => {}
            Err(other) => return Err(TestCaseError::fail(format!("{text:?}: {other}"))),
            Ok(location) => {
                let url = location.url();
                match url.scheme() {
                    "s3" => {}
                    "file" => {
                        let path = url.to_file_path().expect("a local path");
                        prop_assert!(
                            really_inside(&path, &real_lake),
                            "{text:?} gave {url}, outside the lake"
                        );
                        prop_assert!(recheck(&location).is_ok(), "{text:?}");
                    }
                    other => prop_assert!(false, "{text:?} gave the scheme {other}"),
                }
            }
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
