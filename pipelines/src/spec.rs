//! What a user declares about a job ([`JobSpec`], the body of `PUT /v1/jobs/{name}` and a
//! `[[jobs]]` entry of `tarn.toml`) and the job compiled from it ([`Job`]), checked once.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tarn_catalog::{TableName, SYSTEM_NAMESPACE};
use tarn_lake::WriteMode;
use tarn_query::OutputFormat;

use crate::notify::Recipients;
use crate::schedule::{format_duration, parse_duration, Schedule};
use crate::{Error, Result};

/// A job as declared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// When it runs: 5-field cron, `@hourly` / `@daily` / `@weekly`, or `every 30s`.
    pub schedule: String,
    /// The IANA zone the cron fields are read in (default UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// The query; read-only, like every query Tarn runs.
    pub sql: String,
    /// Write the result into a table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub into: Option<IntoSpec>,
    /// Write the result as files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export: Option<ExportSpec>,
    /// Attempts and backoff.
    #[serde(default)]
    pub retries: RetrySpec,
    /// Longest one attempt may run (`10m`).
    #[serde(default = "default_timeout")]
    pub timeout: String,
    /// Who is told about runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<NotifySpec>,
    /// Occurrences missed while no server ran: `latest` runs the latest one at start,
    /// `none` skips them.
    #[serde(default)]
    pub catch_up: CatchUp,
}

fn default_timeout() -> String {
    "10m".into()
}

/// `into`: the table the result is written into.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntoSpec {
    /// `name` or `namespace.name`; created from the result's schema when missing.
    pub table: String,
    /// `append`, `replace` or `merge`.
    #[serde(default)]
    pub mode: IntoMode,
    /// For `merge`: the key columns.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key: Vec<String>,
}

/// How the result meets the table's rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IntoMode {
    /// Add the rows.
    #[default]
    Append,
    /// The result becomes the table, in one commit.
    Replace,
    /// Upsert by `key`.
    Merge,
}

/// `export`: files written at a location.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportSpec {
    /// A directory in the lake (`exports/{date}/`) or `s3://bucket/prefix/{date}/`;
    /// placeholders `{date}` (the occurrence's date in the job's zone), `{job}`, `{run_id}`.
    pub location: String,
    /// `parquet` (default), `csv` or `ndjson`.
    #[serde(default)]
    pub format: ExportFormat,
}

/// The format of exported files.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExportFormat {
    /// Parquet (zstd).
    #[default]
    Parquet,
    /// CSV with a header line.
    Csv,
    /// One JSON object per line.
    Ndjson,
}

impl ExportFormat {
    /// The encoder's format.
    pub fn output(self) -> OutputFormat {
        match self {
            ExportFormat::Parquet => OutputFormat::Parquet,
            ExportFormat::Csv => OutputFormat::Csv,
            ExportFormat::Ndjson => OutputFormat::Ndjson,
        }
    }

    /// The files' extension.
    pub fn extension(self) -> &'static str {
        match self {
            ExportFormat::Parquet => "parquet",
            ExportFormat::Csv => "csv",
            ExportFormat::Ndjson => "ndjson",
        }
    }
}

/// `retries`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySpec {
    /// Attempts in all (1: no retry).
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    /// Wait before the second attempt; doubles for each further one.
    #[serde(default = "default_backoff")]
    pub backoff: String,
}

fn default_attempts() -> u32 {
    1
}

fn default_backoff() -> String {
    "30s".into()
}

impl Default for RetrySpec {
    fn default() -> Self {
        RetrySpec { attempts: default_attempts(), backoff: default_backoff() }
    }
}

/// `notify`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifySpec {
    /// When: `failure` (after the last attempt failed) and / or `success`.
    #[serde(default = "default_on")]
    pub on: Vec<NotifyOn>,
    /// A URL that gets a POST of the run's facts as JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
    /// Addresses that get an e-mail (needs `--smtp-url`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub email: Vec<String>,
}

fn default_on() -> Vec<NotifyOn> {
    vec![NotifyOn::Failure]
}

/// When a job notifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyOn {
    /// The run failed (after its last attempt).
    Failure,
    /// The run succeeded.
    Success,
}

/// What happens to occurrences missed while no server ran.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CatchUp {
    /// The latest missed occurrence runs at start.
    #[default]
    Latest,
    /// Missed occurrences are skipped.
    None,
}

/// Where a job's result goes, checked.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Into a table.
    Table {
        /// The table.
        table: TableName,
        /// How.
        mode: WriteMode,
    },
    /// Files at a location.
    Export {
        /// The location with its placeholders.
        location: ExportLocation,
        /// The format.
        format: ExportFormat,
    },
}

/// An export location: in the lake (a relative path) or in a bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportLocation {
    /// A directory relative to the lake's root.
    Lake(String),
    /// `s3://bucket/prefix/`.
    S3 {
        /// The bucket.
        bucket: String,
        /// The prefix within it (may hold placeholders).
        prefix: String,
    },
}

/// A job compiled from its spec.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// The job's name.
    pub name: String,
    /// What was declared.
    pub spec: JobSpec,
    /// When it runs.
    pub schedule: Schedule,
    /// Where its result goes.
    pub output: Output,
    /// Longest one attempt may run.
    pub timeout: Duration,
    /// Attempts in all.
    pub attempts: u32,
    /// Wait before the second attempt (doubling).
    pub backoff: Duration,
    /// Who is told, and when.
    pub recipients: Recipients,
    /// Tell about failures.
    pub notify_failure: bool,
    /// Tell about successes.
    pub notify_success: bool,
}

/// The most attempts a job may declare.
pub const MAX_ATTEMPTS: u32 = 20;

/// The longest timeout of an attempt.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// The longest first backoff (later ones double, up to the same bound).
pub const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// The placeholders an export location may hold.
const PLACEHOLDERS: [&str; 3] = ["{date}", "{job}", "{run_id}"];

/// Checks a job's name: a letter, then letters, digits, `_` or `-`, at most 128 characters;
/// stored in lower case.
pub fn check_name(name: &str) -> Result<String> {
    let lower = name.trim().to_ascii_lowercase();
    let invalid = |why: &str| Error::InvalidJob(format!("the job name '{name}' {why}"));
    if lower.is_empty() || lower.len() > 128 {
        return Err(invalid("must have 1 to 128 characters"));
    }
    if !lower.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err(invalid("must start with a letter"));
    }
    if let Some(c) = lower.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        return Err(invalid(&format!("holds '{c}'; use letters, digits, '_' and '-'")));
    }
    Ok(lower)
}

impl JobSpec {
    /// Reads a spec from JSON; unknown fields are refused with the list of known ones.
    pub fn from_json(value: serde_json::Value) -> Result<JobSpec> {
        serde_json::from_value(value).map_err(|e| Error::InvalidJob(e.to_string()))
    }

    /// Checks everything and compiles the job named `name`.
    pub fn compile(&self, name: &str) -> Result<Job> {
        let name = check_name(name)?;
        let invalid = |field: &str, why: String| Error::InvalidJob(format!("{field}: {why}"));
        let schedule = Schedule::parse(&self.schedule, self.timezone.as_deref())
            .map_err(|e| invalid("schedule", e))?;
        if self.sql.trim().trim_end_matches(';').trim().is_empty() {
            return Err(invalid("sql", "the query is empty".into()));
        }
        let timeout = parse_duration(&self.timeout).map_err(|e| invalid("timeout", e))?;
        if !(Duration::from_secs(1)..=MAX_TIMEOUT).contains(&timeout) {
            return Err(invalid(
                "timeout",
                format!("must be between 1s and {}", format_duration(MAX_TIMEOUT)),
            ));
        }
        let backoff =
            parse_duration(&self.retries.backoff).map_err(|e| invalid("retries.backoff", e))?;
        if backoff > MAX_BACKOFF {
            return Err(invalid(
                "retries.backoff",
                format!("must be at most {}", format_duration(MAX_BACKOFF)),
            ));
        }
        if !(1..=MAX_ATTEMPTS).contains(&self.retries.attempts) {
            return Err(invalid(
                "retries.attempts",
                format!("{} is not between 1 and {MAX_ATTEMPTS}", self.retries.attempts),
            ));
        }
        let output = match (&self.into, &self.export) {
            (Some(into), None) => into.compile()?,
            (None, Some(export)) => export.compile()?,
            (Some(_), Some(_)) => {
                return Err(Error::InvalidJob(
                    "a job has either 'into' (a table) or 'export' (files), not both".into(),
                ))
            }
            (None, None) => {
                return Err(Error::InvalidJob(
                    "say where the result goes: 'into' a table or 'export' to files".into(),
                ))
            }
        };
        let (recipients, on) = match &self.notify {
            Some(notify) => {
                let webhook = match &notify.webhook {
                    Some(url) => Some(url::Url::parse(url).map_err(|e| {
                        invalid("notify.webhook", format!("'{url}' is not a URL: {e}"))
                    })?),
                    None => None,
                };
                (Recipients { webhook, email: notify.email.clone() }, notify.on.clone())
            }
            None => (Recipients::default(), Vec::new()),
        };
        Ok(Job {
            name,
            spec: self.clone(),
            schedule,
            output,
            timeout,
            attempts: self.retries.attempts,
            backoff,
            recipients,
            notify_failure: on.contains(&NotifyOn::Failure),
            notify_success: on.contains(&NotifyOn::Success),
        })
    }
}

impl IntoSpec {
    fn compile(&self) -> Result<Output> {
        let table = TableName::parse(&self.table)
            .map_err(|e| Error::InvalidJob(format!("into.table: {e}")))?;
        if table.namespace() == SYSTEM_NAMESPACE {
            return Err(Error::InvalidJob(format!(
                "into.table: the namespace '{SYSTEM_NAMESPACE}' is Tarn's own"
            )));
        }
        let mode = match (self.mode, self.key.is_empty()) {
            (IntoMode::Merge, true) => {
                return Err(Error::InvalidJob(
                    "into.key: a merge needs the key columns that identify a row".into(),
                ))
            }
            (IntoMode::Merge, false) => WriteMode::Merge { key: self.key.clone() },
            (_, false) => {
                return Err(Error::InvalidJob(
                    "into.key: only a merge takes key columns (mode = \"merge\")".into(),
                ))
            }
            (IntoMode::Append, true) => WriteMode::Append,
            (IntoMode::Replace, true) => WriteMode::Replace,
        };
        Ok(Output::Table { table, mode })
    }
}

impl ExportSpec {
    fn compile(&self) -> Result<Output> {
        let invalid = |why: String| Error::InvalidJob(format!("export.location: {why}"));
        let text = self.location.trim();
        let mut rest = text;
        while let Some(start) = rest.find('{') {
            let Some(end) = rest[start..].find('}') else {
                return Err(invalid(format!("'{text}' has a '{{' without '}}'")));
            };
            let placeholder = &rest[start..start + end + 1];
            if !PLACEHOLDERS.contains(&placeholder) {
                return Err(invalid(format!(
                    "unknown placeholder {placeholder}; use {}",
                    PLACEHOLDERS.join(", ")
                )));
            }
            rest = &rest[start + end + 1..];
        }
        let location = if let Some(path) = text.strip_prefix("s3://") {
            let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
            if bucket.is_empty() || bucket.contains('{') {
                return Err(invalid(format!("'{text}' names no bucket")));
            }
            check_segments(prefix).map_err(invalid)?;
            ExportLocation::S3 { bucket: bucket.to_string(), prefix: prefix.to_string() }
        } else if text.contains("://") || text.starts_with('/') || text.starts_with('\\') {
            return Err(invalid(format!(
                "'{text}' is neither a directory in the lake (a relative path such as \
                 exports/{{date}}/) nor s3://bucket/prefix/"
            )));
        } else {
            check_segments(text).map_err(invalid)?;
            if text.starts_with('_') {
                return Err(invalid(format!(
                    "'{text}' is inside the lake's own folders (names starting with '_')"
                )));
            }
            if text.trim_matches('/').is_empty() {
                return Err(invalid("name a directory in the lake, e.g. exports/{date}/".into()));
            }
            ExportLocation::Lake(text.to_string())
        };
        Ok(Output::Export { location, format: self.format })
    }
}

/// Refuses path segments that would climb out of the location.
fn check_segments(path: &str) -> std::result::Result<(), String> {
    for segment in path.split('/') {
        if segment == "." || segment == ".." {
            return Err(format!("'{path}' holds a '{segment}' segment"));
        }
        if segment.chars().any(|c| c.is_control() || c == '\\') {
            return Err(format!("'{path}' holds a control character or a backslash"));
        }
    }
    Ok(())
}

impl Job {
    /// The job's spec with every default written out (what `GET /v1/jobs/{name}` shows).
    pub fn normalized(&self) -> JobSpec {
        let mut spec = self.spec.clone();
        spec.timeout = format_duration(self.timeout);
        spec.retries.backoff = format_duration(self.backoff);
        spec
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn compile(value: serde_json::Value) -> Result<Job> {
        JobSpec::from_json(value)?.compile("daily")
    }

    #[test]
    fn the_issue_example_compiles() {
        let job = compile(json!({
            "schedule": "0 7 * * *",
            "timezone": "Europe/Oslo",
            "sql": "SELECT country, count(*) AS leads FROM leads GROUP BY country",
            "into": {"table": "reports.leads_by_country", "mode": "replace"},
            "retries": {"attempts": 3, "backoff": "30s"},
            "timeout": "10m",
            "notify": {"on": ["failure"], "webhook": "https://hooks.example.com/tarn", "email": ["data@example.com"]}
        }))
        .unwrap();
        assert_eq!(job.attempts, 3);
        assert_eq!(job.timeout, Duration::from_secs(600));
        assert_eq!(job.backoff, Duration::from_secs(30));
        assert!(job.notify_failure && !job.notify_success);
        assert_eq!(
            job.output,
            Output::Table {
                table: TableName::parse("reports.leads_by_country").unwrap(),
                mode: WriteMode::Replace
            }
        );
    }

    #[test]
    fn mistakes_say_which_field() {
        let base = json!({"schedule": "@daily", "sql": "SELECT 1", "into": {"table": "t"}});
        let cases = [
            (json!({"schedul": "@daily"}), "unknown field `schedul`"),
            (json!({"schedule": "0 25 * * *"}), "schedule:"),
            (json!({"timezone": "Mars/Olympus"}), "schedule:"),
            (json!({"timeout": "10"}), "timeout:"),
            (json!({"timeout": "18446744073709551615s"}), "timeout:"),
            (json!({"timeout": "2d"}), "between 1s and 1d"),
            (json!({"retries": {"backoff": "2h"}}), "at most 1h"),
            (json!({"retries": {"attempts": 0}}), "retries.attempts"),
            (json!({"retries": {"backoff": "soon"}}), "retries.backoff"),
            (json!({"into": {"table": "system.x"}}), "Tarn's own"),
            (json!({"into": {"table": "t", "mode": "merge"}}), "into.key"),
            (json!({"into": {"table": "t", "key": ["id"]}}), "only a merge"),
            (json!({"export": {"location": "x/"}}), "not both"),
            (json!({"sql": "  ; "}), "sql:"),
            (json!({"notify": {"webhook": "not a url"}}), "notify.webhook"),
        ];
        for (patch, expected) in cases {
            let mut value = base.clone();
            for (k, v) in patch.as_object().unwrap() {
                value[k] = v.clone();
            }
            let e = compile(value.clone()).unwrap_err().to_string();
            assert!(e.contains(expected), "{value}: {e}");
        }
        let e = compile(json!({"schedule": "@daily", "sql": "SELECT 1"})).unwrap_err();
        assert!(e.to_string().contains("'into' a table or 'export'"), "{e}");
    }

    #[test]
    fn export_locations() {
        let export = |location: &str| {
            compile(json!({"schedule": "@daily", "sql": "SELECT 1",
                "export": {"location": location, "format": "csv"}}))
        };
        assert_eq!(
            export("exports/{date}/").unwrap().output,
            Output::Export {
                location: ExportLocation::Lake("exports/{date}/".into()),
                format: ExportFormat::Csv
            }
        );
        assert_eq!(
            export("s3://bucket/out/{job}/{run_id}/").unwrap().output,
            Output::Export {
                location: ExportLocation::S3 {
                    bucket: "bucket".into(),
                    prefix: "out/{job}/{run_id}/".into()
                },
                format: ExportFormat::Csv
            }
        );
        for (bad, expected) in [
            ("/etc/", "neither"),
            ("file:///tmp/x", "neither"),
            ("../up", "'..'"),
            ("exports/../../x", "'..'"),
            ("_tarn/x", "lake's own"),
            ("exports/{day}/", "unknown placeholder {day}"),
            ("exports/{date/", "without"),
            ("s3:///x", "no bucket"),
            ("", "name a directory"),
        ] {
            let e = export(bad).unwrap_err().to_string();
            assert!(e.contains(expected), "{bad}: {e}");
        }
    }

    #[test]
    fn names() {
        assert_eq!(check_name("Daily-Leads_2").unwrap(), "daily-leads_2");
        for bad in ["", "2x", "a b", "a/b", "a.b", &"x".repeat(129)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
