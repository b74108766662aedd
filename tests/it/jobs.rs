//! Scheduled jobs end to end: real servers on one lake (a temp dir and S3), a real SMTP
//! server (aiosmtpd) and a real webhook receiver, `tarn job run`, and `kill -9` during a
//! replace.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tarn_lake::backend_tests;
use tarn_lake::test_util::{python, Backend, TestLake};
use tarn_pipelines::test_util::{start_receiver, SmtpServer};

use crate::support::{ServeProcess, TestServer};

backend_tests!(a_job_writes_its_table_by_each_mode, two_servers_run_each_occurrence_once);

async fn a_job_writes_its_table_by_each_mode(backend: Backend) {
    let server = TestServer::start(backend).await;
    let leads = r#"{"email": "a@x.no", "country": "NO"}
{"email": "b@x.no", "country": "NO"}
{"email": "c@x.se", "country": "SE"}"#;
    assert_eq!(server.ingest("leads", "application/x-ndjson", leads).await.0, 200);

    // replace: the table is the result, again and again.
    let (status, job) = server
        .put_job(
            "by_country",
            json!({
                "schedule": "@yearly",
                "catch_up": "none",
                "sql": "SELECT country, count(*) AS leads FROM leads GROUP BY country",
                "into": {"table": "reports.by_country", "mode": "replace"},
            }),
        )
        .await;
    assert_eq!(status, 201, "{job}");
    assert_eq!(job["definition"]["timeout"], "10m", "defaults are written out: {job}");
    assert!(job["next_run"].as_str().unwrap().ends_with("-01-01T00:00:00Z"), "{job}");
    for _ in 0..2 {
        let run = server.run_job("by_country").await;
        assert_eq!(run["state"], "succeeded", "{run}");
        assert_eq!(run["attempts"][0]["rows"], 2, "{run}");
        assert!(run["attempts"][0]["output"].as_str().unwrap().starts_with("reports.by_country@v"));
    }
    let sql = "SELECT country, leads FROM reports.by_country ORDER BY country";
    assert_eq!(server.rows(sql).await, vec![json!(["NO", 2]), json!(["SE", 1])]);
    // The table is the job's: ingest may not write it, a definition may not take it.
    let (status, body) =
        server.ingest("reports.by_country", "application/json", r#"{"country": "DK"}"#).await;
    assert_eq!(status, 403, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("job:by_country"), "{body}");

    // append: each run adds its rows.
    let (status, _) = server
        .put_job(
            "snapshot",
            json!({
                "schedule": "0 3 * * *", "timezone": "Europe/Oslo", "catch_up": "none",
                "sql": "SELECT email, country FROM leads",
                "into": {"table": "reports.lead_snapshots"},
            }),
        )
        .await;
    assert_eq!(status, 201);
    server.run_job("snapshot").await;
    server.run_job("snapshot").await;
    assert_eq!(server.rows("SELECT count(*) FROM reports.lead_snapshots").await, vec![json!([6])]);

    // merge: rows with a key in the table replace it, the others are added.
    let (status, _) = server
        .put_job(
            "latest_by_email",
            json!({
                "schedule": "@daily", "catch_up": "none",
                "sql": "SELECT email, max(country) AS country FROM leads GROUP BY email",
                "into": {"table": "reports.latest", "mode": "merge", "key": ["email"]},
            }),
        )
        .await;
    assert_eq!(status, 201);
    server.run_job("latest_by_email").await;
    let moved = r#"{"email": "a@x.no", "country": "SE"}
{"email": "d@x.dk", "country": "DK"}"#;
    assert_eq!(server.ingest("leads", "application/x-ndjson", moved).await.0, 200);
    let run = server.run_job("latest_by_email").await;
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["attempts"][0]["rows"], 4, "the merge's source rows: {run}");
    let rows = server.rows("SELECT email, country FROM reports.latest ORDER BY email").await;
    assert_eq!(
        rows,
        vec![
            json!(["a@x.no", "SE"]),
            json!(["b@x.no", "NO"]),
            json!(["c@x.se", "SE"]),
            json!(["d@x.dk", "DK"])
        ]
    );

    // export: one CSV file and _SUCCESS (in the lake, or in a bucket by URL).
    let (location, prefix) = match backend {
        Backend::Local => ("exports/{date}/{job}/".to_string(), String::new()),
        Backend::S3 => {
            let prefix = format!("exports-{}", uuid::Uuid::new_v4().simple());
            let bucket = tarn_lake::test_util::s3_bucket();
            (format!("s3://{bucket}/{prefix}/{{date}}/{{job}}/"), prefix)
        }
    };
    let (status, body) = server
        .put_job(
            "countries_csv",
            json!({
                "schedule": "@daily", "catch_up": "none",
                "sql": "SELECT country, count(*) AS n FROM leads GROUP BY country ORDER BY country",
                "export": {"location": location, "format": "csv"},
            }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let run = server.run_job("countries_csv").await;
    assert_eq!(run["state"], "succeeded", "{run}");
    let output = run["attempts"][0]["output"].as_str().unwrap().to_string();
    let day = chrono::Utc::now().format("%Y-%m-%d").to_string();
    assert!(output.ends_with(&format!("/{day}/countries_csv/")), "{output}");
    {
        use object_store::ObjectStoreExt;
        let lake = server.lake.open().await;
        let (store, folder) = match backend {
            Backend::Local => (lake.store().clone(), format!("exports/{day}/countries_csv")),
            Backend::S3 => {
                let bucket = tarn_lake::test_util::s3_bucket();
                let url = url::Url::parse(&format!("s3://{bucket}/")).unwrap();
                (lake.store_for_url(&url).unwrap(), format!("{prefix}/{day}/countries_csv"))
            }
        };
        let read = |file: &str| {
            let store = store.clone();
            let path = object_store::path::Path::from(format!("{folder}/{file}"));
            async move { store.get(&path).await.unwrap().bytes().await.unwrap() }
        };
        let csv = read("part-00000.csv").await;
        assert_eq!(String::from_utf8_lossy(&csv), "country,n\nDK,1\nNO,2\nSE,2\n");
        let success: Value = serde_json::from_slice(&read("_SUCCESS").await).unwrap();
        assert_eq!(success["job"], "countries_csv");
        assert_eq!(success["rows"], 3);
    }

    // Mistakes are caught when a job is declared, and say where.
    let declare = |sql: &str, output: Value| {
        let mut job = json!({"schedule": "@daily", "sql": sql});
        job.as_object_mut().unwrap().extend(output.as_object().unwrap().clone());
        job
    };
    let into = |table: &str| json!({"into": {"table": table}});
    for (job, status, expected) in [
        (declare("DELETE FROM leads", into("x")), 400, "sql:"),
        (declare("SELEC 1", into("x")), 400, "sql:"),
        (declare("SELECT 1", into("leads")), 409, "into.table: 'default.leads' exists"),
        (declare("SELECT 1", json!({"schedule": "0 25 * * *"})), 400, "schedule: "),
    ] {
        let (got, body) = server.put_job("mistaken", job.clone()).await;
        assert_eq!(got, status, "{job}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(expected), "{job}: {message}");
    }
    // An export into a table's folder would clobber the table's files: refused when it runs,
    // and the table is untouched.
    let (status, _) = server
        .put_job(
            "clobber",
            json!({"schedule": "@daily", "catch_up": "none", "sql": "SELECT 1 AS x",
                   "export": {"location": "reports/by_country/", "format": "parquet"}}),
        )
        .await;
    assert_eq!(status, 201);
    let run = server.run_job("clobber").await;
    assert_eq!(run["state"], "failed", "{run}");
    let error = run["attempts"][0]["error"].as_str().unwrap();
    assert!(error.contains("inside the folder of table 'reports.by_country'"), "{error}");
    assert_eq!(server.rows(sql).await, vec![json!(["NO", 2]), json!(["SE", 1])]);
    assert_eq!(
        server.client.delete(server.url("/v1/jobs/clobber")).send().await.unwrap().status(),
        204
    );

    // Every attempt is a row of system.job_runs.
    let runs = server
        .rows("SELECT job, count(*) FROM system.job_runs WHERE state = 'succeeded' GROUP BY job ORDER BY job")
        .await;
    assert_eq!(
        runs,
        vec![
            json!(["by_country", 2]),
            json!(["countries_csv", 1]),
            json!(["latest_by_email", 2]),
            json!(["snapshot", 2])
        ]
    );

    // Writing the same run twice commits once: the Delta txn names job and run.
    let lake = std::sync::Arc::new(server.lake.open().await);
    let catalog = std::sync::Arc::new(tarn_catalog::Catalog::new(lake));
    let engine =
        tarn_query::QueryEngine::new(catalog.clone(), tarn_query::QueryConfig::default()).unwrap();
    let spec = tarn_pipelines::JobSpec::from_json(json!({
        "schedule": "@daily", "sql": "SELECT email FROM leads",
        "into": {"table": "reports.lead_snapshots"}
    }))
    .unwrap();
    let job = spec.compile("snapshot").unwrap();
    let run = tarn_pipelines::output::RunRef {
        run_id: "20261201T030000Z".into(),
        scheduled_for: chrono::Utc::now(),
        attempt: 1,
    };
    let table = tarn_catalog::TableName::parse("reports.lead_snapshots").unwrap();
    let mode = tarn_lake::WriteMode::Append;
    let first =
        tarn_pipelines::output::write_table(&engine, &catalog, &job, &run, &table, &mode).await;
    let first = first.unwrap();
    assert!(!first.already);
    assert_eq!(first.rows, Some(5));
    let retried = tarn_pipelines::output::RunRef { attempt: 2, ..run };
    let again =
        tarn_pipelines::output::write_table(&engine, &catalog, &job, &retried, &table, &mode).await;
    assert!(again.unwrap().already, "the retry finds the run's commit");
    assert_eq!(server.rows("SELECT count(*) FROM reports.lead_snapshots").await, vec![json!([11])]);
}

async fn two_servers_run_each_occurrence_once(backend: Backend) {
    let fast = |c: &mut tarn::config::ServeConfig| {
        c.jobs_config.refresh = Duration::from_millis(500);
    };
    let one = TestServer::start_with(backend, fast).await;
    let two = TestServer::start_on(one.lake.alias(), fast).await;
    let (status, body) = one
        .put_job(
            "ticks",
            json!({
                "schedule": "every 2s",
                "sql": "SELECT now() AS at",
                "into": {"table": "ticks"},
                "timeout": "30s",
            }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    tokio::time::sleep(Duration::from_secs(11)).await;
    let response = two.client.delete(two.url("/v1/jobs/ticks")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 204);
    // Runs in flight end (their table commit comes before their row); nothing new starts.
    let settled = Instant::now() + Duration::from_secs(30);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rows = one.rows("SELECT count(*) FROM system.job_runs WHERE job = 'ticks'").await;
        let ticks = one.rows("SELECT count(*) FROM ticks").await;
        if rows == ticks || Instant::now() > settled {
            break;
        }
    }

    let per_run = one
        .rows(
            "SELECT run_id, count(*) AS attempts, min(state), min(server) FROM system.job_runs \
             WHERE job = 'ticks' GROUP BY run_id ORDER BY run_id",
        )
        .await;
    println!("system.job_runs of 'ticks' from two servers:\n{per_run:#?}");
    assert!(per_run.len() >= 4, "an every-2s job ran at least 4 times in 11 s: {per_run:?}");
    for run in &per_run {
        assert_eq!(run[1], 1, "each occurrence once: {run}");
        assert_eq!(run[2], "succeeded", "{run}");
    }
    let output = one.rows("SELECT count(*) FROM ticks").await;
    assert_eq!(output, vec![json!([per_run.len()])], "each occurrence once in the output");
    let servers: std::collections::BTreeSet<String> =
        per_run.iter().map(|r| r[3].as_str().unwrap().to_string()).collect();
    println!("occurrences run by {} server(s): {servers:?}", servers.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_job_retries_then_mails_and_posts_once() {
    let smtp = SmtpServer::start(&[]);
    let (webhook, receiver) = start_receiver(&[]).await;
    let server = TestServer::start_with(Backend::Local, |c| {
        c.smtp = Some(tarn_pipelines::SmtpConfig {
            url: format!("smtp://127.0.0.1:{}", smtp.port),
            from: "Tarn <tarn@example.com>".into(),
            starttls: false,
            username: None,
            password: None,
        });
    })
    .await;
    assert_eq!(server.ingest("leads", "application/json", r#"{"n": 0}"#).await.0, 200);
    let (status, body) = server
        .put_job(
            "broken",
            json!({
                "schedule": "@daily", "catch_up": "none",
                "sql": "SELECT 10 / n AS x FROM leads",
                "into": {"table": "reports.broken"},
                "retries": {"attempts": 3, "backoff": "200ms"},
                "notify": {"on": ["failure"], "webhook": webhook.as_str(), "email": ["data@example.com"]},
            }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let started = Instant::now();
    let run = server.run_job("broken").await;
    assert_eq!(run["state"], "failed", "{run}");
    let attempts = run["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 3, "{run}");
    for attempt in attempts {
        let error = attempt["error"].as_str().unwrap();
        assert!(error.contains("Divide by zero"), "{run}");
        assert!(!error.contains("Arrow schema"), "said as the query's error: {error}");
    }
    // Backoff: 200 ms, then 400 ms.
    assert!(started.elapsed() >= Duration::from_millis(600));

    let deadline = Instant::now() + Duration::from_secs(30);
    while receiver.requests().is_empty() || smtp.messages().is_empty() {
        assert!(Instant::now() < deadline, "no notification: {}", smtp.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Nothing more arrives.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let posts = receiver.requests();
    assert_eq!(posts.len(), 1, "one webhook POST");
    let body: Value = serde_json::from_slice(&posts[0].1).unwrap();
    println!("the webhook received:\n{}", serde_json::to_string_pretty(&body).unwrap());
    for field in [
        "job",
        "run_id",
        "state",
        "attempts",
        "scheduled_for",
        "started_at",
        "finished_at",
        "rows",
        "error",
    ] {
        assert!(body.get(field).is_some(), "{field} in {body}");
    }
    assert_eq!(
        (body["job"].as_str(), body["state"].as_str(), body["attempts"].as_u64()),
        (Some("broken"), Some("failed"), Some(3))
    );
    let mails = smtp.messages();
    assert_eq!(mails.len(), 1, "one e-mail");
    println!("the SMTP server received:\n{}", mails[0]);
    assert!(
        mails[0].contains("Subject: Tarn job 'broken' failed after 3 attempts"),
        "{}",
        mails[0]
    );
    assert!(mails[0].contains("To: data@example.com"), "{}", mails[0]);
    assert!(mails[0].contains("Divide by zero") || mails[0].contains("zero"), "{}", mails[0]);
}

/// `tarn job run` runs a job without a server and says how it went by its exit status;
/// a `tarn serve` killed with SIGKILL in the middle of a replace leaves readers the whole old
/// table; the export of a job is read by DuckDB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_replace_leaves_the_old_table() {
    let lake = TestLake::new(Backend::Local);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tarn.toml");
    std::fs::write(
        &config,
        r#"
[[jobs]]
name = "pairs"
schedule = "@yearly"
catch_up = "none"
timeout = "10m"
sql = "SELECT a.n AS a, b.n AS b, md5(CAST(a.n * 100000 + b.n AS VARCHAR)) AS pad FROM src a CROSS JOIN src b"
into = { table = "reports.pairs", mode = "replace" }

[[jobs]]
name = "pairs_export"
schedule = "@daily"
catch_up = "none"
sql = "SELECT a, b FROM reports.pairs ORDER BY a, b"
export = { location = "exports/{date}/", format = "parquet" }
"#,
    )
    .unwrap();
    let tarn = |args: &[&str]| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_tarn"));
        command.args(args).args(["--lake", &lake.location]).arg("--config").arg(&config);
        command.envs(lake.env()).output().unwrap()
    };
    let data = dir.path().join("src.csv");
    let write_numbers = |count: usize| {
        let mut csv = String::from("n\n");
        for n in 0..count {
            csv.push_str(&format!("{n}\n"));
        }
        std::fs::write(&data, csv).unwrap();
    };
    write_numbers(10);
    let loaded = std::process::Command::new(env!("CARGO_BIN_EXE_tarn"))
        .args(["load", "--quiet", "--table", "src", "--lake", &lake.location])
        .arg(&data)
        .output()
        .unwrap();
    assert!(loaded.status.success(), "{}", String::from_utf8_lossy(&loaded.stderr));

    // Without a server: the run succeeds, exit 0, 100 rows.
    let run = tarn(&["job", "run", "pairs"]);
    let out = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{out}{}", String::from_utf8_lossy(&run.stderr));
    assert!(out.contains(r#""rows": 100"#), "{out}");
    let listed = tarn(&["job", "list"]);
    let listed = String::from_utf8_lossy(&listed.stdout).to_string();
    assert!(listed.contains("pairs") && listed.contains("@yearly"), "{listed}");

    // The export: Parquet under exports/<date>/ with _SUCCESS, read by DuckDB.
    let exported = tarn(&["job", "run", "pairs_export"]);
    assert!(exported.status.success(), "{}", String::from_utf8_lossy(&exported.stderr));
    let day = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let folder = std::path::Path::new(&lake.location).join("exports").join(&day);
    assert!(folder.join("_SUCCESS").exists(), "{folder:?}");
    let duckdb = std::process::Command::new(python())
        .arg("-c")
        .arg(format!(
            "import duckdb; print(duckdb.sql(\"SELECT count(*), sum(a * b) FROM '{}'\").fetchall())",
            folder.join("part-00000.parquet").display()
        ))
        .output()
        .unwrap();
    let duck = String::from_utf8_lossy(&duckdb.stdout).to_string();
    println!("DuckDB reads the export: {duck}");
    assert!(duckdb.status.success(), "{}", String::from_utf8_lossy(&duckdb.stderr));
    assert_eq!(duck.trim(), "[(100, 2025)]");

    // A failing run exits non-zero.
    std::fs::write(
        dir.path().join("failing.toml"),
        "[[jobs]]\nname = \"nope\"\nschedule = \"@daily\"\nsql = \"SELECT * FROM missing\"\ninto = { table = \"x\" }\n",
    )
    .unwrap();
    let failed = std::process::Command::new(env!("CARGO_BIN_EXE_tarn"))
        .args(["job", "run", "nope", "--lake", &lake.location, "--config"])
        .arg(dir.path().join("failing.toml"))
        .output()
        .unwrap();
    assert!(!failed.status.success());
    assert!(String::from_utf8_lossy(&failed.stderr).contains("missing"));

    // 3000 more source rows: the next replace writes 9 million rows of 32 random-looking
    // characters, several data files (of deltalake's 100 MB), long enough to be killed after
    // the first.
    write_numbers(3000);
    let loaded = std::process::Command::new(env!("CARGO_BIN_EXE_tarn"))
        .args(["load", "--quiet", "--table", "src", "--lake", &lake.location])
        .arg(&data)
        .output()
        .unwrap();
    assert!(loaded.status.success());
    let wal = dir.path().join("wal");
    let config_arg = config.display().to_string();
    let wal_arg = wal.display().to_string();
    let server =
        ServeProcess::start(&lake, &["--config", &config_arg, "--wal-dir", &wal_arg]).await;
    let client = reqwest::Client::new();
    let started: Value = client
        .post(format!("http://{}/v1/jobs/pairs/runs", server.addr))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let run_id = started["run_id"].as_str().unwrap().to_string();
    // Wait until the attempt holds its lease and data files of the new version are being
    // written, then kill.
    let table_dir = std::path::Path::new(&lake.location).join("reports").join("pairs");
    let parquet = |dir: &std::path::Path| {
        std::fs::read_dir(dir)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "parquet"))
            .count()
    };
    let before = parquet(&table_dir);
    let log_files = std::fs::read_dir(table_dir.join("_delta_log")).unwrap().count();
    let lease = std::path::Path::new(&lake.location)
        .join(format!("_tarn/jobs/runs/pairs/{run_id}/attempt-1.json"));
    let deadline = Instant::now() + Duration::from_secs(120);
    while !(lease.exists() && parquet(&table_dir) > before) {
        let now = std::fs::read_dir(table_dir.join("_delta_log")).unwrap().count();
        assert_eq!(now, log_files, "the replace committed before a data file could be seen");
        assert!(Instant::now() < deadline, "the replace did not start writing");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let log_dir = table_dir.join("_delta_log");
    let commits = || std::fs::read_dir(&log_dir).unwrap().count();
    let commits_before = commits();
    let log = server.kill().await;
    assert!(!log.contains("job run succeeded"), "killed too late:\n{log}");
    assert_eq!(commits(), commits_before, "no commit of the replace");
    println!("killed during the replace; new data files on disk: {}", parquet(&table_dir) - before);

    // Readers see the whole old table.
    let sql = std::process::Command::new(env!("CARGO_BIN_EXE_tarn"))
        .args(["sql", "--lake", &lake.location])
        .arg("SELECT count(*) AS n, count(DISTINCT a) AS a FROM reports.pairs")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&sql.stdout);
    assert!(sql.status.success(), "{}", String::from_utf8_lossy(&sql.stderr));
    assert!(out.contains("| 100 | 10 |"), "{out}");
}

/// Stores a daily job defined a day ago, whose latest occurrence is held by a dead server
/// ("ghost") until `held_for` from now; answers the occurrence's run id.
async fn ghost_holds_the_latest_run(lake: &TestLake, table: &str, held_for: i64) -> String {
    use tarn_pipelines::store::{JobStore, Lease, StoredJob};
    let store = JobStore::new(lake.open().await.store().clone());
    let spec = tarn_pipelines::JobSpec::from_json(json!({
        "schedule": "@daily",
        "sql": "SELECT 42 AS answer",
        "into": {"table": table, "mode": "replace"},
    }))
    .unwrap();
    let job = spec.compile("nightly").unwrap();
    let now = chrono::Utc::now();
    let occurrence = job.schedule.latest_at_or_before(now).unwrap();
    let defined = occurrence - chrono::Duration::days(1);
    let stored =
        StoredJob { name: "nightly".into(), spec, source: "api".into(), updated_at: defined };
    store.put_definition(&stored).await.unwrap();
    let run_id = tarn_pipelines::runs::run_id_for(occurrence);
    let ghost = Lease {
        attempt: 1,
        server: "ghost".into(),
        started_at: now - chrono::Duration::minutes(1),
        expires_at: now + chrono::Duration::seconds(held_for),
    };
    assert!(store.take("nightly", &run_id, &ghost).await.unwrap());
    run_id
}

/// A server that died while running an occurrence leaves its lease; when the lease runs out,
/// another server records that attempt as abandoned and runs the next. The occurrence is the
/// latest one the servers missed (`catch_up = "latest"`, the default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_left_by_a_dead_server_is_taken_over() {
    let lake = TestLake::new(Backend::Local);
    let started = chrono::Utc::now();
    let run_id = ghost_holds_the_latest_run(&lake, "answers", 3).await;
    let server = TestServer::start_on(lake, |c| {
        c.jobs_config.refresh = Duration::from_millis(500);
    })
    .await;
    let run = server.wait_for_run("nightly", &run_id).await;
    println!("the run after the takeover: {run:#}");
    assert_eq!(run["state"], "succeeded", "{run}");
    let attempts = run["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{run}");
    assert_eq!(
        (attempts[0]["attempt"].as_u64(), attempts[0]["trigger"].as_str()),
        (Some(2), Some("catch_up"))
    );
    assert_eq!(
        (attempts[1]["attempt"].as_u64(), attempts[1]["state"].as_str()),
        (Some(1), Some("abandoned"))
    );
    assert_eq!(attempts[1]["server"], "ghost");
    assert!(chrono::Utc::now() >= started + chrono::Duration::seconds(3), "not before it ran out");
    assert_eq!(server.rows("SELECT answer FROM answers").await, vec![json!([42])]);
}

/// A job deleted while a server waits for another's lease is not run when the lease runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_job_is_not_taken_over() {
    let lake = TestLake::new(Backend::Local);
    ghost_holds_the_latest_run(&lake, "answers", 2).await;
    let server = TestServer::start_on(lake, |c| {
        c.jobs_config.refresh = Duration::from_millis(500);
    })
    .await;
    // The server has seen the job and waits for the ghost's lease.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let response = server.client.delete(server.url("/v1/jobs/nightly")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 204);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (status, body) = server.sql("SELECT count(*) FROM answers").await;
    assert_eq!(status, 404, "the job's table was never made: {body}");
    let (status, body) = server.sql("SELECT count(*) FROM system.job_runs").await;
    assert_eq!(status, 404, "no attempt ran, none was recorded: {body}");
}
