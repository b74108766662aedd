//! `tarn.toml`: the tables, keys, jobs and alarms a server starts with.

use tarn_catalog::auth::KeySpec;
use tarn_catalog::TableSpec;
use tarn_pipelines::{AlertsConfig, JobSpec};

/// `tarn.toml`: tables to declare and API keys.
///
/// ```toml
/// [[tables]]
/// name = "leads"
/// columns = [
///   { name = "email", type = "string", nullable = false },
///   { name = "submitted_at", type = "timestamp" },
/// ]
/// unique_key = ["email"]
///
/// [[keys]]
/// name = "landing-page"
/// hash = "sha256:..."          # tarn key new --scope ingest:leads ...
/// scopes = ["ingest:leads"]
/// publishable = true
/// allowed_origins = ["https://www.example.com"]
///
/// [[jobs]]
/// name = "leads_by_country"
/// schedule = "0 7 * * *"
/// timezone = "Europe/Oslo"
/// sql = "SELECT country, count(*) AS leads FROM leads GROUP BY country"
/// into = { table = "reports.leads_by_country", mode = "replace" }
///
/// [alerts]
/// email = ["ops@example.com"]
/// ```
#[derive(Debug, Default)]
pub struct FileConfig {
    /// `[[tables]]`, by name.
    pub tables: Vec<(String, TableSpec)>,
    /// `[[keys]]`.
    pub keys: Vec<KeySpec>,
    /// `[[jobs]]`, by name.
    pub jobs: Vec<(String, JobSpec)>,
    /// `[alerts]`.
    pub alerts: AlertsConfig,
    /// `[rate_limit]`: the limit of keys that set none (and of everyone, on an open server).
    pub rate_limit: Option<tarn_catalog::auth::RateLimit>,
}

impl FileConfig {
    /// Reads `path`; a missing file is an empty configuration unless `required`.
    pub fn read(path: &std::path::Path, required: bool) -> anyhow::Result<FileConfig> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                return Ok(FileConfig::default())
            }
            Err(e) => anyhow::bail!("cannot read {}: {e}", path.display()),
        };
        let dir = path.parent().unwrap_or(std::path::Path::new("."));
        Self::parse_in(&text, dir).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// Parses the text of a `tarn.toml` (a job's `sql_file` is read relative to the current
    /// directory).
    pub fn parse(text: &str) -> anyhow::Result<FileConfig> {
        Self::parse_in(text, std::path::Path::new("."))
    }

    /// Parses the text of a `tarn.toml` whose relative paths (a job's `sql_file`) start at
    /// `dir`.
    fn parse_in(text: &str, dir: &std::path::Path) -> anyhow::Result<FileConfig> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            #[serde(default)]
            tables: Vec<toml::Table>,
            #[serde(default)]
            keys: Vec<KeySpec>,
            #[serde(default)]
            jobs: Vec<toml::Table>,
            #[serde(default)]
            alerts: AlertsConfig,
            #[serde(default)]
            rate_limit: Option<tarn_catalog::auth::RateLimit>,
        }
        let raw: Raw = toml::from_str(text)?;
        let mut jobs = Vec::with_capacity(raw.jobs.len());
        for (i, job) in raw.jobs.into_iter().enumerate() {
            let mut value = serde_json::to_value(&job)?;
            let name = value
                .as_object_mut()
                .and_then(|o| o.remove("name"))
                .and_then(|n| n.as_str().map(String::from))
                .ok_or_else(|| anyhow::anyhow!("[[jobs]] entry {} has no name", i + 1))?;
            // `sql_file = "report.sql"`: the query is kept in a file beside tarn.toml.
            if let Some(file) = value.as_object_mut().and_then(|o| o.remove("sql_file")) {
                let file = file
                    .as_str()
                    .ok_or_else(|| anyhow::anyhow!("job '{name}': sql_file is a path"))?;
                if value.get("sql").is_some() {
                    anyhow::bail!("job '{name}' has both sql and sql_file; keep one");
                }
                let path = dir.join(file);
                let sql = std::fs::read_to_string(&path).map_err(|e| {
                    anyhow::anyhow!("job '{name}': cannot read sql_file {}: {e}", path.display())
                })?;
                value["sql"] = serde_json::Value::String(sql);
            }
            let spec =
                JobSpec::from_json(value).map_err(|e| anyhow::anyhow!("job '{name}': {e}"))?;
            jobs.push((name, spec));
        }
        let mut tables = Vec::with_capacity(raw.tables.len());
        for (i, table) in raw.tables.into_iter().enumerate() {
            let value = serde_json::to_value(&table)?;
            let name = value
                .get("name")
                .and_then(|n| n.as_str())
                .ok_or_else(|| anyhow::anyhow!("[[tables]] entry {} has no name", i + 1))?
                .to_string();
            let spec = TableSpec::from_json(value, &["name"])
                .map_err(|e| anyhow::anyhow!("table '{name}': {e}"))?;
            tables.push((name, spec));
        }
        if let Some(limit) = &raw.rate_limit {
            limit.check().map_err(|e| anyhow::anyhow!("[rate_limit]: {e}"))?;
        }
        Ok(FileConfig {
            tables,
            keys: raw.keys,
            jobs,
            alerts: raw.alerts,
            rate_limit: raw.rate_limit,
        })
    }
}
