//! Catalog tests, each run on a temp dir and on the S3 test server.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema};
use tarn_catalog::{Catalog, Error, TableName};
use tarn_lake::backend_tests;
use tarn_lake::test_util::{Backend, TestLake};

fn schema() -> Schema {
    Schema::new(vec![
        Field::new("email", DataType::Utf8, true),
        Field::new("score", DataType::Int64, true),
    ])
}

backend_tests!(create_list_describe_delete, concurrent_create_registers_once);

async fn create_list_describe_delete(backend: Backend) {
    let test = TestLake::new(backend);
    let catalog = Catalog::new(Arc::new(test.open().await));
    assert!(catalog.list().await.unwrap().is_empty());

    let leads = TableName::parse("leads").unwrap();
    let clicks = TableName::parse("web.clicks").unwrap();
    catalog.create(&leads, &schema(), &[], "api").await.unwrap();
    catalog.create(&clicks, &schema(), &[], "auto").await.unwrap();
    match catalog.create(&leads, &schema(), &[], "api").await {
        Err(Error::TableExists { name }) => assert_eq!(name, "default.leads"),
        other => panic!("expected TableExists, got {other:?}"),
    }

    let names: Vec<String> =
        catalog.list().await.unwrap().iter().map(|d| d.name().to_string()).collect();
    assert_eq!(names, vec!["default.leads", "web.clicks"]);

    let info = catalog.describe(&leads).await.unwrap();
    assert_eq!(info.stats.version, 0);
    assert_eq!(info.stats.rows, Some(0));
    let columns: Vec<(&str, &str)> =
        info.columns.iter().map(|c| (c.name.as_str(), c.data_type.as_str())).collect();
    assert_eq!(columns, vec![("email", "string"), ("score", "int64")]);
    assert!(info.url.ends_with("/default/leads/"), "{}", info.url);

    // A second catalog on the same lake (another server) sees the same entries.
    let other = Catalog::new(Arc::new(test.open().await));
    assert_eq!(other.definition(&clicks).await.unwrap().created_by, "auto");

    // Delete without purge keeps the data; with purge removes it.
    catalog.delete(&leads, false).await.unwrap();
    assert!(matches!(catalog.definition(&leads).await, Err(Error::TableNotFound { .. })));
    assert!(catalog.lake().table_exists("default/leads").await.unwrap());
    catalog.delete(&clicks, true).await.unwrap();
    assert!(!catalog.lake().table_exists("web/clicks").await.unwrap());
    assert!(catalog.list().await.unwrap().is_empty());
    assert!(matches!(catalog.delete(&clicks, true).await, Err(Error::TableNotFound { .. })));
}

/// Two servers sharing a lake auto-create the same table at once: exactly one entry wins, the
/// other is told the table exists, and the entry is not overwritten.
async fn concurrent_create_registers_once(backend: Backend) {
    let test = TestLake::new(backend);
    let a = Catalog::new(Arc::new(test.open().await));
    let b = Catalog::new(Arc::new(test.open().await));
    let name = TableName::parse("contended").unwrap();
    let schema = schema();
    let (ra, rb) = tokio::join!(
        a.create(&name, &schema, &[], "server-a"),
        b.create(&name, &schema, &[], "server-b")
    );
    let winners: Vec<String> =
        [ra, rb].into_iter().filter_map(|r| r.ok()).map(|(d, _)| d.created_by).collect();
    assert_eq!(winners.len(), 1, "exactly one create wins");
    assert_eq!(a.definition(&name).await.unwrap().created_by, winners[0]);
}
