use clap::Parser;
use deposit_svc::{Config, SERVER_NAME, init_tracing, start};
use invest_runtime::launch::serve_until_stopped;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let mut config = Config::parse();
    config.server.handle_signals = true;
    let _tracing = init_tracing(&config);
    serve_until_stopped(SERVER_NAME, start(config)).await
}

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
