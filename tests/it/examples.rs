//! The examples in `examples/`, run the way their READMEs say, on a temp dir and on S3.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use tarn::config::FileConfig;
use tarn_lake::backend_tests;
use tarn_lake::test_util::{python, Backend, TestLake};

use tarn_pipelines::test_util::SmtpServer;

use crate::support::TestServer;

backend_tests!(leads_form_in_a_browser, clickstream, membership_drop_zone, lead_export);

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(name)
}

fn tables(name: &str) -> Vec<(String, tarn_catalog::TableSpec)> {
    FileConfig::read(&example(name).join("tarn.toml"), true)
        .expect("the example's tarn.toml")
        .tables
}

/// Serves `dir`'s files on a free loopback port, like `python3 -m http.server`.
async fn serve_dir(dir: PathBuf) -> std::net::SocketAddr {
    use axum::extract::Path as UrlPath;
    use axum::http::{header, StatusCode};
    use axum::response::IntoResponse;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route(
        "/{file}",
        axum::routing::get(move |UrlPath(file): UrlPath<String>| {
            let dir = dir.clone();
            async move {
                match std::fs::read(dir.join(file.replace("..", ""))) {
                    Ok(bytes) => ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], bytes)
                        .into_response(),
                    Err(_) => StatusCode::NOT_FOUND.into_response(),
                }
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// The landing page in headless Chromium: the visitor fills in the form, sends it and ends on
/// the thank-you page; the lead is in the table.
async fn leads_form_in_a_browser(backend: Backend) {
    let page = serve_dir(example("leads-form")).await;
    let page_origin = format!("http://{page}");
    let mut declared = tables("leads-form");
    // The page is served from a test port rather than localhost:8000.
    declared[0].1.forms.allowed_origins.push(page_origin.clone());
    let server = TestServer::start_with(backend, |c| c.tables = declared).await;
    let url = format!("{page_origin}/index.html?tarn=http://{}&utm_source=newsletter", server.addr);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/submit_form.py");
    let output =
        tokio::process::Command::new(python()).arg(&script).arg(&url).output().await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines, vec![format!("{page_origin}/thanks.html").as_str(), "Thank you!"]);
    server
        .eventually(
            "SELECT email, name, company, consent, utm_source FROM leads",
            vec![json!([
                "ada@example.com",
                "Ada Lovelace",
                "Analytical Engines",
                true,
                "newsletter"
            ])],
        )
        .await;

    // The README's curl posts: a rejected lead goes back to the form with the reason; a bot
    // is told it succeeded and stored nowhere; a repeated e-mail stays one row.
    let client =
        reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let post = |body: &'static str| {
        client
            .post(server.url("/v1/ingest/leads"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
    };
    let rejected = post("email=not-an-address&consent=on").await.unwrap();
    assert_eq!(
        rejected.headers()["location"],
        "http://localhost:8000/index.html?error=please+enter+a+valid+e-mail+address"
    );
    let bot =
        post("email=bot%40spam.test&consent=on&website=http%3A%2F%2Fspam.test").await.unwrap();
    assert_eq!(bot.headers()["location"], "http://localhost:8000/thanks.html");
    let again = post("email=ada%40example.com&name=Ada&consent=on").await.unwrap();
    assert_eq!(again.status(), 303);
    // A last request, with `?wait=commit`, that writes to leads, leads_rejected and leads_raw:
    // once it is answered, every post before it is committed too (each table commits in the
    // order of the write-ahead log), so what is absent now was never stored.
    let (status, receipt) = server
        .ingest(
            "leads",
            "application/json",
            r#"[{"email": "zed@example.com", "consent": true}, {"email": "no-at", "consent": true}]"#,
        )
        .await;
    assert_eq!((status, &receipt["accepted"], &receipt["rejected"]), (200, &json!(1), &json!(1)));
    assert_eq!(
        server.rows("SELECT email FROM leads ORDER BY email").await,
        vec![json!(["ada@example.com"]), json!(["zed@example.com"])],
        "neither the bot nor the repeated e-mail is stored"
    );
    assert_eq!(
        server.rows("SELECT rule, source FROM leads_rejected ORDER BY source").await,
        vec![json!(["email_format", "form"]), json!(["email_format", "http"])]
    );
    assert_eq!(
        server.rows("SELECT count(*) FROM leads_raw").await,
        vec![json!([4])],
        "every request but the bot's is kept as it came"
    );
    let (_, table) = server.get("/v1/tables/leads").await;
    assert_eq!(table["columns"][0]["comment"], "the lead's e-mail address");
}

async fn clickstream(backend: Backend) {
    let server = TestServer::start_with(backend, |c| c.tables = tables("clickstream")).await;
    let events = std::fs::read_to_string(example("clickstream").join("events.ndjson")).unwrap();
    let (status, receipt) = server.ingest("events", "application/x-ndjson", &events).await;
    assert_eq!(status, 200, "{receipt}");
    assert_eq!(
        (&receipt["accepted"], &receipt["rejected"], &receipt["duplicates"]),
        (&json!(10), &json!(2), &json!(1)),
        "{receipt}"
    );
    assert_eq!(receipt["errors"], json!(["unknown event type", "a purchase needs a price"]));
    let funnel = std::fs::read_to_string(example("clickstream").join("funnel.sql")).unwrap();
    let (_, _, csv) = server.sql_as(&funnel, "text/csv").await;
    assert_eq!(
        String::from_utf8_lossy(&csv),
        "step,sessions,pct_of_viewers\nproduct_view,4,100.0\nadd_to_cart,3,75.0\npurchase,2,50.0\n"
    );
    let revenue = std::fs::read_to_string(example("clickstream").join("revenue.sql")).unwrap();
    let rows = server.rows(&revenue).await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!((&rows[0][0], &rows[0][1]), (&json!("2026-11-23"), &json!("SKU-100")));
    assert_eq!((&rows[1][0], &rows[1][1]), (&json!("2026-11-24"), &json!("SKU-200")));
    let ts = server.rows("SELECT CAST(ts AS VARCHAR), context FROM events WHERE event_id IN ('e-001', 'e-007') ORDER BY event_id").await;
    assert_eq!(ts[0][1], r#"{"page":"/p/sku-100","referrer":"newsletter"}"#);
    assert!(ts[1][0].as_str().unwrap().starts_with("2026-11-24T11:00:00"), "{ts:?}");
    let (_, table) = server.get("/v1/tables/events").await;
    assert_eq!(table["partition_by"], json!(["event_date"]));
}

async fn membership_drop_zone(backend: Backend) {
    use object_store::{ObjectStoreExt, PutPayload};
    let smtp = SmtpServer::start(&[]);
    let file = FileConfig::read(&example("membership").join("tarn.toml"), true).unwrap();
    let server = TestServer::start_with(backend, |c| {
        c.tables = file.tables;
        c.alerts = file.alerts;
        c.smtp = Some(smtp_config(&smtp));
        c.ingest.dropzone.poll_secs = 1;
        c.ingest.dropzone.settle_secs = 0;
    })
    .await;
    let csv = std::fs::read(example("membership").join("applications_2026-11-22.csv")).unwrap();
    let lake = server.lake.open().await;
    lake.store()
        .put(
            &object_store::path::Path::from("_tarn/landing/membership/applications_2026-11-22.csv"),
            PutPayload::from(csv),
        )
        .await
        .unwrap();
    server.eventually(
        "SELECT membership_id, first_name, last_name, email FROM membership ORDER BY membership_id",
        vec![
            json!(["Curie_de53e", "Marie", "Curie", "marie@science.com"]),
            json!(["Dijkstra_14a60", "Edsger", "Dijkstra", "edsger@example.net"]),
            json!(["Hopper_f20c5", "Grace", "Hopper", "grace@navy.net"]),
            json!(["Lovelace_1218b", "Ada", "Lovelace", "ada@example.com"]),
        ],
    )
    .await;
    let rejected = server.rows("SELECT rule, field FROM membership_rejected ORDER BY record").await;
    assert_eq!(
        rejected,
        vec![
            json!(["required", "name"]),
            json!(["email_domain", null]),
            json!(["adult", null]),
            json!(["type", "date_of_birth"]),
            json!(["mobile_8_digits", null]),
        ]
    );
    let archived: Vec<String> = {
        use futures::TryStreamExt;
        lake.store()
            .list(Some(&object_store::path::Path::from("_tarn/archive/membership")))
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await
            .unwrap()
    };
    assert_eq!(archived.len(), 1);
    assert!(archived[0].ends_with("/applications_2026-11-22.csv"), "{archived:?}");
    assert!(smtp.messages().is_empty(), "5 rejected rows are under the alarm's 100");

    // A file that cannot be read at all: it moves to the failed folder, and the operators get
    // the alarm by e-mail.
    lake.store()
        .put(
            &object_store::path::Path::from(
                "_tarn/landing/membership/applications_2026-11-23.parquet",
            ),
            PutPayload::from(b"a spreadsheet saved under the wrong name".to_vec()),
        )
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while smtp.messages().is_empty() {
        assert!(std::time::Instant::now() < deadline, "no alarm e-mail: {}", smtp.log());
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let mail = &smtp.messages()[0];
    println!("the alarm e-mail:\n{mail}");
    assert!(
        mail.contains("Subject: Tarn alarm: a dropped file failed to load (membership)"),
        "{mail}"
    );
    assert!(mail.contains("_tarn/failed/membership/applications_2026-11-23.parquet"), "{mail}");
    assert!(mail.contains("To: ops@example.com"), "{mail}");
}

fn smtp_config(smtp: &SmtpServer) -> tarn_pipelines::SmtpConfig {
    tarn_pipelines::SmtpConfig {
        url: format!("smtp://127.0.0.1:{}", smtp.port),
        from: "Tarn <tarn@example.com>".into(),
        starttls: false,
        username: None,
        password: None,
    }
}

/// `tarn load` of the export and the company list, twice; then the four questions.
async fn lead_export(backend: Backend) {
    let lake = TestLake::new(backend);
    let config = example("lead-export").join("tarn.toml");
    let load = |file: &str, table: &str| {
        let (config, file, table, lake) =
            (config.clone(), example("lead-export").join(file), table.to_string(), &lake);
        async move {
            let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_tarn"))
                .args(["load", "--quiet", "--lake", &lake.location, "--table", &table, "--config"])
                .arg(&config)
                .arg(&file)
                .envs(lake.env())
                .output()
                .await
                .unwrap();
            let stdout = String::from_utf8_lossy(&output.stdout).to_string();
            assert!(
                output.status.success(),
                "{stdout}\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
            stdout
        }
    };
    // What the export holds: unique leads by key, in file order.
    let text = std::fs::read_to_string(example("lead-export").join("leads.csv")).unwrap();
    let mut seen = HashSet::new();
    let mut leads: Vec<Vec<String>> = Vec::new();
    for line in text.lines().skip(1) {
        let fields: Vec<String> = line.split(',').map(String::from).collect();
        let key = (fields[0].clone(), fields[1].clone(), fields[2].clone(), fields[4].clone());
        if seen.insert(key) {
            leads.push(fields);
        }
    }
    let duplicates = text.lines().count() - 1 - leads.len();
    let out = load("leads.csv", "leads").await;
    assert!(
        out.contains(&format!(
            "{} rows loaded into default.leads, 0 rejected, {duplicates} duplicates",
            leads.len()
        )),
        "{out}"
    );
    let out = load("companies.json", "companies").await;
    assert!(
        out.contains("4 rows loaded into default.companies, 0 rejected, 1 duplicates"),
        "{out}"
    );
    let again = load("leads.csv", "leads").await;
    assert!(again.contains("0 rows loaded"), "a second load adds nothing: {again}");

    let server = TestServer::start_on(lake.alias(), |_| {}).await;
    let sql = |file: &str| std::fs::read_to_string(example("lead-export").join(file)).unwrap();

    let mut by_country: BTreeMap<String, i64> = BTreeMap::new();
    for lead in &leads {
        *by_country.entry(lead[4].clone()).or_default() += 1;
    }
    let mut expected: Vec<(String, i64)> = by_country.into_iter().collect();
    expected.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let expected: Vec<Value> = expected.into_iter().take(20).map(|(c, n)| json!([c, n])).collect();
    assert_eq!(server.rows(&sql("top_countries.sql")).await, expected);
    let expected_top = expected;

    let hq = [("Acme", "US"), ("Globex", "DE"), ("Initech", "NL"), ("Umbrella", "GB")];
    let expected: Vec<Value> = hq
        .iter()
        .map(|(c, country)| {
            let n = leads.iter().filter(|l| l[0] == *c && l[4] == *country).count();
            json!([c, country, n])
        })
        .collect();
    assert_eq!(server.rows(&sql("staff_in_hq_country.sql")).await, expected);

    let now = chrono::Utc::now().naive_utc();
    let stamp = |l: &Vec<String>| {
        chrono::NaiveDateTime::parse_from_str(&l[5], "%Y-%m-%d %H:%M:%S").unwrap()
    };
    let recent = leads.iter().filter(|l| stamp(l) >= now - chrono::Duration::days(10)).count();
    assert_eq!(server.rows(&sql("last_10_days.sql")).await, vec![json!([recent])]);
    let this_year = leads
        .iter()
        .filter(|l| chrono::Datelike::year(&stamp(l)) == chrono::Datelike::year(&now))
        .count();
    let per_month = server.rows(&sql("leads_per_month.sql")).await;
    assert_eq!(
        per_month.iter().map(|r| r[1].as_i64().unwrap()).sum::<i64>(),
        this_year as i64,
        "{per_month:?}"
    );

    // The daily job of the four questions, run now with `tarn job run`: Parquet under
    // exports/<date>/<question>/ with _SUCCESS; DuckDB reads what SQL answered.
    let smtp = SmtpServer::start(&[]);
    for job in ["leads_per_month", "last_10_days", "top_countries", "staff_in_hq_country"] {
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_tarn"))
            .args(["job", "run", job, "--lake", &lake.location, "--config"])
            .arg(&config)
            .args(["--smtp-url", &smtp_config(&smtp).url])
            .envs(lake.env())
            .output()
            .await
            .unwrap();
        let out = String::from_utf8_lossy(&output.stdout).to_string();
        assert!(output.status.success(), "{out}{}", String::from_utf8_lossy(&output.stderr));
        assert!(out.contains(r#""state": "succeeded""#), "{out}");
    }
    let history = server
        .rows("SELECT job, attempt, state, rows, output FROM system.job_runs ORDER BY job")
        .await;
    println!("system.job_runs after the daily report:\n{history:#?}");
    assert_eq!(history.len(), 4);
    assert!(history.iter().all(|r| r[2] == "succeeded"), "{history:?}");
    let top = history.iter().find(|r| r[0] == "top_countries").unwrap();
    assert_eq!(top[3], json!(expected_top.len()), "{top:?}");
    let location = top[4].as_str().unwrap().to_string();
    assert!(location.contains("/exports/") && location.ends_with("/top_countries/"), "{location}");
    if backend == Backend::Local {
        let folder = Path::new(location.trim_start_matches("file://"));
        assert!(folder.join("_SUCCESS").exists(), "{folder:?}");
        let read = std::process::Command::new(python())
            .arg("-c")
            .arg(format!(
                "import duckdb, json; print(json.dumps(duckdb.sql(\"SELECT country, leads FROM '{}'\").fetchall()))",
                folder.join("part-00000.parquet").display()
            ))
            .output()
            .unwrap();
        assert!(read.status.success(), "{}", String::from_utf8_lossy(&read.stderr));
        let duck: Value = serde_json::from_slice(&read.stdout).unwrap();
        println!("DuckDB reads exports/<date>/top_countries/part-00000.parquet: {duck}");
        assert_eq!(duck, Value::Array(expected_top.clone()));
    }
    assert!(smtp.messages().is_empty(), "no failure, no e-mail");
}
