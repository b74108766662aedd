//! Crawls of a local lake with hostile layouts: symbolic links leaving the lake, directory
//! names that read as `..` in a URL, a directory swapped for a link after the check.

use std::os::unix::fs::symlink;
use std::path::PathBuf;
use std::sync::Arc;

use tarn_lake::test_util::{Backend, TestLake};

use super::*;
use crate::DefineStatus;

/// A local lake in a temporary directory, with `outside/secret.csv` beside it.
struct Local {
    _test: TestLake,
    catalog: Catalog,
    lake: PathBuf,
    outside: PathBuf,
}

impl Local {
    async fn new() -> Self {
        let test = TestLake::new(Backend::Local);
        let catalog = Catalog::new(Arc::new(test.open().await));
        let lake = PathBuf::from(&test.location);
        let outside = lake.parent().unwrap().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("secret.csv"), "password,user\nhunter2,root\n").unwrap();
        Local { _test: test, catalog, lake, outside }
    }

    fn write(&self, relative: &str, text: &str) {
        let path = self.lake.join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn url(&self, relative: &str) -> String {
        format!("{}{relative}", Url::from_directory_path(&self.lake).unwrap())
    }

    async fn crawl(&self, location: &str, from: CrawlFrom) -> Result<CrawlReport> {
        let crawler = Crawler::new(&self.catalog);
        crawler.crawl(&crawler.location(location, from)?, &CrawlOptions::default()).await
    }
}

fn tables(report: &CrawlReport) -> Vec<(String, String)> {
    report.tables.iter().map(|t| (t.name.clone(), t.location.clone())).collect()
}

/// Before, the crawler followed every link below a crawled directory: over the API, `leak`
/// (a link to a directory outside the lake) became a table whose columns were read from
/// `outside/secret.csv`, and queries of it read that file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_api_links_that_leave_the_lake_are_not_followed() {
    let t = Local::new().await;
    t.write("imports/good/a.csv", "page,ms\n/,120\n");
    t.write("imports/mixed/a.csv", "password,user\nx,y\n");
    symlink(&t.outside, t.lake.join("imports/leak")).unwrap();
    symlink(t.outside.join("secret.csv"), t.lake.join("imports/mixed/b.csv")).unwrap();
    symlink(t.lake.join("imports/good"), t.lake.join("imports/inner")).unwrap();

    let report = t.crawl("imports", CrawlFrom::Api).await.unwrap();
    assert_eq!(
        tables(&report),
        [
            ("good".to_string(), t.url("imports/good/")),
            ("inner".to_string(), t.url("imports/inner/")),
        ]
    );
    let skipped: Vec<(&str, &str)> =
        report.skipped.iter().map(|s| (s.location.as_str(), s.reason.as_str())).collect();
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    assert_eq!(skipped[0].0, t.url("imports/leak/"));
    assert!(skipped[0].1.starts_with("a symbolic link to a place outside the lake"), "{skipped:?}");
    assert_eq!(skipped[1].0, t.url("imports/mixed/"));
    assert!(
        skipped[1].1.contains(&format!("behind {}, a symbolic link", t.url("imports/mixed/b.csv"))),
        "{skipped:?}"
    );
    assert!(skipped.iter().all(|(_, why)| why.contains("tarn crawl")), "{skipped:?}");
    let text = serde_json::to_string(&report).unwrap();
    assert!(!text.contains("secret") && !text.contains("password"), "{text}");
    assert!(t.catalog.definition(&TableName::parse("leak").unwrap()).await.is_err());

    // The command line reads what its user can, links included.
    let report = t.crawl(t.lake.join("imports").to_str().unwrap(), CrawlFrom::CommandLine).await;
    let names: Vec<String> = report.unwrap().tables.into_iter().map(|t| t.name).collect();
    assert_eq!(names, ["good", "inner", "leak", "mixed"]);
}

/// Before, table URLs were made by joining the directory names as URL text: a directory
/// named `%2e%2e` joined as `..`, so crawling the lake's root registered a table over the
/// lake's parent directory, whose queries read every CSV file there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_named_like_an_encoded_dot_dot_stays_below_the_crawl() {
    let t = Local::new().await;
    t.write("%2e%2e/a.csv", "page,ms\n/,120\n");
    let lake_url = Url::from_directory_path(&t.lake).unwrap();
    let parent = Url::from_directory_path(t.lake.parent().unwrap()).unwrap();
    assert_eq!(lake_url.join("%2e%2e/").unwrap(), parent, "what the join did");

    let report = t.crawl("", CrawlFrom::Api).await.unwrap();
    assert_eq!(tables(&report), [("t_2e_2e".to_string(), t.url("%252e%252e/"))]);
    let source = Url::parse(&report.tables[0].location).unwrap();
    assert_eq!(source.to_file_path().unwrap(), t.lake.join("%2e%2e"));
}

/// Before, the check was made once: a directory replaced by a link to outside the lake
/// between the check and the crawl was crawled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_location_is_checked_again_when_the_crawl_starts() {
    let t = Local::new().await;
    t.write("imports/sales/a.csv", "page,ms\n/,120\n");
    let crawler = Crawler::new(&t.catalog);
    let location = crawler.location("imports/sales", CrawlFrom::Api).unwrap();
    std::fs::remove_dir_all(t.lake.join("imports/sales")).unwrap();
    symlink(&t.outside, t.lake.join("imports/sales")).unwrap();
    match crawler.crawl(&location, &CrawlOptions::default()).await {
        Err(Error::Location { forbidden: true, reason, .. }) => {
            assert!(reason.contains("inside the lake"), "{reason}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crawl_registers_once_and_then_reports_unchanged() {
    let t = Local::new().await;
    t.write("imports/sales/year=2025/a.csv", "id,amount\n1,10\n");
    t.write("imports/sales/year=2026/b.csv", "id,amount\n2,20\n");
    let first = t.crawl("imports", CrawlFrom::Api).await.unwrap();
    let table = &first.tables[0];
    assert_eq!((table.name.as_str(), table.status), ("sales", DefineStatus::Created));
    assert_eq!(
        (table.partition_columns.clone(), table.partitions, table.files),
        (vec!["year".into()], 2, 2)
    );
    let again = t.crawl("imports", CrawlFrom::Api).await.unwrap();
    assert_eq!(again.tables[0].status, DefineStatus::Unchanged);
}
