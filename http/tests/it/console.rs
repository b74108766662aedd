//! The console's files: served with their type, a strong ETag honoured with 304, a strict
//! Content-Security-Policy, gzip for clients that take it; unknown files are 404.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use tarn_lake::test_util::Backend;
use tower::ServiceExt;

use crate::support::Fixture;

async fn get(
    router: &axum::Router,
    uri: &str,
    headers: &[(&str, &str)],
) -> axum::response::Response {
    let mut request = Request::builder().uri(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    router.clone().oneshot(request.body(Body::empty()).unwrap()).await.unwrap()
}

#[tokio::test]
async fn console_files_have_types_etags_and_a_strict_policy() {
    let f = Fixture::new(Backend::Local, |_| {}).await;
    let page = get(&f.router, "/", &[]).await;
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(page.headers()["content-type"], "text/html");
    let policy = page.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(
        policy.contains("script-src 'self';") && policy.contains("frame-ancestors 'none'"),
        "{policy}"
    );
    let etag = page.headers()["etag"].to_str().unwrap().to_string();
    let html = page.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&html).contains("/console/js/app.js"));

    let again = get(&f.router, "/", &[("if-none-match", &etag)]).await;
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    assert!(again.into_body().collect().await.unwrap().to_bytes().is_empty());

    // Modules are only run when served as JavaScript (the answers say nosniff).
    let script = get(&f.router, "/console/js/app.js", &[("accept-encoding", "gzip")]).await;
    assert_eq!(script.status(), StatusCode::OK);
    assert_eq!(script.headers()["content-type"], "text/javascript");
    assert_eq!(script.headers()["x-content-type-options"], "nosniff");
    assert_eq!(script.headers()["content-encoding"], "gzip");

    let missing = get(&f.router, "/console/js/nope.js", &[]).await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let body = missing.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("the console has no file 'js/nope.js'"));
    let escape = get(&f.router, "/console/../Cargo.toml", &[]).await;
    assert_eq!(escape.status(), StatusCode::NOT_FOUND);
}
