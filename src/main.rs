//! The `tarn` binary: parse the command line, then hand over to the library.

use clap::Parser;
use tarn::config::{Cli, Command};

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tarn::telemetry::init(cli.log_format);
    match cli.command {
        Command::Serve(args) => {
            let app =
                tarn::Application::build(tarn::config::ServeConfig::from_args(*args)?).await?;
            app.run_until_stopped().await
        }
        Command::Sql(args) => tarn::cli::sql(&args).await,
        Command::Optimize(args) => tarn::cli::optimize(&args).await,
        Command::Vacuum(args) => tarn::cli::vacuum(&args).await,
        Command::Load(args) => tarn::cli::load(&args).await,
        Command::Crawl(args) => tarn::cli::crawl(&args).await,
        Command::Key(args) => tarn::cli::key(&args),
        Command::Job(args) => tarn::job::job(&args).await,
        Command::Worker(args) => tarn::cli::worker(&args).await,
    }
}
