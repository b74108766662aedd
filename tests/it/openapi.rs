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

/// The console's API calls are typed from the same document: `http/console-check/api.d.ts` is
/// what openapi-typescript makes of the served document (set `TARN_UPDATE_CONSOLE_TYPES=1` to
/// write it anew after a change of the API), and TypeScript's checker finds no error in the
/// console's JavaScript against it (`http/console-check/jsconfig.json`). Both tools are
/// pinned in `http/console-check/package.json`; scripts/test installs them with `npm ci`.
#[tokio::test]
async fn the_console_is_typed_from_the_openapi_document() {
    let check = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("http/console-check");
    let bin = check.join("node_modules/.bin");
    assert!(
        bin.join("tsc").exists() && bin.join("openapi-typescript").exists(),
        "the console's type checker is not installed: run scripts/test (it runs `npm ci` in \
         http/console-check), or `npm ci --prefix http/console-check`"
    );
    let server = TestServer::start(Backend::Local).await;
    let text = server.client.get(server.url("/v1/openapi.json")).send().await.unwrap();
    let text = text.text().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (document, generated) = (dir.path().join("openapi.json"), dir.path().join("api.d.ts"));
    std::fs::write(&document, &text).unwrap();
    let output = tokio::process::Command::new(bin.join("openapi-typescript"))
        .arg(&document)
        .arg("-o")
        .arg(&generated)
        .current_dir(&check)
        .output()
        .await
        .expect("openapi-typescript runs (node)");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let generated = std::fs::read_to_string(&generated).unwrap();
    let checked_in = check.join("api.d.ts");
    if std::env::var_os("TARN_UPDATE_CONSOLE_TYPES").is_some() {
        std::fs::write(&checked_in, &generated).unwrap();
    }
    let current = std::fs::read_to_string(&checked_in).unwrap_or_default();
    assert!(
        current == generated,
        "http/console-check/api.d.ts is not the API's current description: run this test with \
         TARN_UPDATE_CONSOLE_TYPES=1 to write it anew, then fix what the type check finds"
    );

    let output = tokio::process::Command::new(bin.join("tsc"))
        .args(["-p", "jsconfig.json", "--pretty", "false"])
        .current_dir(&check)
        .output()
        .await
        .expect("tsc runs (node)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "the console does not fit the API's types:\n{stdout}");
    let typed = std::fs::read_to_string(check.join("../console/js/api.js")).unwrap();
    let calls = typed.matches("@returns {Promise<Schemas[").count();
    assert!(calls >= 15, "api.js types {calls} calls by the document's schemas");
    println!("tsc: the console's JavaScript fits api.d.ts ({} lines); {calls} calls typed by the document's schemas", generated.lines().count());
}
