//! The OpenAPI document against the router: every route is documented and every documented
//! operation is a route, with the scope its route needs; real answers fit the documented
//! schemas.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tarn_http::Need;
use tarn_lake::test_util::Backend;
use tower::ServiceExt;

use crate::support::{call, Fixture};

/// The methods an OpenAPI path item may hold.
const METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

fn document() -> Value {
    serde_json::to_value(tarn_http::openapi::document()).expect("the document serializes")
}

/// An axum path template as OpenAPI writes it: `{*path}` is `{path}`.
fn openapi_path(path: &str) -> String {
    path.replace("{*", "{")
}

#[tokio::test]
async fn every_route_is_documented_and_every_operation_is_routed() {
    let f = Fixture::new(Backend::Local, |_| {}).await;
    let doc = document();
    let routed: BTreeSet<(String, String)> = f
        .routes
        .iter()
        .map(|r| (r.method.as_str().to_ascii_lowercase(), openapi_path(&r.path)))
        .collect();
    assert_eq!(routed.len(), f.routes.len(), "a method is routed twice at a path: {:?}", f.routes);
    let paths = doc["paths"].as_object().expect("the document has paths");
    let documented: BTreeSet<(String, String)> = paths
        .iter()
        .flat_map(|(path, item)| {
            METHODS
                .iter()
                .filter(|m| item.get(**m).is_some())
                .map(|m| (m.to_string(), path.clone()))
        })
        .collect();
    let undocumented: Vec<_> = routed.difference(&documented).collect();
    let unrouted: Vec<_> = documented.difference(&routed).collect();
    assert!(undocumented.is_empty(), "routes missing from the OpenAPI document: {undocumented:?}");
    assert!(unrouted.is_empty(), "documented operations without a route: {unrouted:?}");
    println!("{} operations on {} paths, all routed", documented.len(), paths.len());

    let mut ids = BTreeSet::new();
    for (path, item) in paths {
        for method in METHODS.iter().filter(|m| item.get(**m).is_some()) {
            let id = item[*method]["operationId"].as_str().unwrap_or_default();
            assert!(ids.insert(id), "{method} {path}: operationId {id:?} is not unique");
        }
    }

    let tags: BTreeSet<&str> =
        doc["tags"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    for route in &f.routes {
        let method = route.method.as_str().to_ascii_lowercase();
        let path = openapi_path(&route.path);
        let operation = &doc["paths"][&path][&method];
        let at = format!("{} {path}", route.method);
        // The scope the route needs is the one its documentation names.
        let description = operation["description"].as_str().unwrap_or("");
        let scope = format!("Scope: `{}`", route.need.scope());
        assert!(description.contains(&scope), "{at} needs {scope} but says: {description:?}");
        assert_eq!(
            description.matches("Scope: ").count(),
            1,
            "{at} names one scope: {description:?}"
        );
        assert!(operation["summary"].as_str().is_some_and(|s| !s.is_empty()), "{at}: no summary");
        let tag = operation["tags"][0].as_str().unwrap_or("");
        assert!(tags.contains(tag), "{at}: tag {tag:?} is not one of {tags:?}");
        // Open routes lift the document's key requirement; the others keep it.
        let open = operation["security"].as_array().is_some_and(|s| s.contains(&json!({})));
        assert_eq!(open, route.need == Need::Open, "{at}: security {}", operation["security"]);
        // Routes behind a key say what happens without one, and what is answered over a limit.
        if route.need != Need::Open {
            for status in ["401", "403", "429"] {
                let response = &operation["responses"][status];
                assert!(response.is_object(), "{at} does not document {status}");
                assert_eq!(
                    response["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/ErrorBody",
                    "{at}: {status}"
                );
            }
        }
        // 429 and 503 say when to try again.
        for status in ["429", "503"] {
            if let Some(response) = operation["responses"].get(status) {
                assert!(response["headers"]["Retry-After"].is_object(), "{at}: {status}");
            }
        }
        // Path parameters are documented, and only those of the path.
        let mut declared: Vec<&str> = operation["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["in"] == "path")
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        declared.sort_unstable();
        let mut in_path: Vec<&str> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .collect();
        in_path.sort_unstable();
        assert_eq!(declared, in_path, "{at}: path parameters");
    }
}

#[tokio::test]
async fn the_document_is_served_as_openapi_3_1() {
    let f = Fixture::new(Backend::Local, |_| {}).await;
    let request = Request::builder().uri("/v1/openapi.json").body(Body::empty()).unwrap();
    let response = f.router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/json");
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let served: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(served["openapi"], "3.1.0");
    assert_eq!(served["info"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(served, document());
    let schemes = &served["components"]["securitySchemes"];
    assert_eq!(
        schemes["bearer"],
        json!({"type": "http", "scheme": "bearer", "description": "`Authorization: Bearer <key>`"})
    );
    assert_eq!(schemes["api_key"]["in"], "header");
    assert_eq!(schemes["api_key"]["name"], "X-Tarn-Key");
    // The error codes are the kinds' names.
    let codes = &served["components"]["schemas"]["ErrorDetail"]["properties"]["code"]["enum"];
    let kinds: Vec<&str> = tarn_lake::ErrorKind::ALL.iter().map(|k| k.as_str()).collect();
    assert_eq!(codes, &json!(kinds));
}

/// Whether `value` fits `schema` (its `$ref`s resolved in `doc`): types, enums, required
/// properties, and no property the schema does not document. `Err` says where it does not.
/// The properties and required fields of an object schema made of `allOf` branches (and
/// `$ref`s), all together.
fn all_of(doc: &Value, schema: &Value) -> (serde_json::Map<String, Value>, Vec<Value>) {
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        let name = reference.strip_prefix("#/components/schemas/").expect("a local reference");
        return all_of(doc, &doc["components"]["schemas"][name]);
    }
    let mut properties =
        schema.get("properties").and_then(Value::as_object).cloned().unwrap_or_default();
    let mut required =
        schema.get("required").and_then(Value::as_array).cloned().unwrap_or_default();
    for branch in schema.get("allOf").and_then(Value::as_array).into_iter().flatten() {
        let (more, needed) = all_of(doc, branch);
        properties.extend(more);
        required.extend(needed);
    }
    (properties, required)
}

fn fits(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        let name = reference.strip_prefix("#/components/schemas/").expect("a local reference");
        let target = &doc["components"]["schemas"][name];
        assert!(target.is_object(), "{at}: {reference} is not in the document's components");
        return fits(doc, target, value, &format!("{at} ({name})"));
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(branches) = schema.get(key).and_then(Value::as_array) {
            let errors: Vec<String> =
                branches.iter().filter_map(|b| fits(doc, b, value, at).err()).collect();
            if errors.len() == branches.len() {
                return Err(format!("{at}: fits none of {key}: {}", errors.join(" | ")));
            }
        }
    }
    if schema.get("allOf").is_some() {
        // The branches describe one object together: a field is documented when one of them
        // documents it, and required when one of them requires it.
        let (properties, required) = all_of(doc, schema);
        let merged =
            serde_json::json!({"type": "object", "properties": properties, "required": required});
        return fits(doc, &merged, value, at);
    }
    if let Some(types) = schema.get("type") {
        let types: Vec<&str> = match types {
            Value::String(t) => vec![t.as_str()],
            Value::Array(list) => list.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let actual = match value {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(n) if n.is_u64() || n.is_i64() => "integer",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        };
        let number = actual == "integer" && types.contains(&"number");
        if !(types.contains(&actual) || number) {
            return Err(format!("{at}: {value} is {actual}, documented as {types:?}"));
        }
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        if !values.contains(value) {
            return Err(format!("{at}: {value} is not one of {values:?}"));
        }
    }
    if let (Some(properties), Value::Object(map)) =
        (schema.get("properties").and_then(Value::as_object), value)
    {
        for name in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
            let name = name.as_str().unwrap();
            if !map.contains_key(name) {
                return Err(format!("{at}: the required '{name}' is missing from {value}"));
            }
        }
        for (name, field) in map {
            match properties.get(name) {
                Some(schema) => fits(doc, schema, field, &format!("{at}.{name}"))?,
                None => return Err(format!("{at}: '{name}' is not documented")),
            }
        }
    }
    if let (Some(items), Value::Array(list)) = (schema.get("items"), value) {
        for (i, item) in list.iter().enumerate() {
            fits(doc, items, item, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

/// Sends a request to the operation `method template` and checks that its status is one the
/// operation documents and that its JSON answer fits the documented schema.
async fn checked(
    f: &Fixture,
    doc: &Value,
    (method, template, uri): (&str, &str, &str),
    headers: &[(&str, &str)],
    body: &[u8],
) -> (StatusCode, Value) {
    let (status, answer) = call(&f.router, method, uri, headers, body.to_vec()).await;
    let operation = &doc["paths"][template][method.to_ascii_lowercase()];
    assert!(operation.is_object(), "{method} {template} is not documented");
    let at = format!("{method} {uri} -> {status}");
    let response = &operation["responses"][status.as_str()];
    assert!(response.is_object(), "{at}: status not documented; answer {answer}");
    if answer.is_null() {
        return (status, answer);
    }
    let schema = &response["content"]["application/json"]["schema"];
    assert!(schema.is_object(), "{at}: no JSON schema documented; answer {answer}");
    if let Err(e) = fits(doc, schema, &answer, &at) {
        panic!("{e}\nanswer: {answer}");
    }
    (status, answer)
}

#[tokio::test]
async fn real_answers_fit_their_documented_schemas() {
    let f = Fixture::new(Backend::Local, |_| {}).await;
    let doc = document();
    let json = [("content-type", "application/json")];
    let records = br#"[{"id": 1, "name": "a"}, {"id": 2, "name": null}]"#;

    let (status, _) = checked(&f, &doc, ("GET", "/healthz", "/healthz"), &[], b"").await;
    assert_eq!(status, StatusCode::OK);
    checked(&f, &doc, ("GET", "/readyz", "/readyz"), &[], b"").await;
    checked(&f, &doc, ("GET", "/v1/whoami", "/v1/whoami"), &[], b"").await;

    // Ingest: committed (200), durable (202), a form, a file, the status.
    let ingest = ("POST", "/v1/ingest/{table}", "/v1/ingest/events?wait=commit");
    let (status, receipt) = checked(&f, &doc, ingest, &json, records).await;
    assert_eq!(status, StatusCode::OK, "{receipt}");
    let ingest = ("POST", "/v1/ingest/{table}", "/v1/ingest/events");
    let (status, _) =
        checked(&f, &doc, ingest, &[("content-type", "application/x-ndjson")], b"{\"id\": 3}\n")
            .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let form = [("content-type", "application/x-www-form-urlencoded")];
    let (status, _) = checked(&f, &doc, ingest, &form, b"id=4&name=d").await;
    assert!(status.is_success(), "{status}");
    let (status, _) = checked(&f, &doc, ingest, &[("content-type", "image/png")], b"x").await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let upload = ("POST", "/v1/tables/{table}/files", "/v1/tables/loaded/files?name=a.csv");
    let (status, report) = checked(&f, &doc, upload, &[], b"id,name\n1,a\n2,b\n").await;
    assert_eq!(status, StatusCode::OK, "{report}");
    checked(&f, &doc, ("GET", "/v1/ingest", "/v1/ingest"), &[], b"").await;

    // The catalog.
    checked(&f, &doc, ("GET", "/v1/namespaces", "/v1/namespaces"), &[], b"").await;
    checked(&f, &doc, ("GET", "/v1/tables", "/v1/tables"), &[], b"").await;
    let table = ("GET", "/v1/tables/{table}", "/v1/tables/events");
    let (status, _) = checked(&f, &doc, table, &[], b"").await;
    assert_eq!(status, StatusCode::OK);
    let missing = ("GET", "/v1/tables/{table}", "/v1/tables/nope");
    assert_eq!(checked(&f, &doc, missing, &[], b"").await.0, StatusCode::NOT_FOUND);
    let history = ("GET", "/v1/tables/{table}/history", "/v1/tables/events/history");
    checked(&f, &doc, history, &[], b"").await;
    let definition = json!({
        "comment": "declared",
        "columns": [{"name": "email", "type": "string", "nullable": false}],
        "partition_by": [],
    });
    let put = ("PUT", "/v1/tables/{table}", "/v1/tables/crm.leads");
    let (status, defined) = checked(&f, &doc, put, &json, definition.to_string().as_bytes()).await;
    assert_eq!(status, StatusCode::CREATED, "{defined}");
    let crawl = ("POST", "/v1/crawl", "/v1/crawl");
    checked(&f, &doc, crawl, &json, br#"{"location": "nothing/here"}"#).await;
    let drop = ("DELETE", "/v1/tables/{table}", "/v1/tables/crm.leads");
    assert_eq!(checked(&f, &doc, drop, &[], b"").await.0, StatusCode::NO_CONTENT);

    // SQL, synchronous and async.
    let sql = ("POST", "/v1/sql", "/v1/sql");
    let select = br#"{"sql": "SELECT id, name FROM events ORDER BY id"}"#;
    let (status, result) = checked(&f, &doc, sql, &json, select).await;
    assert_eq!(status, StatusCode::OK, "{result}");
    let (status, _) = checked(&f, &doc, sql, &[("accept", "image/png")], b"SELECT 1").await;
    assert_eq!(status, StatusCode::NOT_ACCEPTABLE);
    let (status, _) = checked(&f, &doc, sql, &json, br#"{"sql": "SELEC"}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let submit = ("POST", "/v1/queries", "/v1/queries");
    let (status, query) = checked(&f, &doc, submit, &json, select).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{query}");
    let uri = format!("/v1/queries/{}", query["id"].as_str().unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, status) = checked(&f, &doc, ("GET", "/v1/queries/{id}", &uri), &[], b"").await;
        if status["state"] == "succeeded" {
            break;
        }
        assert!(Instant::now() < deadline, "the query never finished: {status}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let results = format!("{uri}/results?max_rows=1");
    let page = ("GET", "/v1/queries/{id}/results", results.as_str());
    let (status, page) = checked(&f, &doc, page, &[], b"").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page["next_page_token"].is_string(), "{page}");
    checked(&f, &doc, ("DELETE", "/v1/queries/{id}", &uri), &[], b"").await;

    // Jobs.
    let job = json!({
        "schedule": "@yearly",
        "catch_up": "none",
        "sql": "SELECT count(*) AS n FROM events",
        "into": {"table": "reports.counts", "mode": "replace"},
    });
    let put = ("PUT", "/v1/jobs/{name}", "/v1/jobs/counts");
    let (status, info) = checked(&f, &doc, put, &json, job.to_string().as_bytes()).await;
    assert_eq!(status, StatusCode::CREATED, "{info}");
    checked(&f, &doc, ("GET", "/v1/jobs", "/v1/jobs"), &[], b"").await;
    let run_now = ("POST", "/v1/jobs/{name}/runs", "/v1/jobs/counts/runs");
    let (status, started) = checked(&f, &doc, run_now, &[], b"").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    let uri = format!("/v1/jobs/counts/runs/{}", started["run_id"].as_str().unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let run = ("GET", "/v1/jobs/{name}/runs/{run_id}", uri.as_str());
        let (_, run) = checked(&f, &doc, run, &[], b"").await;
        if run["state"] != "running" {
            assert_eq!(run["state"], "succeeded", "{run}");
            break;
        }
        assert!(Instant::now() < deadline, "the run never ended: {run}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    checked(&f, &doc, ("GET", "/v1/jobs/{name}", "/v1/jobs/counts"), &[], b"").await;
    let runs = ("GET", "/v1/jobs/{name}/runs", "/v1/jobs/counts/runs");
    checked(&f, &doc, runs, &[], b"").await;
    let delete = ("DELETE", "/v1/jobs/{name}", "/v1/jobs/counts");
    assert_eq!(checked(&f, &doc, delete, &[], b"").await.0, StatusCode::NO_CONTENT);
}
