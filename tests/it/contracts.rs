//! Data contracts end to end, on a temp dir and on S3: declared tables, quarantine, evolution,
//! unique keys, raw backup, forms, CSV, uploads, the drop zone and API keys.

use std::time::Duration;

use serde_json::{json, Value};
use tarn_lake::backend_tests;
use tarn_lake::test_util::Backend;

use crate::support::TestServer;

backend_tests!(
    declared_tables_answer_with_their_columns,
    unique_keys_and_raw_backup,
    forms_redirect_refuse_bots_and_answer_cors,
    csv_bodies_uploads_and_resumed_loads,
    drop_zone_loads_archives_and_fails,
    api_keys_guard_every_endpoint,
);

fn leads() -> Value {
    json!({
        "columns": [
            {"name": "email", "type": "string", "nullable": false, "comment": "lead e-mail"},
            {"name": "age", "type": "int32"},
            {"name": "signed_up", "type": "date"},
            {"name": "profile", "type": "json"}
        ],
        "rules": [{"name": "adult", "check": "age >= 18", "message": "must be 18 or older"}],
        "derived": [{"name": "domain", "expr": "split_part(email, '@', 2)"}]
    })
}

/// What lands in a declared table and its `_rejected` table, evolution and bad definitions
/// are in tests/sql/contracts.slt; here the HTTP answers of defining a table.
async fn declared_tables_answer_with_their_columns(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (status, table) = server.define("leads", leads()).await;
    assert_eq!(status, 201, "{table}");
    assert_eq!(table["status"], "created");
    let columns: Vec<(String, String)> = crate::support::column_types(&table);
    assert_eq!(
        columns,
        [
            ("email", "string"),
            ("age", "int32"),
            ("signed_up", "date"),
            ("profile", "json"),
            ("domain", "string")
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    assert_eq!(table["columns"][0]["comment"], "lead e-mail");

    let mut evolved = leads();
    evolved["columns"].as_array_mut().unwrap().push(json!({"name": "country", "type": "string"}));
    let (status, table) = server.define("leads", evolved.clone()).await;
    assert_eq!((status, &table["status"], &table["revision"]), (200, &json!("updated"), &json!(1)));
    let (status, same) = server.define("leads", evolved).await;
    assert_eq!((status, same["status"].clone()), (200, json!("unchanged")));
}

async fn unique_keys_and_raw_backup(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut definition = leads();
    definition["unique_key"] = json!(["email"]);
    definition["raw_backup"] = json!(true);
    let (status, body) = server.define("leads", definition).await;
    assert_eq!(status, 201, "{body}");
    let (_, receipt) = server
        .ingest("leads", "application/x-ndjson", "{\"email\": \"a@x.com\", \"age\": 20}\n{\"email\": \"b@x.com\", \"age\": 30}\n{\"email\": \"a@x.com\", \"age\": 21}")
        .await;
    assert_eq!(
        (receipt["accepted"].clone(), receipt["duplicates"].clone()),
        (json!(2), json!(1)),
        "{receipt}"
    );
    let (_, receipt) = server
        .ingest(
            "leads",
            "application/json",
            r#"[{"email": "b@x.com", "age": 30}, {"email": "c@x.com", "age": 40}]"#,
        )
        .await;
    assert_eq!(
        (receipt["accepted"].clone(), receipt["duplicates"].clone()),
        (json!(1), json!(1)),
        "{receipt}"
    );

    // Another server on the same lake, each enforcing its own keys, reads them from the table.
    let other = TestServer::start_on(server.lake.alias(), |c| {
        c.ingest.unique_key_scope = tarn_ingest::UniqueKeyScope::Node;
    })
    .await;
    let (_, receipt) = other
        .ingest(
            "leads",
            "application/json",
            r#"[{"email": "c@x.com", "age": 40}, {"email": "d@x.com", "age": 50}]"#,
        )
        .await;
    assert_eq!(
        (receipt["accepted"].clone(), receipt["duplicates"].clone()),
        (json!(1), json!(1)),
        "{receipt}"
    );
    let rows = other.rows("SELECT email FROM leads ORDER BY email").await;
    assert_eq!(
        rows,
        vec![json!(["a@x.com"]), json!(["b@x.com"]), json!(["c@x.com"]), json!(["d@x.com"])]
    );

    // Every request's payload is kept as it came.
    let raw = other
        .rows("SELECT payload, content_type, source FROM leads_raw ORDER BY received_at")
        .await;
    assert_eq!(raw.len(), 3, "{raw:?}");
    assert!(raw[0][0].as_str().unwrap().contains("\"a@x.com\", \"age\": 21"), "{raw:?}");
    assert_eq!(raw[1][1], "application/json");
    assert_eq!(raw[2][2], "http");
}

async fn forms_redirect_refuse_bots_and_answer_cors(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (status, body) = server
        .define(
            "signups",
            json!({
                "columns": [
                    {"name": "email", "type": "string", "nullable": false},
                    {"name": "newsletter", "type": "boolean"},
                    {"name": "interests", "type": "json"}
                ],
                "rules": [{"name": "email_like", "check": "email LIKE '%@%'", "message": "enter a valid e-mail address"}],
                "raw_backup": true,
                "forms": {
                    "allowed_origins": ["https://www.example.com"],
                    "success_url": "https://www.example.com/thanks",
                    "error_url": "https://www.example.com/oops",
                    "honeypot": "website"
                }
            }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let browser =
        reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let post = |body: &'static str, query: &'static str| {
        browser
            .post(server.url(&format!("/v1/ingest/signups{query}")))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("origin", "https://www.example.com")
            .body(body)
            .send()
    };
    let ok =
        post("email=ada%40example.com&newsletter=on&interests=rust&interests=data&website=", "")
            .await
            .unwrap();
    assert_eq!(ok.status(), 303);
    assert_eq!(ok.headers()["location"], "https://www.example.com/thanks");
    let redirected =
        post("email=bob%40example.com", "?redirect=https%3A%2F%2Fwww.example.com%2Fwelcome")
            .await
            .unwrap();
    assert_eq!(redirected.headers()["location"], "https://www.example.com/welcome");
    let bad = post("email=not-an-address", "").await.unwrap();
    assert_eq!(bad.status(), 303);
    assert_eq!(
        bad.headers()["location"],
        "https://www.example.com/oops?error=enter+a+valid+e-mail+address"
    );
    let bot = post("email=bot%40spam.test&website=http%3A%2F%2Fspam.test", "").await.unwrap();
    assert_eq!(bot.status(), 303, "bots see a success");
    let evil = post("email=c%40example.com", "?redirect=https%3A%2F%2Fevil.test%2F").await.unwrap();
    assert_eq!(evil.status(), 400);

    // Multipart forms are read the same way.
    let form =
        reqwest::multipart::Form::new().text("email", "dan@example.com").text("newsletter", "off");
    let multipart =
        browser.post(server.url("/v1/ingest/signups")).multipart(form).send().await.unwrap();
    assert_eq!(multipart.status(), 303);

    // A last request, with `?wait=commit`, that writes to all three tables: once it is
    // answered, every post before it is committed too (each table commits in the order of
    // the write-ahead log), so what is absent now was never stored.
    let (status, receipt) = server
        .ingest(
            "signups",
            "application/json",
            r#"[{"email": "zed@example.com"}, {"email": "no-at"}]"#,
        )
        .await;
    assert_eq!((status, &receipt["accepted"], &receipt["rejected"]), (200, &json!(1), &json!(1)));
    let rows = server.rows("SELECT email, newsletter, interests FROM signups ORDER BY email").await;
    assert_eq!(
        rows,
        vec![
            json!(["ada@example.com", true, "[\"rust\",\"data\"]"]),
            json!(["bob@example.com", null, null]),
            json!(["dan@example.com", false, null]),
            json!(["zed@example.com", null, null]),
        ],
        "neither the bot nor the refused redirect is stored"
    );
    let rejected = server.rows("SELECT rule, source FROM signups_rejected ORDER BY source").await;
    assert_eq!(rejected, vec![json!(["email_like", "form"]), json!(["email_like", "http"])]);
    let raw = server.rows("SELECT count(*) FROM signups_raw").await;
    assert_eq!(raw, vec![json!([5])], "every request but the bot's and the refused one is kept");
    let first = server
        .rows(
            "SELECT payload, content_type FROM signups_raw WHERE starts_with(payload, 'email=ada')",
        )
        .await;
    assert_eq!(
        first,
        vec![json!([
            "email=ada%40example.com&newsletter=on&interests=rust&interests=data&website=",
            "application/x-www-form-urlencoded"
        ])],
        "the form as it was posted"
    );

    // CORS: the allowed origin gets a preflight answer, others do not.
    let preflight = |origin: &'static str| {
        browser
            .request(reqwest::Method::OPTIONS, server.url("/v1/ingest/signups"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .send()
    };
    let allowed = preflight("https://www.example.com").await.unwrap();
    assert_eq!(allowed.headers()["access-control-allow-origin"], "https://www.example.com");
    let refused = preflight("https://evil.test").await.unwrap();
    assert!(refused.headers().get("access-control-allow-origin").is_none());
}

async fn csv_bodies_uploads_and_resumed_loads(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (status, body) = server
        .define(
            "members",
            json!({
                "columns": [
                    {"name": "name", "type": "string", "nullable": false},
                    {"name": "joined", "type": "date"},
                    {"name": "fee", "type": "decimal(8,2)"}
                ],
                "unique_key": ["name"]
            }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, receipt) = server
        .ingest(
            "members",
            "text/csv",
            "name,joined,fee\nAda,2026-01-02,10.50\nBob,someday,3\n,2026-01-01,1\n",
        )
        .await;
    assert_eq!(status, 200, "{receipt}");
    assert_eq!(
        (receipt["accepted"].clone(), receipt["rejected"].clone()),
        (json!(1), json!(2)),
        "{receipt}"
    );

    // An upload of 300,000 rows: more than one chunk of a load.
    let mut csv = String::from("name,joined,fee\n");
    for i in 0..300_000 {
        csv.push_str(&format!("m{i},2026-02-{:02},{}.{:02}\n", 1 + i % 28, i % 1000, i % 100));
    }
    let upload = |key: &'static str| {
        server
            .client
            .post(server.url("/v1/tables/members/files?name=members.csv"))
            .header("content-type", "text/csv")
            .header("idempotency-key", key)
            .body(csv.clone())
            .send()
    };
    let first = upload("batch-1").await.unwrap();
    assert_eq!(first.status(), 200);
    let report: Value = first.json().await.unwrap();
    assert_eq!(report["rows"], 300_000, "{report}");
    assert_eq!(report["commits"], 2, "{report}");
    // The same upload again (a retry): every chunk is found committed, nothing is added.
    let again: Value = upload("batch-1").await.unwrap().json().await.unwrap();
    assert_eq!(
        (again["rows"].clone(), again["skipped_chunks"].clone()),
        (json!(0), json!(2)),
        "{again}"
    );
    // Another load of the same rows: the unique key keeps them out.
    let other: Value = upload("batch-2").await.unwrap().json().await.unwrap();
    assert_eq!(
        (other["rows"].clone(), other["duplicates"].clone()),
        (json!(0), json!(300_000)),
        "{other}"
    );
    let rows = server.rows("SELECT count(*), sum(fee) FROM members").await;
    let expected_fee: f64 =
        10.5 + (0..300_000).map(|i| (i % 1000) as f64 + (i % 100) as f64 / 100.0).sum::<f64>();
    assert_eq!(rows[0][0], 300_001);
    let fee = rows[0][1].as_f64().or_else(|| rows[0][1].as_str()?.parse().ok()).unwrap();
    assert!((fee - expected_fee).abs() < 0.001, "{rows:?}");

    // Formats Tarn cannot tell are refused, and bad CSV names its line.
    let unknown =
        server.client.post(server.url("/v1/tables/members/files")).body("x").send().await.unwrap();
    assert_eq!(unknown.status(), 415);
    let (status, body) =
        server.ingest("members", "text/csv", "name,joined\nA,2026-01-01\nB\n").await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().starts_with("line 3"), "{body}");
}

async fn drop_zone_loads_archives_and_fails(backend: Backend) {
    use object_store::{ObjectStoreExt, PutPayload};
    let server = TestServer::start_with(backend, |c| {
        c.ingest.dropzone.poll_secs = 1;
        c.ingest.dropzone.settle_secs = 0;
    })
    .await;
    let (status, body) = server
        .define(
            "applications",
            json!({
                "columns": [{"name": "name", "type": "string", "nullable": false}, {"name": "age", "type": "int32"}],
                "rules": [{"name": "adult", "check": "age >= 18"}]
            }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let lake = server.lake.open().await;
    let store = lake.store();
    for (path, body) in [
        ("_tarn/landing/applications/batch-1.csv", "name,age\nAda,30\nKid,9\n"),
        ("_tarn/landing/applications/broken.parquet", "this is not parquet"),
        ("_tarn/landing/applications/notes.txt", "what is this"),
    ] {
        store.put(&object_store::path::Path::from(path), PutPayload::from(body)).await.unwrap();
    }

    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let listing = |prefix: &'static str| {
        let store = store.clone();
        async move {
            use futures::TryStreamExt;
            let mut names: Vec<String> = store
                .list(Some(&object_store::path::Path::from(prefix)))
                .map_ok(|m| m.location.to_string())
                .try_collect()
                .await
                .unwrap();
            names.sort();
            names
        }
    };
    // Done when the landing zone is empty, every failed file has its report beside it and
    // the claims are released (each comes a moment after the one before).
    loop {
        let (landing, failed, claims) = (
            listing("_tarn/landing").await,
            listing("_tarn/failed").await,
            listing("_tarn/claims").await,
        );
        if landing.is_empty() && failed.len() == 4 && claims.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the drop zone did not finish in 30 s: landing {landing:?}, failed {failed:?}, claims {claims:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let archived = listing("_tarn/archive/applications").await;
    assert_eq!(archived.len(), 1, "{archived:?}");
    assert!(archived[0].ends_with("/batch-1.csv"), "{archived:?}");
    let failed = listing("_tarn/failed/applications").await;
    assert_eq!(
        failed,
        vec![
            "_tarn/failed/applications/broken.parquet",
            "_tarn/failed/applications/broken.parquet.error.txt",
            "_tarn/failed/applications/notes.txt",
            "_tarn/failed/applications/notes.txt.error.txt",
        ]
    );
    let report = store
        .get(&object_store::path::Path::from("_tarn/failed/applications/broken.parquet.error.txt"))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&report).contains("not a readable Parquet file"), "{report:?}");
    assert_eq!(server.rows("SELECT name FROM applications").await, vec![json!(["Ada"])]);
    assert_eq!(
        server.rows("SELECT rule, source FROM applications_rejected").await,
        vec![json!(["adult", "file:batch-1.csv"])]
    );
    assert!(listing("_tarn/claims").await.is_empty(), "claims are released");
}

async fn api_keys_guard_every_endpoint(backend: Backend) {
    let key = crate::support::key;
    let server = TestServer::start_with(backend, |c| {
        c.keys = vec![
            key("ops", "tk_admin", &["admin"], false),
            key("analyst", "tk_analyst", &["query"], false),
            key("shop", "tk_shop", &["ingest:events"], false),
            key("site", "pk_site", &["ingest:leads"], true),
        ];
    })
    .await;
    let client = &server.client;
    let call = |method: reqwest::Method, path: &str, key: Option<&str>, body: &str| {
        let mut request = client.request(method, server.url(path)).body(body.to_string());
        if let Some(key) = key {
            request = request.header("authorization", format!("Bearer {key}"));
        }
        request.header("content-type", "application/json").send()
    };
    use reqwest::Method;
    let sql = r#"{"sql": "SELECT 1"}"#;
    // With keys, tables are declared first (auto-create is off).
    let events = r#"{"columns": [{"name": "sku", "type": "string"}]}"#;
    let sku = r#"{"sku": "A"}"#;
    // In order: the PUT that creates `events` comes before the ingest into it.
    let cases: [(Method, &str, Option<&str>, &str, u16); 12] = [
        (Method::GET, "/healthz", None, "", 200),
        (Method::POST, "/v1/sql", None, sql, 401),
        (Method::POST, "/v1/sql", Some("wrong"), sql, 401),
        (Method::POST, "/v1/sql", Some("tk_analyst"), sql, 200),
        (Method::POST, "/v1/sql", Some("tk_shop"), sql, 403),
        (Method::PUT, "/v1/tables/events", Some("tk_analyst"), events, 403),
        (Method::PUT, "/v1/tables/events", Some("tk_admin"), events, 201),
        (Method::POST, "/v1/ingest/events", Some("tk_shop"), sku, 202),
        (Method::POST, "/v1/ingest/clicks", Some("tk_shop"), sku, 403),
        (Method::POST, "/v1/ingest/events", Some("tk_analyst"), sku, 403),
        (Method::GET, "/v1/tables/events", Some("tk_analyst"), "", 200),
        (Method::DELETE, "/v1/tables/events", Some("tk_analyst"), "", 403),
    ];
    for (method, path, key, body, expected) in cases {
        let case = format!("{method} {path} with key {key:?}");
        let response = call(method, path, key, body).await.unwrap();
        assert_eq!(response.status().as_u16(), expected, "{case}");
    }
    let x_key = client
        .get(server.url("/v1/tables"))
        .header("x-tarn-key", "tk_analyst")
        .send()
        .await
        .unwrap();
    assert_eq!(x_key.status(), 200);
    // A publishable key: only its table, only from its origin, may come as ?key=.
    let leads = r#"{"columns": [{"name": "email", "type": "string"}]}"#;
    let created = call(Method::PUT, "/v1/tables/leads", Some("tk_admin"), leads).await.unwrap();
    assert_eq!(created.status(), 201);
    let form = |origin: &'static str| {
        client
            .post(server.url("/v1/ingest/leads?key=pk_site"))
            .header("origin", origin)
            .header("content-type", "application/x-www-form-urlencoded")
            .body("email=a%40b.com")
            .send()
    };
    assert_eq!(form("https://www.example.com").await.unwrap().status(), 202);
    assert_eq!(form("https://evil.test").await.unwrap().status(), 403);
    let secret_in_url =
        client.post(server.url("/v1/sql?key=tk_analyst")).body("SELECT 1").send().await.unwrap();
    assert_eq!(secret_in_url.status(), 401);
    let body: Value =
        call(Method::POST, "/v1/sql", None, "{}").await.unwrap().json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");
}
