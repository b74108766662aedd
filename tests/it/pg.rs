//! The Postgres wire protocol, spoken by the real `psql` (Debian's `postgresql-client`;
//! scripts/test installs it when missing).

use std::time::Duration;

use tarn_catalog::auth::KeySpec;
use tarn_lake::backend_tests;
use tarn_lake::test_util::Backend;

use crate::support::TestServer;

backend_tests!(psql_lists_tables_and_queries_them);

/// What one psql run printed.
struct Psql {
    success: bool,
    stdout: String,
    stderr: String,
}

/// A server with the Postgres endpoint on a free port, and `keys`.
async fn start(backend: Backend, keys: Vec<KeySpec>) -> TestServer {
    TestServer::start_with(backend, |config| {
        config.pg_listen = Some("127.0.0.1:0".parse().unwrap());
        config.keys = keys;
    })
    .await
}

/// Runs `psql` with each of `commands` (`-c`, one session), as user `analyst` on database
/// `tarn`, with `password` (never prompting for one).
async fn psql(server: &TestServer, password: Option<&str>, commands: &[&str]) -> Psql {
    let addr = server.pg_addr.expect("the Postgres endpoint is on");
    let mut command = tokio::process::Command::new("psql");
    command
        .args(["-X", "-w", "-v", "ON_ERROR_STOP=1"])
        .args(["-h", &addr.ip().to_string(), "-p", &addr.port().to_string()])
        .args(["-U", "analyst", "-d", "tarn"])
        .env("PGCONNECT_TIMEOUT", "20")
        .env_remove("PGPASSWORD")
        .env_remove("PGSERVICE")
        .kill_on_drop(true);
    if let Some(password) = password {
        command.env("PGPASSWORD", password);
    }
    for c in commands {
        command.args(["-c", c]);
    }
    let output = tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .expect("psql finishes")
        .expect("psql runs (Debian package postgresql-client)");
    Psql {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

impl std::fmt::Display for Psql {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "success: {}\n--- stdout\n{}--- stderr\n{}",
            self.success, self.stdout, self.stderr
        )
    }
}

async fn psql_lists_tables_and_queries_them(backend: Backend) {
    let server = start(backend, Vec::new()).await;
    let (code, body) = server
        .ingest(
            "events",
            "application/x-ndjson",
            "{\"id\": 1, \"kind\": \"view\"}\n{\"id\": 2, \"kind\": \"click\"}\n{\"id\": 3, \"kind\": \"view\"}\n",
        )
        .await;
    assert_eq!(code, 200, "{body}");

    let out = psql(
        &server,
        None,
        &[
            "\\dt",
            "SELECT count(*) AS n FROM events",
            "SELECT kind, count(*) AS n FROM events GROUP BY kind ORDER BY kind",
        ],
    )
    .await;
    assert!(out.success, "{out}");
    // \dt: the table, in schema default.
    assert!(out.stdout.contains("List of relations"), "{out}");
    let listed = out.stdout.lines().find(|l| l.contains("events")).unwrap_or_default();
    assert!(listed.contains("default") && listed.contains("table"), "{out}");
    // The counts.
    let lines: Vec<&str> = out.stdout.lines().map(str::trim).collect();
    assert!(lines.windows(3).any(|w| w[0] == "n" && w[2] == "3"), "{out}");
    assert!(lines.iter().any(|l| l.starts_with("click") && l.ends_with("| 1")), "{out}");
    assert!(lines.iter().any(|l| l.starts_with("view") && l.ends_with("| 2")), "{out}");

    // A table created after the endpoint started is there, without a restart, and time
    // travel reads the first version.
    let (code, body) = server.ingest("clicks", "application/json", r#"{"page": "/pricing"}"#).await;
    assert_eq!(code, 200, "{body}");
    let (code, body) =
        server.ingest("events", "application/json", r#"{"id": 4, "kind": "buy"}"#).await;
    assert_eq!(code, 200, "{body}");
    let out = psql(
        &server,
        None,
        &[
            "\\dt",
            "SELECT count(*) AS now FROM events",
            "SELECT count(*) AS first FROM events VERSION AS OF 1",
            "SELECT page FROM default.clicks",
        ],
    )
    .await;
    assert!(out.success, "{out}");
    assert!(out.stdout.lines().any(|l| l.contains("clicks") && l.contains("table")), "{out}");
    let lines: Vec<&str> = out.stdout.lines().map(str::trim).collect();
    assert!(lines.windows(3).any(|w| w[0] == "now" && w[2] == "4"), "{out}");
    assert!(lines.windows(3).any(|w| w[0] == "first" && w[2] == "3"), "{out}");
    assert!(lines.contains(&"/pricing"), "{out}");

    // Nothing that writes gets through.
    for write in [
        "CREATE TABLE t (a INT)",
        "CREATE TABLE t AS SELECT 1",
        "INSERT INTO events VALUES (5, 'view')",
        "DELETE FROM events",
        "DROP TABLE events",
        "COPY events TO STDOUT",
        "SELECT * INTO copied FROM events",
        "SET datafusion.execution.batch_size = 1",
    ] {
        let out = psql(&server, None, &[write]).await;
        assert!(!out.success, "{write}: {out}");
        assert!(
            out.stderr.contains("read-only") || out.stderr.contains("cannot be changed"),
            "{write}: {out}"
        );
    }
    // The table is as it was.
    assert_eq!(server.rows("SELECT count(*) FROM events").await, vec![serde_json::json!([4])]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_needs_a_query_key_as_password() {
    let key = crate::support::key;
    let server = start(
        Backend::Local,
        vec![
            key("analyst", "tk_query", &["query"], false),
            key("loader", "tk_ingest", &["ingest:events"], false),
            key("site", "pk_site", &["ingest:events"], true),
        ],
    )
    .await;
    let query = "SELECT 40 + 2 AS answer";

    let out = psql(&server, None, &[query]).await;
    assert!(!out.success, "{out}");
    assert!(out.stderr.contains("password"), "{out}");

    let out = psql(&server, Some("tk_wrong"), &[query]).await;
    assert!(!out.success, "{out}");
    assert!(out.stderr.contains("the API key is not valid"), "{out}");

    for refused in ["tk_ingest", "pk_site"] {
        let out = psql(&server, Some(refused), &[query]).await;
        assert!(!out.success, "{refused}: {out}");
        assert!(
            out.stderr.contains("does not allow queries") || out.stderr.contains("publishable"),
            "{refused}: {out}"
        );
    }

    let out = psql(&server, Some("tk_query"), &[query, "\\dt"]).await;
    assert!(out.success, "{out}");
    assert!(out.stdout.lines().any(|l| l.trim() == "42"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_queries_stop_at_the_time_limit() {
    let server = TestServer::start_with(Backend::Local, |config| {
        config.pg_listen = Some("127.0.0.1:0".parse().unwrap());
        config.query.timeout = Duration::from_secs(1);
    })
    .await;
    // Far more than a second of work on any machine.
    let out = psql(&server, None, &["SELECT count(*) FROM generate_series(1, 100000000000)"]).await;
    assert!(!out.success, "{out}");
    assert!(out.stderr.contains("ran longer than its limit of 1 s"), "{out}");
    // The slot is free again.
    let out = psql(&server, None, &["SELECT 1 AS one"]).await;
    assert!(out.success, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_messages_of_many_statements_share_one_slot_and_cursors_are_refused() {
    // One slot: a message of three queries must not wait for itself.
    let server = TestServer::start_with(Backend::Local, |config| {
        config.pg_listen = Some("127.0.0.1:0".parse().unwrap());
        config.query.max_concurrent = 1;
    })
    .await;
    let out = psql(&server, None, &["SELECT 11 AS a; SELECT 22 AS b; SELECT 33 AS c"]).await;
    assert!(out.success, "{out}");
    for value in ["11", "22", "33"] {
        assert!(out.stdout.lines().any(|l| l.trim() == value), "{out}");
    }
    // Its slot is released: the next query gets one.
    let out = psql(&server, None, &["SELECT 44 AS d"]).await;
    assert!(out.success, "{out}");

    // Cursors would run outside the slots and the time limit: refused, as not offered.
    let out = psql(
        &server,
        None,
        &["BEGIN; DECLARE c CURSOR FOR SELECT * FROM generate_series(1, 10); COMMIT"],
    )
    .await;
    assert!(!out.success, "{out}");
    assert!(out.stderr.contains("cursors (DECLARE ... CURSOR) are not supported"), "{out}");
    // Shared settings stay put whatever the scope a SET names.
    let out = psql(&server, None, &["SET SESSION datafusion.execution.batch_size = 1"]).await;
    assert!(!out.success, "{out}");
    assert!(out.stderr.contains("cannot be changed"), "{out}");
}

/// A Python script with psycopg (extended protocol: Parse/Bind/Execute, named prepared
/// statements) against the Postgres endpoint at `addr`; returns what it printed.
async fn psycopg(addr: std::net::SocketAddr, script: &str) -> String {
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(tarn_lake::test_util::python())
            .arg("-c")
            .arg(script)
            .env(
                "TARN_PG",
                format!("host={} port={} user=analyst dbname=tarn", addr.ip(), addr.port()),
            )
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("python finishes")
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_see_new_commits_and_parameters_bind() {
    let server = TestServer::start_with(Backend::Local, |config| {
        config.pg_listen = Some("127.0.0.1:0".parse().unwrap());
        config.query.max_result_rows = 5;
    })
    .await;
    let (code, _) = server.ingest("ticks", "application/json", r#"[{"n": 1}, {"n": 2}]"#).await;
    assert_eq!(code, 200);
    let addr = server.pg_addr.unwrap();
    // A server-side prepared statement (prepare=True), executed before and after an ingest
    // made over HTTP while the connection stays open.
    let script = r#"
import os, sys, urllib.request
import psycopg
with psycopg.connect(os.environ["TARN_PG"], autocommit=True) as conn:
    query = "SELECT count(*), sum(n) FROM ticks WHERE n >= %s"
    print("before", conn.execute(query, (1,), prepare=True).fetchone())
    sys.stdout.flush()
    sys.stdin.readline()
    print("after", conn.execute(query, (1,), prepare=True).fetchone())
    print("bound", conn.execute(query, (3,), prepare=True).fetchone())
"#;
    let mut child = tokio::process::Command::new(tarn_lake::test_util::python())
        .arg("-c")
        .arg(script)
        .env("TARN_PG", format!("host={} port={} user=analyst dbname=tarn", addr.ip(), addr.port()))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let before = tokio::time::timeout(Duration::from_secs(60), stdout.next_line())
        .await
        .expect("psycopg answers")
        .unwrap()
        .unwrap_or_default();
    assert_eq!(before, "before (2, 3)");
    let (code, _) = server.ingest("ticks", "application/json", r#"{"n": 3}"#).await;
    assert_eq!(code, 200);
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"go\n").await.unwrap();
    drop(stdin);
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("psycopg finishes")
        .unwrap();
    let mut rest = Vec::new();
    while let Some(line) = stdout.next_line().await.unwrap() {
        rest.push(line);
    }
    assert!(output.status.success(), "{rest:?} {}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(rest, vec!["after (3, 6)", "bound (1, 3)"]);

    // The extended protocol is read-only too, and an Execute without a row limit (which the
    // protocol library holds in memory) stops at the row cap.
    let refused = psycopg(
        addr,
        r#"
import os, psycopg
with psycopg.connect(os.environ["TARN_PG"], autocommit=True) as conn:
    for query, args in [("INSERT INTO ticks VALUES (%s)", (9,)),
                        ("SELECT value FROM generate_series(1, 10) WHERE value >= %s", (0,)),
                        ("SELECT value FROM generate_series(1, 10) WHERE value >= %s", (6,))]:
        try:
            print(len(conn.execute(query, args).fetchall()))
        except psycopg.Error as e:
            print(e.sqlstate)
"#,
    )
    .await;
    assert_eq!(refused.lines().collect::<Vec<_>>(), vec!["25006", "54000", "5"]);
}

/// SQLAlchemy's postgres dialect (what Superset, `pandas.read_sql` and Airflow's Postgres hook
/// use) reads the server's version from `SELECT pg_catalog.version()` and refused to connect
/// while it said "Apache DataFusion …". With both drivers, psycopg2 (which puts parameters
/// into the SQL itself) and psycopg 3 (which binds them server-side, with the extended
/// protocol), it connects, reflects schemas, tables and columns, and `pandas.read_sql` binds a
/// parameter. Column reflection over psycopg 3 failed with "Failed to parse parameter: invalid
/// digit found in string": its query has parameters in scalar subqueries that the SQL rewrites
/// drop, and the string parameters were read with the types of the ones after them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlalchemy_connects_reflects_and_reads_with_pandas() {
    let server = TestServer::start_with(Backend::Local, |config| {
        config.pg_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let leads = "{\"email\": \"a@x.no\", \"country\": \"NO\", \"n\": 1}\n{\"email\": \"b@x.se\", \"country\": \"SE\", \"n\": 2}";
    assert_eq!(server.ingest("leads", "application/x-ndjson", leads).await.0, 200);
    let addr = server.pg_addr.unwrap();
    let out = psycopg(
        addr,
        &format!(
            r#"
import pandas as pd, psycopg, sqlalchemy as sa
with psycopg.connect("host={ip} port={port} user=analyst dbname=tarn") as conn:
    print("version()", conn.execute("SELECT version()").fetchone()[0])
    print("SHOW server_version", conn.execute("SHOW server_version").fetchone()[0])
    print("server_version parameter", conn.info.server_version)
for driver in ["psycopg2", "psycopg"]:
    engine = sa.create_engine("postgresql+" + driver + "://analyst@{ip}:{port}/tarn")
    with engine.connect():
        print(driver, "version", engine.dialect.server_version_info)
    inspector = sa.inspect(engine)
    print(driver, "schemas", inspector.get_schema_names())
    print(driver, "tables", inspector.get_table_names(schema="default"))
    print(driver, "columns", [(c["name"], str(c["type"])) for c in inspector.get_columns("leads", schema="default")])
    frame = pd.read_sql(sa.text("SELECT email, n FROM leads WHERE n > :least AND country <> :not ORDER BY email"), engine, params={{"least": 1, "not": "DK"}})
    print(driver, "read_sql", frame.to_dict("records"))
"#,
            ip = addr.ip(),
            port = addr.port()
        ),
    )
    .await;
    println!("{out}");
    let version = format!("PostgreSQL 16.6 (Tarn {}", env!("CARGO_PKG_VERSION"));
    assert!(out.contains(&format!("version() {version} on DataFusion ")), "{out}");
    assert!(out.contains("SHOW server_version 16.6 (Tarn "), "{out}");
    assert!(out.contains("server_version parameter 160006"), "{out}");
    for driver in ["psycopg2", "psycopg"] {
        assert!(out.contains(&format!("{driver} version (16, 6)")), "{out}");
        assert!(out.contains(&format!("{driver} schemas ['default']")), "{out}");
        assert!(out.contains(&format!("{driver} tables ['leads']")), "{out}");
        assert!(
            out.contains(&format!(
                "{driver} columns [('email', 'TEXT'), ('country', 'TEXT'), ('n', 'BIGINT')]"
            )),
            "{out}"
        );
        assert!(
            out.contains(&format!("{driver} read_sql [{{'email': 'b@x.se', 'n': 2}}]")),
            "{out}"
        );
    }
}

/// Runs `program` with `args`, within two minutes; its stdout, or a failure with everything it
/// printed. `missing` says what to install when the program is not there.
async fn run_client(program: &str, args: &[&str], env: &[(&str, &str)], missing: &str) -> String {
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(program)
            .args(args)
            .envs(env.iter().copied())
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("{program} {args:?} did not finish within 2 minutes"))
    .unwrap_or_else(|e| panic!("cannot run {program} ({e}): {missing}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "{program} {args:?} failed\n--- stdout\n{stdout}--- stderr\n{stderr}"
    );
    stdout
}

/// Fails, saying what to install, when `path` is missing (scripts/test installs it).
fn require(path: &str, package: &str) {
    assert!(
        std::path::Path::new(path).exists(),
        "{path} is missing: install the Debian package {package} (scripts/test does)"
    );
}

/// A server with the Postgres endpoint, table `leads` (two rows) and declared table
/// `metrics` (a timestamp, a host, a value: four rows, one of them outside 10:00–11:00).
async fn bi_server(max_result_rows: usize) -> TestServer {
    let server = TestServer::start_with(Backend::Local, |config| {
        config.pg_listen = Some("127.0.0.1:0".parse().unwrap());
        config.query.max_result_rows = max_result_rows;
    })
    .await;
    let leads = "{\"email\": \"a@x.no\", \"country\": \"NO\", \"n\": 1}\n{\"email\": \"b@x.se\", \"country\": \"SE\", \"n\": 2}";
    assert_eq!(server.ingest("leads", "application/x-ndjson", leads).await.0, 200);
    let (code, body) = server
        .define(
            "metrics",
            serde_json::json!({"columns": [
                {"name": "ts", "type": "timestamp"},
                {"name": "host", "type": "string"},
                {"name": "value", "type": "float64"}
            ]}),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    let metrics = "{\"ts\": \"2024-05-01T10:00:00Z\", \"host\": \"a\", \"value\": 1.5}\n\
                   {\"ts\": \"2024-05-01T10:00:30Z\", \"host\": \"b\", \"value\": 2.5}\n\
                   {\"ts\": \"2024-05-01T10:01:10Z\", \"host\": \"a\", \"value\": 4}\n\
                   {\"ts\": \"2024-05-02T00:00:00Z\", \"host\": \"a\", \"value\": 100}";
    let (code, body) = server.ingest("metrics", "application/x-ndjson", metrics).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["accepted"], 4, "{body}");
    server
}

/// The real PostgreSQL JDBC driver (Debian's libpostgresql-jdbc-java), as DBeaver and Metabase
/// use it: DatabaseMetaData lists schemas, tables and columns, and a PreparedStatement with a
/// bound parameter and a fetch size pages its rows (Execute with a row limit), past the row
/// cap that an Execute without one has (10 here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jdbc_lists_schemas_tables_columns_and_pages_a_prepared_statement() {
    const JAR: &str = "/usr/share/java/postgresql.jar";
    require(JAR, "libpostgresql-jdbc-java");
    let server = bi_server(10).await;
    let addr = server.pg_addr.unwrap();
    let (host, port) = (addr.ip().to_string(), addr.port().to_string());
    let out = run_client(
        "java",
        &["-cp", JAR, "tests/pg/JdbcCheck.java", &host, &port],
        &[],
        "install Java 17 or later (Debian's default-jdk-headless)",
    )
    .await;
    println!("{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.contains(&"product PostgreSQL 16.6 (Tarn 0.1.0)"), "{out}");
    assert!(lines.iter().any(|l| l.starts_with("driver PostgreSQL JDBC Driver ")), "{out}");
    assert!(lines.contains(&"schemas [default, pg_catalog]"), "{out}");
    assert!(
        lines.contains(
            &"tables [default.leads:TABLE, default.metrics:TABLE, default.metrics_rejected:TABLE]"
        ),
        "{out}"
    );
    assert!(lines.contains(&"columns [email:text, country:text, n:int8]"), "{out}");
    // 9..=20: twelve rows, more than the cap of 10, fetched four at a time.
    assert!(lines.contains(&"paged rows 12 sum 174"), "{out}");
    assert!(lines.contains(&"leads [b@x.se/2]"), "{out}");
}

/// Grafana's PostgreSQL data source, reproduced with Go's pgx (Debian's
/// golang-github-jackc-pgx-v4-dev, built offline against /usr/share/gocode): the health check,
/// the version, the schema, table and column pickers' queries, and a time-series panel query
/// with `$__timeGroupAlias(ts, 1m)` and `$__timeFilter(ts)` expanded, sent like Grafana over
/// the simple protocol and decoded by type OID, then with the time range bound as parameters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grafana_queries_through_pgx() {
    require("/usr/share/gocode/src/github.com/jackc/pgx/v4", "golang-github-jackc-pgx-v4-dev");
    let server = bi_server(10_000).await;
    let addr = server.pg_addr.unwrap();
    let (host, port) = (addr.ip().to_string(), addr.port().to_string());
    let out = run_client(
        "go",
        &["run", "tests/pg/grafana_pgx.go", &host, &port],
        &[("GO111MODULE", "off"), ("GOPATH", "/usr/share/gocode"), ("GOFLAGS", "")],
        "install the Debian packages golang-go and golang-github-jackc-pgx-v4-dev (scripts/test does)",
    )
    .await;
    println!("{out}");
    let lines: Vec<&str> = out.lines().collect();
    let version =
        format!("version() PostgreSQL 16.6 (Tarn {} on DataFusion ", env!("CARGO_PKG_VERSION"));
    assert!(lines.iter().any(|l| l.starts_with(&version)), "{out}");
    assert!(lines.contains(&"server_version 16.6 (Tarn 0.1.0)"), "{out}");
    assert!(lines.contains(&"version [1600]"), "{out}");
    assert!(lines.contains(&"schemas [default]"), "{out}");
    // Named with their schema: the search-path test of this list is in its select list and
    // ORDER BY, where it stays replaced (see query/src/pg/rewrite.rs).
    assert!(
        lines.contains(
            &"tables [\"default\".leads \"default\".metrics \"default\".metrics_rejected]"
        ),
        "{out}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("columns [ts|")
            && l.contains(" host|")
            && l.contains(" value|")),
        "{out}"
    );
    // Minute buckets of 10:00 to 11:00 on 2024-05-01 (1714557600 is 10:00): the row of the
    // next day is outside the range.
    assert!(lines.contains(&"panel [1714557600|a|1.5 1714557600|b|2.5 1714557660|a|4]"), "{out}");
    assert!(lines.contains(&"bound panel [10:00/a/1.5 10:00/b/2.5 10:01/a/4]"), "{out}");
}
