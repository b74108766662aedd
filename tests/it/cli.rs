//! The `tarn` binary itself: `tarn sql` on the lake without a server, and `tarn serve`
//! starting, answering and stopping gracefully on SIGTERM.

use std::process::Stdio;
use std::time::Duration;

use tarn_lake::backend_tests;
use tarn_lake::test_util::Backend;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::support::TestServer;

const TARN: &str = env!("CARGO_BIN_EXE_tarn");

backend_tests!(
    tarn_sql_prints_an_aligned_table,
    tarn_serve_stops_gracefully_on_sigterm,
    tarn_serve_runs_queries_on_tarn_workers
);

type Stderr = tokio::io::Lines<BufReader<tokio::process::ChildStderr>>;

/// A started `tarn` process, the address it logged it serves on (after `marker`), and the
/// rest of its log lines.
async fn spawn_logged(
    args: &[&str],
    env: Vec<(String, String)>,
    marker: &str,
) -> (tokio::process::Child, String, Stderr) {
    let mut child = tokio::process::Command::new(TARN)
        .args(args)
        .envs(env)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let marker = marker.to_string();
    let addr = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(rest) = line.split(marker.as_str()).nth(1) {
                return rest.split_whitespace().next().unwrap().to_string();
            }
        }
        panic!("tarn exited before it logged '{marker}'");
    })
    .await
    .expect("tarn logs where it listens");
    (child, addr, lines)
}

/// Reads (and drops) a process's log lines, so that it never blocks on a full pipe.
fn drain(mut lines: Stderr) {
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `tarn worker` twice and `tarn serve --workers`: a query's stages run on the workers
/// (EXPLAIN says so) and answer as one node does; with a worker stopped, queries go on.
async fn tarn_serve_runs_queries_on_tarn_workers(backend: Backend) {
    let lake = tarn_lake::test_util::TestLake::new(backend);
    let secret = ("TARN_CLUSTER_SECRET".to_string(), "cli-test-cluster-secret".to_string());
    let env = || lake.env().into_iter().chain([secret.clone()]).collect::<Vec<_>>();

    // A worker refuses a short secret, saying why.
    let short = tokio::process::Command::new(TARN)
        .args(["worker", "--lake", &lake.location, "--listen", "127.0.0.1:0"])
        .env("TARN_CLUSTER_SECRET", "short")
        .output()
        .await
        .unwrap();
    assert!(!short.status.success());
    assert!(String::from_utf8_lossy(&short.stderr).contains("at least 16 characters"));

    let mut workers = Vec::new();
    let mut urls = Vec::new();
    for _ in 0..2 {
        let listen = format!("127.0.0.1:{}", free_port());
        let args = ["worker", "--lake", &lake.location, "--listen", &listen];
        let (child, addr, lines) = spawn_logged(&args, env(), "serving query stages on ").await;
        drain(lines);
        urls.push(format!("http://{addr}"));
        workers.push(child);
    }
    let wal_dir = tempfile::tempdir().unwrap();
    let wal = wal_dir.path().to_str().unwrap().to_string();
    let list = urls.join(",");
    let args = [
        "serve",
        "--lake",
        &lake.location,
        "--listen",
        "127.0.0.1:0",
        "--pg-listen",
        "off",
        "--wal-dir",
        &wal,
        "--workers",
        &list,
        "--bytes-per-task",
        "2000",
    ];
    let (mut server, addr, lines) = spawn_logged(&args, env(), "on http://").await;
    drain(lines);

    let client = reqwest::Client::new();
    let body: String =
        (0..3000).map(|i| format!("{{\"user\": \"u{}\", \"n\": {i}}}\n", i % 7)).collect();
    let ingest = client
        .post(format!("http://{addr}/v1/ingest/clicks?wait=commit"))
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(ingest.status(), 200, "{}", ingest.text().await.unwrap());
    let sql = |sql: String| {
        let client = client.clone();
        let addr = addr.clone();
        async move {
            let response = client
                .post(format!("http://{addr}/v1/sql"))
                .json(&serde_json::json!({ "sql": sql }))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            response.json::<serde_json::Value>().await.unwrap()["rows"].clone()
        }
    };
    let query = "SELECT user, count(*) AS c, sum(n) AS s FROM clicks GROUP BY user ORDER BY user";
    let plan = sql(format!("EXPLAIN {query}")).await.to_string();
    assert!(plan.contains("distributed_plan") && plan.contains("tasks=2"), "{plan}");
    let expected: Vec<serde_json::Value> = (0..7)
        .map(|u| {
            let ns: Vec<i64> = (0..3000).filter(|i| i % 7 == u).collect();
            serde_json::json!([format!("u{u}"), ns.len(), ns.iter().sum::<i64>()])
        })
        .collect();
    assert_eq!(sql(query.to_string()).await, serde_json::Value::Array(expected.clone()));

    // One worker stops; once the server's probe saw it (every 2 s), queries answer again.
    let mut stopped = workers.pop().unwrap();
    let pid = stopped.id().unwrap().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = tokio::time::timeout(Duration::from_secs(30), stopped.wait()).await.unwrap();
    assert!(status.unwrap().success(), "a worker stops gracefully on SIGTERM");
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(sql(query.to_string()).await, serde_json::Value::Array(expected));
    let _ = server.kill().await;
}

async fn tarn_sql_prints_an_aligned_table(backend: Backend) {
    let server = TestServer::start(backend).await;
    let body = "{\"city\": \"Oslo\", \"visits\": 3}\n{\"city\": \"Lima\", \"visits\": 5}\n";
    assert_eq!(server.ingest("visits", "application/x-ndjson", body).await.0, 200);

    let output = tokio::process::Command::new(TARN)
        .args(["sql", "--lake", &server.lake.location])
        .arg("SELECT city, visits FROM visits ORDER BY city")
        .envs(server.lake.env())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    // The aligned table is the command's output under test (not a query result to compare).
    assert_eq!(
        stdout,
        "+------+--------+\n| city | visits |\n+------+--------+\n| Lima | 5      |\n| Oslo | 3      |\n+------+--------+\n(2 rows)\n"
    );

    let output = tokio::process::Command::new(TARN)
        .args(["sql", "--lake", &server.lake.location, "DROP TABLE visits"])
        .envs(server.lake.env())
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("read-only"));
}

async fn tarn_serve_stops_gracefully_on_sigterm(backend: Backend) {
    let lake = tarn_lake::test_util::TestLake::new(backend);
    let wal_dir = tempfile::tempdir().unwrap();
    let wal = wal_dir.path().to_str().unwrap();
    // Nothing is committed by age before the SIGTERM: shutdown must commit it.
    let args = [
        "serve",
        "--lake",
        &lake.location,
        "--listen",
        "127.0.0.1:0",
        "--pg-listen",
        "127.0.0.1:0",
        "--wal-dir",
        wal,
        "--flush-max-age-ms",
        "600000",
    ];
    let (mut child, addr, mut lines) = spawn_logged(&args, lake.env(), "on http://").await;

    let client = reqwest::Client::new();
    let health = client.get(format!("http://{addr}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let ingest = client
        .post(format!("http://{addr}/v1/ingest/pings"))
        .header("content-type", "application/json")
        .body(r#"{"n": 1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(ingest.status(), 202, "durable in the WAL, committed later");

    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let status =
        tokio::time::timeout(Duration::from_secs(30), child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "exit status {status:?}");
    let mut rest = String::new();
    while let Some(line) = lines.next_line().await.unwrap() {
        rest.push_str(&line);
        rest.push('\n');
    }
    assert!(rest.contains("SIGTERM received"), "{rest}");
    assert!(rest.contains("all buffered records are committed"), "{rest}");
    assert!(rest.contains("Tarn stopped"), "{rest}");

    // The record acknowledged before the SIGTERM is in the table.
    let output = tokio::process::Command::new(TARN)
        .args(["sql", "--lake", &lake.location, "SELECT count(*) AS n FROM pings"])
        .envs(lake.env())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("| 1 |"), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
}

/// `tarn load` of a file in an S3 bucket (the test server's), resumed when run again, and
/// `tarn key new` making a key the server takes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tarn_load_reads_s3_urls_and_keys_are_made_for_toml() {
    use object_store::{ObjectStoreExt, PutPayload};
    let lake = tarn_lake::test_util::TestLake::new(Backend::S3);
    let opened = lake.open().await;
    // The file sits beside the lake, in the same bucket.
    let prefix = lake
        .location
        .strip_prefix(&format!("s3://{}/", tarn_lake::test_util::s3_bucket()))
        .unwrap();
    let key = format!("{prefix}-exports/visits.csv");
    let root = tarn_lake::Lake::open(
        &format!("s3://{}", tarn_lake::test_util::s3_bucket()),
        lake.options.clone(),
    )
    .await
    .unwrap();
    root.store()
        .put(
            &object_store::path::Path::from(key.as_str()),
            PutPayload::from("city,visits\nOslo,3\nLima,5\n"),
        )
        .await
        .unwrap();
    drop(opened);
    let url = format!("s3://{}/{key}", tarn_lake::test_util::s3_bucket());
    let load = || {
        tokio::process::Command::new(TARN)
            .args(["load", "--quiet", "--lake", &lake.location, "--table", "visits", &url])
            .envs(lake.env())
            .output()
    };
    let output = load().await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        stdout.contains("2 rows loaded into default.visits, 0 rejected, 0 duplicates"),
        "{stdout}"
    );
    let again = load().await.unwrap();
    let stdout = String::from_utf8_lossy(&again.stdout).to_string();
    assert!(
        stdout.contains("0 rows loaded") && stdout.contains("1 chunks already loaded"),
        "{stdout}"
    );

    let output = tokio::process::Command::new(TARN)
        .args(["key", "new", "--name", "analyst", "--scope", "query"])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    let secret = text.lines().nth(1).unwrap().trim_start_matches("# ").to_string();
    let toml_part: String =
        text.lines().skip_while(|l| !l.starts_with("[[keys]]")).collect::<Vec<_>>().join("\n");
    let config = tarn::config::FileConfig::parse(&toml_part).unwrap();
    let server = TestServer::start_on(lake.alias(), |c| c.keys = config.keys).await;
    let ok = server
        .client
        .post(server.url("/v1/sql"))
        .bearer_auth(&secret)
        .body("SELECT count(*) FROM visits")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let body: serde_json::Value = ok.json().await.unwrap();
    assert_eq!(body["rows"], serde_json::json!([[2]]));
    let wrong = server
        .client
        .post(server.url("/v1/sql"))
        .bearer_auth("tk_wrong")
        .body("SELECT 1")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
}
