//! Unique keys are enforced per server: two servers ingesting into one lake refuse records for
//! a table with a `unique_key` (409, naming the other server and the way out), unless started
//! with `--unique-key-scope=node`; tables without a unique key are not concerned, and a server
//! that stops is forgotten at once.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tarn_ingest::UniqueKeyScope;
use tarn_lake::backend_tests;
use tarn_lake::test_util::Backend;

use crate::support::TestServer;

backend_tests!(unique_keys_are_refused_while_another_server_ingests);

async fn post(server: &TestServer, table: &str, body: &str) -> (u16, Value) {
    let response = server
        .client
        .post(server.url(&format!("/v1/ingest/{table}")))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

/// Posts a record with a new e-mail address (`<prefix><n>@example.com`) to `table` on
/// `server` until the answer's status is `wanted` (a server looks at the others at most every
/// few seconds, so records sent meanwhile may be taken), failing after 30 s with the last
/// answer. Answers the last answer and the address it was for.
async fn until(server: &TestServer, table: &str, prefix: &str, wanted: u16) -> (Value, String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    for n in 0.. {
        let email = format!("{prefix}{n}@example.com");
        let (status, answer) = post(server, table, &format!(r#"{{"email": "{email}"}}"#)).await;
        if status == wanted {
            return (answer, email);
        }
        assert!(Instant::now() < deadline, "never {wanted}: last {status} {answer}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    unreachable!()
}

async fn unique_keys_are_refused_while_another_server_ingests(backend: Backend) {
    let first = TestServer::start(backend).await;
    let definition = json!({
        "columns": [{"name": "email", "type": "string", "nullable": false}],
        "unique_key": ["email"]
    });
    let (status, body) = first.define("leads", definition).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = post(&first, "leads", r#"{"email": "a@example.com"}"#).await;
    assert_eq!(status, 202, "alone, the server enforces its keys: {body}");

    // A second server on the same lake.
    let second = TestServer::start_on(first.lake.alias(), |_| {}).await;
    let (refused, b) = until(&second, "leads", "b", 409).await;
    let message = refused["error"]["message"].as_str().unwrap();
    assert_eq!(refused["error"]["code"], "conflict");
    assert!(message.contains("table 'default.leads' has a unique key"), "{message}");
    assert!(message.contains("--unique-key-scope=node"), "{message}");
    assert!(message.contains("(serve)"), "names the other process: {message}");
    // The first server sees the second too.
    let (_, c) = until(&first, "leads", "c", 409).await;
    // Tables without a unique key are not concerned.
    let (status, body) = post(&second, "events", r#"{"id": 1}"#).await;
    assert_eq!(status, 202, "{body}");

    // A server told that each enforces its own keys takes them.
    let third = TestServer::start_on(first.lake.alias(), |c| {
        c.ingest.unique_key_scope = UniqueKeyScope::Node;
    })
    .await;
    let (status, body) =
        third.ingest("leads", "application/json", r#"{"email": "d@example.com"}"#).await;
    assert_eq!(status, 200, "{body}");

    // The others stop: the first is alone again and takes records.
    drop(second);
    drop(third);
    let (_, e) = until(&first, "leads", "e", 202).await;
    let (status, body) =
        first.ingest("leads", "application/json", r#"{"email": "f@example.com"}"#).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = first.sql("SELECT email FROM leads ORDER BY email").await;
    assert_eq!(status, 200, "{body}");
    let emails: Vec<&str> =
        body["rows"].as_array().unwrap().iter().map(|r| r[0].as_str().unwrap()).collect();
    for email in ["a@example.com", "d@example.com", e.as_str(), "f@example.com"] {
        assert!(emails.contains(&email), "{email} missing: {emails:?}");
    }
    assert!(!emails.contains(&b.as_str()) && !emails.contains(&c.as_str()), "{emails:?}");
}
