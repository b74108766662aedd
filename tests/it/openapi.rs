//! The HTTP API's OpenAPI document, `GET /v1/openapi.json`, checked by the reference
//! validator (`openapi-spec-validator`, in the test virtualenv).

use serde_json::Value;
use tarn_lake::test_util::{python, Backend};

use crate::support::TestServer;

#[tokio::test]
async fn the_openapi_document_passes_the_validator() {
    let server = TestServer::start(Backend::Local).await;
    let response = server.client.get(server.url("/v1/openapi.json")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let text = response.text().await.unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, &text).unwrap();
    let output = tokio::process::Command::new(python())
        .args(["-m", "openapi_spec_validator", "--schema", "3.1", "--validation-errors", "all"])
        .arg(&file)
        .output()
        .await
        .expect("run python -m openapi_spec_validator");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("openapi-spec-validator: {stdout}{stderr}");
    assert!(output.status.success(), "the validator refused the document:\n{stdout}\n{stderr}");
    assert!(stdout.contains("OK"), "the validator did not say OK:\n{stdout}\n{stderr}");

    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{}", doc["openapi"]);
    assert!(doc["info"]["version"].as_str().is_some_and(|v| !v.is_empty()));
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
    let sql = &doc["paths"]["/v1/sql"]["post"];
    let ok = &sql["responses"]["200"]["content"];
    for format in [
        "application/json",
        "application/x-ndjson",
        "text/csv",
        "application/vnd.apache.arrow.stream",
        "application/vnd.apache.parquet",
    ] {
        assert!(ok[format].is_object(), "POST /v1/sql does not document 200 as {format}: {ok}");
    }
    for status in ["400", "429"] {
        let error = &sql["responses"][status]["content"]["application/json"]["schema"]["$ref"];
        assert_eq!(error, "#/components/schemas/ErrorBody", "POST /v1/sql {status}");
    }
    assert!(sql["responses"]["429"]["headers"]["Retry-After"].is_object());
    let body = &sql["requestBody"]["content"];
    assert!(body["application/json"].is_object() && body["text/plain"].is_object(), "{body}");
    let paths = doc["paths"].as_object().unwrap();
    let operations: usize = paths.values().map(|item| item.as_object().unwrap().len()).sum();
    println!("{operations} operations on {} paths", paths.len());
}
