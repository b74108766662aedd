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

backend_tests!(
    create_list_describe_delete,
    concurrent_create_registers_once,
    names_stored_by_tarn_0_1_stay_readable,
    names_show_own_changes_at_once_and_others_within_the_ttl,
    a_listing_renews_only_definitions_it_shows_unchanged
);

/// The table names every query plans with are listed at most every `DEFINITION_TTL`: this
/// catalog's own creates and drops show at once, another server's within the TTL.
async fn names_show_own_changes_at_once_and_others_within_the_ttl(backend: Backend) {
    let test = TestLake::new(backend);
    let catalog = Catalog::new(Arc::new(test.open().await));
    let other = Catalog::new(Arc::new(test.open().await));
    let (a, b) = (TableName::parse("a").unwrap(), TableName::parse("b").unwrap());
    let names = |list: Vec<TableName>| list.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    assert!(catalog.names().await.unwrap().is_empty());
    catalog.create(&a, &schema(), &[], "api").await.unwrap();
    assert_eq!(names(catalog.names().await.unwrap()), ["default.a"], "its own create, at once");
    other.create(&b, &schema(), &[], "api").await.unwrap();
    assert_eq!(names(catalog.names().await.unwrap()), ["default.a"], "another's, not yet");
    // ... but its definition is read at once: a query naming it finds it.
    assert_eq!(catalog.definition(&b).await.unwrap().name().to_string(), "default.b");
    tokio::time::sleep(tarn_catalog::DEFINITION_TTL).await;
    assert_eq!(names(catalog.names().await.unwrap()), ["default.a", "default.b"]);
    catalog.delete(&a, false).await.unwrap();
    assert_eq!(names(catalog.names().await.unwrap()), ["default.b"], "its own drop, at once");
}

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

/// Tarn 0.1 allowed names beginning with `_`. Found in review: listing such a table panicked
/// (`TableDefinition::name` validated with today's rules), so did every crawl; and a stored
/// document whose name is no name at all must be an error, not a panic either.
async fn names_stored_by_tarn_0_1_stay_readable(backend: Backend) {
    use object_store::{ObjectStoreExt, PutPayload};
    let test = TestLake::new(backend);
    let catalog = Catalog::new(Arc::new(test.open().await));
    let old = TableName::parse("old").unwrap();
    catalog.create(&old, &schema(), &[], "api").await.unwrap();
    let store = catalog.lake().store().clone();
    let prefix = object_store::path::Path::from("_tarn/catalog/tables/default/old");
    let listed: Vec<_> =
        futures::TryStreamExt::try_collect(store.list(Some(&prefix))).await.unwrap();
    let document = listed[0].location.clone();
    let file = document.filename().unwrap().to_string();
    let text =
        String::from_utf8(store.get(&document).await.unwrap().bytes().await.unwrap().to_vec())
            .unwrap();
    assert!(text.contains(r#""name": "old""#), "{text}");
    // The same table, as Tarn 0.1 would have stored it under `_old`.
    let legacy = text.replace(r#""name": "old""#, r#""name": "_old""#);
    let path = object_store::path::Path::from(format!("_tarn/catalog/tables/default/_old/{file}"));
    store.put(&path, PutPayload::from(legacy.into_bytes())).await.unwrap();
    catalog.delete(&old, false).await.unwrap();

    let names: Vec<String> =
        catalog.list().await.unwrap().iter().map(|d| d.name().to_string()).collect();
    assert_eq!(names, vec!["default._old"]);
    let stored = TableName::stored("default", "_old").unwrap();
    assert_eq!(catalog.definition(&stored).await.unwrap().name(), stored);
    assert!(TableName::parse("_old").is_err(), "new tables still may not begin with '_'");

    // A document whose name is not a name: an error that names the document.
    let broken = text.replace(r#""name": "old""#, r#""name": "no-name!""#);
    let path =
        object_store::path::Path::from(format!("_tarn/catalog/tables/default/broken/{file}"));
    store.put(&path, PutPayload::from(broken.into_bytes())).await.unwrap();
    let error = catalog.list().await.unwrap_err();
    assert!(matches!(error, Error::Document { .. }), "{error:?}");
    assert!(error.to_string().contains("default/broken"), "{error}");
}

/// Listing the names renews the cached definitions whose documents it shows unchanged (so a
/// query reads no definition then); a table another server dropped and created again under the
/// same name, at the same revision, is a new document, read anew once the TTL has passed.
async fn a_listing_renews_only_definitions_it_shows_unchanged(backend: Backend) {
    let test = TestLake::new(backend);
    let catalog = Catalog::new(Arc::new(test.open().await));
    let other = Catalog::new(Arc::new(test.open().await));
    let b = TableName::parse("b").unwrap();
    let (first, _) = other.create(&b, &schema(), &[], "api").await.unwrap();
    assert_eq!(catalog.definition(&b).await.unwrap().created_at, first.created_at);

    tokio::time::sleep(tarn_catalog::DEFINITION_TTL).await;
    catalog.names().await.unwrap();
    other.delete(&b, false).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let (second, _) = other.create(&b, &schema(), &[], "api").await.unwrap();
    assert_eq!(second.revision, first.revision, "the same name and revision, a new table");
    assert_ne!(second.created_at, first.created_at);

    tokio::time::sleep(tarn_catalog::DEFINITION_TTL).await;
    catalog.names().await.unwrap();
    assert_eq!(
        catalog.definition(&b).await.unwrap().created_at,
        second.created_at,
        "the listing shows another document: it is read again"
    );
}
