use clap::Parser;
use portfolio_svc::{Config, init_tracing, start};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let mut config = Config::parse();
    config.server.handle_signals = true;
    init_tracing(&config);
    let server = match start(config).await {
        Ok(server) => server,
        Err(e) => {
            tracing::error!(error = %e, "portfolio-svc cannot start");
            eprintln!("portfolio-svc: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match server.wait().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "portfolio-svc stopped with an error");
            std::process::ExitCode::FAILURE
        }
    }
}

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
