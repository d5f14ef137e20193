//! `loadgen`: the load generator of the invest services (see the `loadgen` library).

use std::process::ExitCode;

use clap::Parser;
use loadgen::cli::{Cli, run};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let _tracing = invest_cli::init_tracing(invest_cli::LogFormat::Text, "loadgen");
    run(cli).await.into()
}

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
