//! SQL behaviour as sqllogictest files: `tests/sql/*.slt`, one test per file and backend
//! (`slt::time_travel::local`, `slt::time_travel::s3`, ...), each against a fresh Tarn server.
//!
//! Queries go through `POST /v1/sql` as JSON, the way users send them, so the results are what
//! users see: values as the JSON answer has them (`NULL`, numbers, text; `(empty)` for an
//! empty string, nested values as JSON text), columns in the answer's order, and column types
//! from the answer's Tarn type names (see [`TarnType`]), checked strictly. An error answer
//! reaches sqllogictest as `<status> <code>: <message>` (e.g. `403 forbidden: the SQL
//! endpoint is read-only: ...`), so `statement error` / `query error` lines pin both the kind
//! and the words.
//!
//! The SQL endpoint is read-only, so data is set up with commands: a record whose text begins
//! with `tarn ` is turned into an HTTP call (or a file written into the lake). Its first line
//! is the command, the following lines (up to the blank line that ends the record) its body.
//! Errors come back the same way as SQL errors.
//!
//! | command | what it does | rows it answers |
//! |---|---|---|
//! | `tarn define <table>` + JSON | `PUT /v1/tables/<table>` with the definition | `status revision` |
//! | `tarn ingest <table> <type>` + body | `POST /v1/ingest/<table>?wait=commit`; `<type>` is `json`, `ndjson`, `csv`, `form` or a media type; anything but 200 is an error | `accepted rejected duplicates version` |
//! | `tarn put <path> [raw]` + body | writes the body to `<path>` in the lake; a `.parquet` path takes NDJSON rows and writes them as Parquet (schema inferred) unless `raw` | none |
//! | `tarn crawl <location>` | `POST /v1/crawl`; `<location>` relative to the lake's root | per table, by name: `name format partition_columns files partitions status` |
//! | `tarn drop <table> [purge]` | `DELETE /v1/tables/<table>[?purge=true]` | none |
//!
//! A record that expects what Tarn *should* answer but does not yet is marked `skipif
//! known_bug` with a comment naming the bug: the runner skips it unless
//! `TARN_SLT_KNOWN_BUGS=run` is set (then it fails until the bug is fixed).
//!
//! Each run writes `slt <file> (<backend>): <n> records, ...` straight to stderr (not captured
//! by the test harness), so `cargo test` lists the files it ran and their count of records.

use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;
use serde_json::{json, Value};
use sqllogictest::{AsyncDB, ColumnType, Condition, DBOutput, Record};
use tarn_lake::test_util::Backend;

use crate::support::TestServer;

/// Generates `slt::<file>::local` and `slt::<file>::s3` for `tests/sql/<file>.slt`.
macro_rules! slt_files {
    ($($file:ident),* $(,)?) => {
        /// Every file the macro was given, to check that none in `tests/sql` is left out.
        const FILES: &[&str] = &[$(stringify!($file)),*];
        $(
            mod $file {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn local() {
                    super::run_file(stringify!($file), tarn_lake::test_util::Backend::Local).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn s3() {
                    super::run_file(stringify!($file), tarn_lake::test_util::Backend::S3).await
                }
            }
        )*
    };
}

slt_files!(catalog, contracts, crawl, read_only, sql, time_travel);

fn sql_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sql")
}

/// A new `.slt` file must be added to `slt_files!` to run.
#[test]
fn every_slt_file_is_run() {
    let mut found: Vec<String> = std::fs::read_dir(sql_dir())
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".slt").map(String::from)
        })
        .collect();
    found.sort();
    assert_eq!(found, FILES, "tests/sql/*.slt and the slt_files! list in tests/it/slt.rs");
}

/// Runs `tests/sql/<name>.slt` against a fresh server on `backend`; panics with every record
/// that failed (each message names the file and line).
async fn run_file(name: &str, backend: Backend) {
    let path = sql_dir().join(format!("{name}.slt"));
    let records = sqllogictest::parse_file::<TarnType>(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let server = Arc::new(TestServer::start(backend).await);
    let mut runner = sqllogictest::Runner::new(move || {
        let server = server.clone();
        async move { Ok::<_, SltError>(Tarn { server }) }
    });
    runner.with_column_validator(sqllogictest::strict_column_validator);
    let skip_known_bugs = std::env::var("TARN_SLT_KNOWN_BUGS").as_deref() != Ok("run");
    if skip_known_bugs {
        runner.add_label("known_bug");
    }
    let (mut counted, mut known_bugs, mut failed) = (0, 0, Vec::new());
    for record in records {
        let conditions = match &record {
            Record::Statement { conditions, .. }
            | Record::Query { conditions, .. }
            | Record::Let { conditions, .. } => Some(conditions),
            _ => None,
        };
        if let Some(conditions) = conditions {
            counted += 1;
            let known_bug = Condition::SkipIf { label: "known_bug".into() };
            known_bugs += usize::from(conditions.contains(&known_bug));
        }
        if let Err(e) = runner.run_async(record).await {
            failed.push(e.display(false).to_string());
        }
    }
    let skipped = if skip_known_bugs { known_bugs } else { 0 };
    // Straight to stderr: the test harness captures print!, not this.
    let line = format!(
        "slt tests/sql/{name}.slt ({backend:?}): {counted} records, {} ran, {skipped} skipped \
         as known bugs, {} failed\n",
        counted - skipped,
        failed.len()
    );
    let _ = std::io::stderr().write_all(line.as_bytes());
    assert!(
        failed.is_empty(),
        "{} of {counted} records failed:\n\n{}",
        failed.len(),
        failed.join("\n")
    );
}

/// Column types as the JSON answer names them, one letter each in `query` lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TarnType {
    /// `I`: `int8` ... `int64`, `uint8` ... `uint64`.
    Integer,
    /// `R`: `float32`, `float64`, `decimal(p,s)`.
    Real,
    /// `T`: `string`.
    Text,
    /// `B`: `boolean`.
    Boolean,
    /// `D`: `date`.
    Date,
    /// `P`: `timestamp`, `timestamp_ntz` and other timestamps.
    Timestamp,
    /// `?`: anything else (`json` read as text is `T`; structs, lists, maps, binary, null).
    Other,
}

impl TarnType {
    fn of(name: &str) -> Self {
        match name {
            n if n.starts_with("int") || n.starts_with("uint") => TarnType::Integer,
            n if n.starts_with("float") || n.starts_with("decimal") => TarnType::Real,
            "string" => TarnType::Text,
            "boolean" => TarnType::Boolean,
            "date" => TarnType::Date,
            n if n.starts_with("timestamp") => TarnType::Timestamp,
            _ => TarnType::Other,
        }
    }
}

impl ColumnType for TarnType {
    fn from_char(value: char) -> Option<Self> {
        Some(match value {
            'I' => TarnType::Integer,
            'R' => TarnType::Real,
            'T' => TarnType::Text,
            'B' => TarnType::Boolean,
            'D' => TarnType::Date,
            'P' => TarnType::Timestamp,
            '?' => TarnType::Other,
            _ => return None,
        })
    }

    fn to_char(&self) -> char {
        match self {
            TarnType::Integer => 'I',
            TarnType::Real => 'R',
            TarnType::Text => 'T',
            TarnType::Boolean => 'B',
            TarnType::Date => 'D',
            TarnType::Timestamp => 'P',
            TarnType::Other => '?',
        }
    }
}

/// An error answer as users see it: `<status> <code>: <message>`.
#[derive(Debug)]
pub struct SltError(String);

impl std::fmt::Display for SltError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SltError {}

type Output = DBOutput<TarnType>;
type Answer = Result<Output, SltError>;

/// The database sqllogictest talks to: one Tarn server, over HTTP.
struct Tarn {
    server: Arc<TestServer>,
}

// `AsyncDB` is declared with `#[async_trait]`; these are the methods that macro would write,
// spelled out so the tests need no extra dependency.
impl AsyncDB for Tarn {
    type Error = SltError;
    type ColumnType = TarnType;

    fn run<'a, 'b, 'f>(
        &'a mut self,
        sql: &'b str,
    ) -> Pin<Box<dyn Future<Output = Answer> + Send + 'f>>
    where
        'a: 'f,
        'b: 'f,
        Self: 'f,
    {
        Box::pin(async move {
            match sql.trim_start().strip_prefix("tarn ") {
                Some(command) => self.command(command).await,
                None => self.sql(sql).await,
            }
        })
    }

    fn shutdown<'a, 'f>(&'a mut self) -> Pin<Box<dyn Future<Output = ()> + Send + 'f>>
    where
        'a: 'f,
        Self: 'f,
    {
        Box::pin(async {})
    }

    fn engine_name(&self) -> &str {
        "tarn"
    }

    /// `sleep` records (used only where time itself is under test) must not block a worker.
    fn sleep<'f>(dur: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + 'f>> {
        Box::pin(tokio::time::sleep(dur))
    }
}

/// The answer of an HTTP call: the body (JSON) if 2xx, else the error as users see it.
async fn answer(response: reqwest::Response) -> Result<(u16, Box<RawValue>), SltError> {
    let status = response.status().as_u16();
    let bytes = response.bytes().await.map_err(|e| SltError(format!("{status}: {e}")))?;
    let text = if bytes.is_empty() { "null" } else { std::str::from_utf8(&bytes).unwrap_or("") };
    let body = RawValue::from_string(text.to_string()).map_err(|e| {
        SltError(format!("{status}: not JSON ({e}): {}", String::from_utf8_lossy(&bytes)))
    })?;
    if (200..300).contains(&status) {
        return Ok((status, body));
    }
    let body: Value = serde_json::from_str(body.get()).unwrap_or_default();
    let error = &body["error"];
    match (error["code"].as_str(), error["message"].as_str()) {
        (Some(code), Some(message)) => Err(SltError(format!("{status} {code}: {message}"))),
        _ => Err(SltError(format!("{status} (no error body): {body}"))),
    }
}

/// A JSON value as a sqllogictest cell: text unquoted, numbers and nested values exactly as
/// the answer wrote them.
fn cell(raw: &RawValue) -> String {
    let text = raw.get();
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Null) => "NULL".into(),
        Ok(Value::String(s)) if s.is_empty() => "(empty)".into(),
        Ok(Value::String(s)) => s,
        _ => text.to_string(),
    }
}

fn raw(value: &Value) -> Box<RawValue> {
    RawValue::from_string(value.to_string()).expect("a JSON value")
}

fn rows(types: Vec<TarnType>, rows: Vec<Vec<Value>>) -> Output {
    let rows = rows.iter().map(|r| r.iter().map(|v| cell(&raw(v))).collect()).collect();
    DBOutput::Rows { types, rows }
}

/// The JSON answer of `POST /v1/sql`, its cells kept as written.
#[derive(serde::Deserialize)]
struct SqlAnswer {
    columns: Vec<SqlColumn>,
    rows: Vec<Vec<Box<RawValue>>>,
    #[serde(default)]
    truncated: bool,
}

#[derive(serde::Deserialize)]
struct SqlColumn {
    #[serde(rename = "type")]
    type_name: String,
}

impl Tarn {
    async fn sql(&self, sql: &str) -> Answer {
        let response = self
            .server
            .client
            .post(self.server.url("/v1/sql"))
            .json(&json!({ "sql": sql }))
            .send()
            .await
            .map_err(|e| SltError(e.to_string()))?;
        let (_, body) = answer(response).await?;
        let answer: SqlAnswer = serde_json::from_str(body.get())
            .map_err(|e| SltError(format!("not an answer of /v1/sql ({e}): {}", body.get())))?;
        if answer.truncated {
            return Err(SltError(format!("the answer was cut at the row cap: {sql}")));
        }
        Ok(DBOutput::Rows {
            types: answer.columns.iter().map(|c| TarnType::of(&c.type_name)).collect(),
            rows: answer.rows.iter().map(|r| r.iter().map(|v| cell(v)).collect()).collect(),
        })
    }

    async fn command(&self, text: &str) -> Answer {
        let (line, body) = text.split_once('\n').unwrap_or((text, ""));
        let words: Vec<&str> = line.split_whitespace().collect();
        let client = &self.server.client;
        let url = |path: &str| self.server.url(path);
        let send = |request: reqwest::RequestBuilder| async move {
            let (status, body) =
                answer(request.send().await.map_err(|e| SltError(e.to_string()))?).await?;
            let body: Value = serde_json::from_str(body.get()).expect("parsed before");
            Ok::<_, SltError>((status, body))
        };
        match words.as_slice() {
            ["define", table] => {
                let definition: Value = serde_json::from_str(body)
                    .map_err(|e| SltError(format!("tarn define {table}: bad JSON: {e}")))?;
                let (_, table) =
                    send(client.put(url(&format!("/v1/tables/{table}"))).json(&definition)).await?;
                Ok(rows(
                    vec![TarnType::Text, TarnType::Integer],
                    vec![vec![table["status"].clone(), table["revision"].clone()]],
                ))
            }
            ["ingest", table, kind] => {
                let content_type = match *kind {
                    "json" => "application/json",
                    "ndjson" => "application/x-ndjson",
                    "csv" => "text/csv",
                    "form" => "application/x-www-form-urlencoded",
                    media if media.contains('/') => media,
                    other => return Err(SltError(format!("tarn ingest: unknown type '{other}'"))),
                };
                let body = match *kind {
                    // A CSV body ends with a newline, as files do.
                    "csv" => format!("{body}\n"),
                    _ => body.to_string(),
                };
                let request = client
                    .post(url(&format!("/v1/ingest/{table}?wait=commit")))
                    .header("content-type", content_type)
                    .body(body);
                let (status, receipt) = send(request).await?;
                if status != 200 {
                    return Err(SltError(format!("{status}: not committed in time: {receipt}")));
                }
                let counts = ["accepted", "rejected", "duplicates", "version"];
                Ok(rows(
                    vec![TarnType::Integer; 4],
                    vec![counts.iter().map(|c| receipt[*c].clone()).collect()],
                ))
            }
            ["put", path] => {
                self.put(path, body, path.ends_with(".parquet")).await?;
                Ok(DBOutput::StatementComplete(0))
            }
            ["put", path, "raw"] => {
                self.put(path, body, false).await?;
                Ok(DBOutput::StatementComplete(0))
            }
            ["crawl", location] => {
                let request = client.post(url("/v1/crawl")).json(&json!({ "location": location }));
                let (_, report) = send(request).await?;
                let mut tables: Vec<Vec<Value>> = report["tables"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .map(|t| {
                        let partitions: Vec<&str> = t["partition_columns"]
                            .as_array()
                            .map(|a| a.iter().filter_map(Value::as_str).collect())
                            .unwrap_or_default();
                        vec![
                            t["name"].clone(),
                            t["format"].clone(),
                            json!(partitions.join(",")),
                            t["files"].clone(),
                            t["partitions"].clone(),
                            t["status"].clone(),
                        ]
                    })
                    .collect();
                tables.sort_by_key(|t| t[0].to_string());
                use TarnType::{Integer, Text};
                Ok(rows(vec![Text, Text, Text, Integer, Integer, Text], tables))
            }
            ["drop", table, rest @ ..] => {
                let purge = match rest {
                    [] => "",
                    ["purge"] => "?purge=true",
                    _ => return Err(SltError(format!("tarn drop: unexpected {rest:?}"))),
                };
                send(client.delete(url(&format!("/v1/tables/{table}{purge}")))).await?;
                Ok(DBOutput::StatementComplete(0))
            }
            _ => Err(SltError(format!("unknown command: tarn {line}"))),
        }
    }

    /// Writes `body` to `path` in the lake, as Parquet (from NDJSON rows) or as it is.
    async fn put(&self, path: &str, body: &str, parquet: bool) -> Result<(), SltError> {
        use object_store::{ObjectStoreExt, PutPayload};
        let bytes = if parquet {
            ndjson_to_parquet(body).map_err(|e| SltError(format!("tarn put {path}: {e}")))?
        } else {
            format!("{body}\n").into_bytes()
        };
        let lake = self.server.lake.open().await;
        lake.store()
            .put(&object_store::path::Path::from(path), PutPayload::from(bytes))
            .await
            .map_err(|e| SltError(format!("tarn put {path}: {e}")))?;
        Ok(())
    }
}

/// NDJSON rows as a Parquet file, with the schema arrow infers from them.
fn ndjson_to_parquet(ndjson: &str) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    use arrow::json::reader::{infer_json_schema, ReaderBuilder};
    let (schema, _) = infer_json_schema(std::io::Cursor::new(ndjson), None)?;
    let schema = Arc::new(schema);
    let reader = ReaderBuilder::new(schema.clone()).build(std::io::Cursor::new(ndjson))?;
    let mut out = Vec::new();
    let mut writer = parquet::arrow::ArrowWriter::try_new(&mut out, schema, None)?;
    for batch in reader {
        writer.write(&batch?)?;
    }
    writer.close()?;
    Ok(out)
}
