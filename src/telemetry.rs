//! Logging: `tracing` to stderr, filtered by `RUST_LOG`.

use tracing_subscriber::EnvFilter;

/// What is logged when `RUST_LOG` is not set: Tarn's own events at info, others' warnings.
pub const DEFAULT_FILTER: &str =
    "warn,tarn=info,tarn_lake=info,tarn_catalog=info,tarn_ingest=info,tarn_query=info";

/// Installs the global subscriber. Safe to call more than once (later calls do nothing).
pub fn init() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let _ =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}
