//! The flags of a cluster: the workers a server plans on (`tarn serve --workers`) and
//! `tarn worker` itself.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use tarn_query::cluster::ClusterConfig;
use tarn_query::QueryConfig;

use super::LakeArgs;

/// The query workers of a serving node (`tarn serve --workers`).
#[derive(Debug, Clone, Default, Args)]
pub struct ClusterArgs {
    /// Run query stages on these `tarn worker`s: comma-separated URLs (http://10.0.0.5:7000),
    /// as every worker reaches the others too (shuffles go from worker to worker). Queries
    /// are planned here and run here when no worker answers.
    #[arg(long, env = "TARN_WORKERS", value_delimiter = ',')]
    pub workers: Vec<url::Url>,
    /// The secret the workers were started with (at least 16 characters, e.g. from
    /// `openssl rand -hex 24`). Prefer the environment variable.
    #[arg(long, env = "TARN_CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<String>,
    /// Parquet bytes per task of a scan stage on the workers: smaller scans run as one task.
    #[arg(long, env = "TARN_BYTES_PER_TASK", default_value_t = ClusterConfig::DEFAULT_BYTES_PER_TASK)]
    pub bytes_per_task: usize,
}

impl ClusterArgs {
    /// The cluster, when workers are named.
    pub fn config(&self) -> anyhow::Result<Option<ClusterConfig>> {
        if self.workers.is_empty() {
            return Ok(None);
        }
        let Some(secret) = self.cluster_secret.clone() else {
            anyhow::bail!(
                "--workers needs the workers' secret: --cluster-secret or TARN_CLUSTER_SECRET"
            );
        };
        let config = ClusterConfig {
            workers: self.workers.clone(),
            secret,
            bytes_per_task: self.bytes_per_task.max(1),
            probe_every: tarn_query::cluster::PROBE_EVERY,
        };
        config.check().map_err(|e| anyhow::anyhow!("--workers: {e}"))?;
        Ok(Some(config))
    }
}

/// `tarn worker`.
#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub lake: LakeArgs,
    /// Address to listen on for serving nodes (gRPC). Workers serve no public: keep them on
    /// a private network.
    #[arg(long, env = "TARN_WORKER_LISTEN", default_value_t = tarn_query::cluster::DEFAULT_WORKER_LISTEN)]
    pub listen: SocketAddr,
    /// The secret serving nodes must present (at least 16 characters, e.g. from
    /// `openssl rand -hex 24`). Prefer the environment variable.
    #[arg(long, env = "TARN_CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: String,
    /// Memory the tasks on this worker share, in bytes; beyond their share, sorts, joins and
    /// aggregations spill to disk.
    #[arg(long, env = "TARN_QUERY_MEMORY_BYTES", default_value_t = QueryConfig::default().memory_limit)]
    pub query_memory_bytes: usize,
    /// Directory for spill files (default: the system's temporary directory).
    #[arg(long, env = "TARN_QUERY_SPILL_DIR")]
    pub query_spill_dir: Option<PathBuf>,
}
