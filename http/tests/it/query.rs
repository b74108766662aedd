//! SQL over HTTP: results stream in every format.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tarn_lake::backend_tests;
use tarn_lake::test_util::Backend;
use tarn_query::QueryConfig;
use tower::ServiceExt;

use crate::support::Fixture;

backend_tests!(streams_large_results);

async fn streams_large_results(backend: Backend) {
    let query = QueryConfig { batch_size: 1000, ..QueryConfig::default() };
    let f = Fixture::with_query(backend, |_| {}, query).await;
    let router = f.router.clone();
    for (accept, check) in
        [("application/json", 0usize), ("text/csv", 1), ("application/x-ndjson", 2)]
    {
        let request = Request::builder()
            .method("POST")
            .uri("/v1/sql")
            .header("content-type", "text/plain")
            .header("accept", accept)
            .body(Body::from("SELECT value FROM generate_series(1, 50000)"))
            .unwrap();
        let response = router.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let mut body = response.into_body();
        let (mut frames, mut bytes) = (0, Vec::new());
        while let Some(frame) = body.frame().await {
            frames += 1;
            bytes.extend_from_slice(frame.unwrap().data_ref().unwrap());
        }
        assert!(frames > 10, "{accept}: the result arrives in many chunks, got {frames}");
        match check {
            0 => {
                let value: Value = serde_json::from_slice(&bytes).unwrap();
                let rows = value["rows"].as_array().unwrap();
                assert_eq!(rows.len(), 50_000);
                assert_eq!(rows[49_999][0], 50_000);
            }
            1 => {
                let text = String::from_utf8(bytes).unwrap();
                assert_eq!(text.lines().count(), 50_001);
                assert!(text.starts_with("value\n1\n2\n"));
            }
            _ => assert_eq!(String::from_utf8(bytes).unwrap().lines().count(), 50_000),
        }
    }
}

/// A streamed result gzipped for a client that takes it (a browser): the whole result arrives
/// and decodes. (The gzip encoder polls a body again after its end, which the result stream
/// once answered with a panic: cut-off answers in the console.)
#[tokio::test]
async fn streamed_results_are_gzipped_whole() {
    let f = Fixture::new(Backend::Local, |_| {}).await;
    let request = Request::builder()
        .method("POST")
        .uri("/v1/sql")
        .header("content-type", "text/plain")
        .header("accept", "text/csv")
        .header("accept-encoding", "gzip")
        .body(Body::from("SELECT value FROM generate_series(1, 20000)"))
        .unwrap();
    let response = f.router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-encoding"], "gzip");
    let gzipped = response.into_body().collect().await.unwrap().to_bytes();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gzipped[..]), &mut text)
        .unwrap();
    assert_eq!(text.lines().count(), 20_001);
    assert!(text.ends_with("19999\n20000\n"), "{}", &text[text.len() - 20..]);
    assert!(gzipped.len() * 2 < text.len(), "{} bytes gzipped of {}", gzipped.len(), text.len());
}
