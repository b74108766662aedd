//! `tarn job list` and `tarn job run NAME`: jobs without a server.

use std::sync::Arc;

use anyhow::Context;
use tarn_pipelines::{Jobs, JobsConfig, Notifier, RetryPolicy};
use tarn_query::{QueryConfig, QueryEngine};

use crate::config::{FileConfig, JobArgs, JobCommand, LakeArgs};

/// Opens the lake, applies the tables and jobs of `config`, and builds the jobs service
/// (which schedules nothing: this process only does what it is asked).
async fn open(
    lake: &LakeArgs,
    config: &std::path::Path,
    smtp: Option<tarn_pipelines::SmtpConfig>,
) -> anyhow::Result<Arc<Jobs>> {
    let explicit = config != std::path::Path::new("tarn.toml");
    let file = FileConfig::read(config, explicit)?;
    let catalog = Arc::new(crate::cli::catalog(lake).await?);
    crate::server::apply_tables(&catalog, &file.tables).await?;
    let engine = Arc::new(QueryEngine::new(catalog.clone(), QueryConfig::default())?);
    let notifier = Notifier::new(smtp, RetryPolicy::default())
        .context("cannot set up notifications (--smtp-url, --smtp-from)")?;
    let node = format!("cli-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let jobs = Jobs::new(
        catalog,
        engine,
        notifier,
        node,
        JobsConfig { schedule: false, ..JobsConfig::default() },
        None,
    );
    jobs.apply_config(&file.jobs).await.context("cannot apply the configured jobs")?;
    Ok(jobs)
}

/// `tarn job …`.
pub async fn job(args: &JobArgs) -> anyhow::Result<()> {
    match &args.command {
        JobCommand::List { lake, config } => {
            let jobs = open(lake, config, None).await?;
            let list = jobs.list().await?;
            if list.is_empty() {
                println!("no jobs (declare them in tarn.toml's [[jobs]] or PUT /v1/jobs/NAME)");
            }
            for job in list {
                let next = job.next_run.map(|t| t.to_rfc3339()).unwrap_or_else(|| "-".into());
                let zone = job.definition.timezone.as_deref().unwrap_or("UTC");
                println!(
                    "{:<24} {:<16} {:<16} next {next}",
                    job.name, job.definition.schedule, zone
                );
            }
            Ok(())
        }
        JobCommand::Run { lake, config, notify, name } => {
            let jobs = open(lake, config, notify.smtp()).await?;
            let outcome = jobs.run_and_wait(name).await?;
            // Notifications go out before the process ends.
            jobs.notified().await;
            println!("{}", serde_json::to_string_pretty(&outcome)?);
            if outcome.state != "succeeded" {
                anyhow::bail!(
                    "job '{name}' failed after {} attempt(s): {}",
                    outcome.attempts,
                    outcome.error.as_deref().unwrap_or("no error recorded")
                );
            }
            Ok(())
        }
    }
}
