use std::process::ExitCode;

use clap::Parser;
use loader::cli::{Cli, run};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let _tracing = invest_cli::init_tracing(cli.log_format, "loader");
    run(cli).await.into()
}

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
