//! The ingest router without a socket (`tower::ServiceExt::oneshot`), on a temp dir and on S3.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tarn_catalog::{Catalog, TableName};
use tarn_ingest::{IngestConfig, Ingestor};
use tarn_lake::backend_tests;
use tarn_lake::test_util::{Backend, TestLake};
use tower::ServiceExt;

struct Fixture {
    _lake: TestLake,
    catalog: Arc<Catalog>,
    router: axum::Router,
}

async fn fixture(backend: Backend, config: IngestConfig) -> Fixture {
    let lake = TestLake::new(backend);
    let catalog = Arc::new(Catalog::new(Arc::new(lake.open().await)));
    let router = tarn_ingest::router(Arc::new(Ingestor::new(catalog.clone(), config)));
    Fixture {
        _lake: lake,
        catalog,
        router,
    }
}

async fn post(
    router: &axum::Router,
    uri: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (StatusCode, Value) {
    let mut request = Request::builder().method("POST").uri(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = router
        .clone()
        .oneshot(request.body(Body::from(body)).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap())
}

backend_tests!(appends_one_commit_per_request, refuses_what_it_cannot_take);

async fn appends_one_commit_per_request(backend: Backend) {
    let f = fixture(backend, IngestConfig::default()).await;
    let ndjson = [("content-type", "application/x-ndjson")];
    let (status, receipt) = post(
        &f.router,
        "/v1/ingest/web.clicks",
        &ndjson,
        b"{\"page\": \"/\", \"ms\": 12}\n{\"page\": \"/buy\", \"ms\": 40}".to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{receipt}");
    assert_eq!(
        receipt,
        json!({"table": "web.clicks", "accepted": 2, "version": 1, "created": true})
    );

    // curl -d sends application/x-www-form-urlencoded; a JSON body is still read as JSON.
    let form = [("content-type", "application/x-www-form-urlencoded")];
    let (status, receipt) = post(
        &f.router,
        "/v1/ingest/web.clicks",
        &form,
        br#"[{"page": "/a"}, {"ms": 3}]"#.to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{receipt}");
    assert_eq!(receipt["version"], 2);

    let (_, table) = f
        .catalog
        .open(&TableName::parse("web.clicks").unwrap())
        .await
        .unwrap();
    let stats = table.stats();
    assert_eq!((stats.version, stats.rows), (2, Some(4)));
    let history = table.history(10).await.unwrap();
    assert_eq!(
        history.iter().map(|c| c.rows_added).collect::<Vec<_>>(),
        vec![Some(2), Some(2), Some(0)]
    );
}

async fn refuses_what_it_cannot_take(backend: Backend) {
    let config = IngestConfig {
        auto_create: true,
        max_body_bytes: 1024,
    };
    let f = fixture(backend, config).await;
    let json = [("content-type", "application/json")];

    let (status, body) = post(&f.router, "/v1/ingest/t", &json, vec![b' '; 2048]).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(body["error"]["code"], "payload_too_large");

    let gzip = [
        ("content-type", "application/json"),
        ("content-encoding", "br"),
    ];
    let (status, body) = post(&f.router, "/v1/ingest/t", &gzip, br#"{"a": 1}"#.to_vec()).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("'br'"),
        "{body}"
    );

    // A first body that is not an object cannot define a table.
    let (status, body) = post(&f.router, "/v1/ingest/t", &json, b"[1, 2]".to_vec()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(
        body["error"]["message"],
        "line 1: expected a JSON object, got a number"
    );
    assert!(
        f.catalog.list().await.unwrap().is_empty(),
        "a refused first write creates nothing"
    );

    // Names other engines cannot read as Parquet columns are refused, naming the field.
    let (status, body) = post(
        &f.router,
        "/v1/ingest/t",
        &json,
        br#"{"ok": 1, "nested": {"a b,c": 1}}"#.to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("'nested.a b,c'"), "{message}");
    assert!(f.catalog.list().await.unwrap().is_empty());
}
