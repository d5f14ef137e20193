//! portfolio-svc: the three screens of the app (accounts, account detail, holdings) over the
//! daily snapshot that the loader streams in.
//!
//! [`start`] binds, serves health and reflection at once (NOT_SERVING), migrates the database
//! in the background, then reports SERVING; [`Portfolio`] is the running server.

pub mod domain;
pub mod error;
pub mod grpc;
pub mod ingest;
pub mod store;
#[cfg(feature = "testkit")]
pub mod testkit;

use std::{
    collections::HashSet,
    net::SocketAddr,
    sync::{Arc, OnceLock},
    time::Duration,
};

use invest_proto::{
    auth::{JwtSecretArgs, RequireScope, SCOPE_ACCOUNTS_READ, SCOPE_INGEST_WRITE, SecretError},
    portfolio::v1::{
        portfolio_ingest_server::PortfolioIngestServer,
        portfolio_service_server::PortfolioServiceServer,
    },
    server::{
        db::{Database, DatabaseUrl, DbConfig, UrlError},
        grpc::{self as server, GuardConfig, GuardLayer, Lifecycle, RunningServer, ShutdownConfig},
        telemetry::{self, LogFormat},
    },
    time,
};
use tokio::{net::TcpListener, sync::watch};

use crate::{
    grpc::{AppState, IngestApi, PortfolioApi},
    ingest::IngestConfig,
};

/// Configuration: every flag has its environment variable (the contract's operating
/// interface).
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "portfolio-svc",
    version,
    about = "gRPC server of the portfolio screens over daily snapshots"
)]
pub struct Config {
    /// Address of the gRPC listener (port 0 picks a free port).
    #[arg(long, env = "PORTFOLIO_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    /// `sqlite://PATH`, a plain path, or `postgres://…`.
    #[arg(
        long,
        env = "PORTFOLIO_DATABASE_URL",
        default_value = "sqlite://portfolio.db"
    )]
    pub database_url: String,
    /// Address of the Prometheus endpoint (`/metrics`).
    #[arg(
        long,
        env = "PORTFOLIO_METRICS_LISTEN",
        default_value = "127.0.0.1:9451"
    )]
    pub metrics_listen: SocketAddr,
    /// The shared JWT secret.
    #[command(flatten)]
    pub jwt: JwtSecretArgs,
    /// Database connections, which is also how many database tasks run at once.
    #[arg(long, env = "PORTFOLIO_DB_POOL_SIZE", default_value_t = 8)]
    pub db_pool_size: u32,
    /// How long a call waits for a database connection before it is answered UNAVAILABLE.
    #[arg(long, env = "PORTFOLIO_DB_ACQUIRE_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub db_acquire_timeout: Duration,
    /// Past snapshots kept besides the current one (listings that started on them keep
    /// paging consistently).
    #[arg(long, env = "PORTFOLIO_KEEP_SNAPSHOTS", default_value_t = 2)]
    pub keep_snapshots: u32,
    /// A loading snapshot without a new batch for this long is considered abandoned.
    #[arg(long, env = "PORTFOLIO_STALE_LOAD_AFTER", default_value = "15m", value_parser = humantime::parse_duration)]
    pub stale_load_after: Duration,
    /// Deadline of a unary call (LoadSnapshot streams are exempt).
    #[arg(long, env = "PORTFOLIO_REQUEST_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,
    /// Calls served at once; more are answered UNAVAILABLE at once.
    #[arg(long, env = "PORTFOLIO_MAX_IN_FLIGHT", default_value_t = 1024)]
    pub max_in_flight: usize,
    /// After SIGTERM, how long to keep serving while reporting NOT_SERVING.
    #[arg(long, env = "PORTFOLIO_DRAIN_DELAY", default_value = "0s", value_parser = humantime::parse_duration)]
    pub drain_delay: Duration,
    /// How long in-flight calls may take to finish after the listener closes.
    #[arg(long, env = "PORTFOLIO_SHUTDOWN_GRACE", default_value = "20s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
    /// Log format.
    #[arg(long, env = "PORTFOLIO_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Stop on SIGTERM/SIGINT (the binary sets it; tests call `shutdown` instead).
    #[arg(skip)]
    pub handle_signals: bool,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// No usable JWT secret.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// A database URL we cannot use.
    #[error(transparent)]
    DatabaseUrl(#[from] UrlError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Reflection could not be built (a bug in the descriptors).
    #[error("cannot build reflection: {0}")]
    Reflection(#[from] tonic_reflection_error::Error),
}

mod tonic_reflection_error {
    /// Re-exported so that callers need not depend on tonic-reflection.
    pub type Error = invest_proto::server::grpc::ReflectionError;
}

/// A running portfolio-svc.
#[derive(Debug)]
pub struct Portfolio {
    /// The bound gRPC address.
    pub addr: SocketAddr,
    /// The bound metrics address.
    pub metrics_addr: SocketAddr,
    server: RunningServer,
    ready: watch::Receiver<bool>,
}

impl Portfolio {
    /// Resolves once migrations are done and the server reports SERVING.
    pub async fn ready(&self) {
        let mut ready = self.ready.clone();
        let _ = ready.wait_for(|r| *r).await;
    }

    /// Graceful shutdown, as on SIGTERM.
    pub fn shutdown(&self) {
        self.server.shutdown();
    }

    /// Stops at once without draining (a crash, for tests).
    pub fn abort(&self) {
        self.server.abort();
    }

    /// Waits until the server has stopped.
    pub async fn wait(self) -> Result<(), tonic::transport::Error> {
        self.server.wait().await
    }
}

/// Identifier of this server in metrics and logs.
pub const SERVER_NAME: &str = "portfolio-svc";

/// Largest message accepted on the ingest stream (a batch of accounts).
const MAX_INGEST_MESSAGE: usize = 32 * 1024 * 1024;

/// Binds, starts serving (NOT_SERVING until the database is migrated) and returns.
pub async fn start(config: Config) -> Result<Portfolio, StartError> {
    let keys = Arc::new(config.jwt.load()?);
    let url = DatabaseUrl::parse(&config.database_url)?;

    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
    let metrics_listener = TcpListener::bind(config.metrics_listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.metrics_listen,
            source,
        })?;
    let metrics_addr =
        telemetry::serve_metrics(metrics_listener).map_err(|source| StartError::Bind {
            addr: config.metrics_listen,
            source,
        })?;

    let state = Arc::new(AppState {
        db: OnceLock::new(),
        ingest: IngestConfig {
            flip_lock_key: store::MIGRATIONS.lock_key + 1,
        },
    });
    let (loaded_tx, loaded_rx) = tokio::sync::mpsc::channel(1);
    let infra = server::infrastructure(&[
        <PortfolioServiceServer<PortfolioApi> as tonic::server::NamedService>::NAME,
        <PortfolioIngestServer<IngestApi> as tonic::server::NamedService>::NAME,
    ])?;
    let mut routes = infra.routes;
    routes
        .add_service(PortfolioServiceServer::with_interceptor(
            PortfolioApi::new(state.clone()),
            RequireScope::new(keys.clone(), SCOPE_ACCOUNTS_READ),
        ))
        .add_service(tonic::service::interceptor::InterceptedService::new(
            PortfolioIngestServer::new(IngestApi::new(state.clone(), loaded_tx))
                .max_decoding_message_size(MAX_INGEST_MESSAGE),
            RequireScope::new(keys.clone(), SCOPE_INGEST_WRITE),
        ));
    let guard = GuardLayer::new(GuardConfig {
        server: SERVER_NAME,
        max_in_flight: config.max_in_flight,
        request_timeout: config.request_timeout,
        untimed_methods: HashSet::from(["/invest.portfolio.v1.PortfolioIngest/LoadSnapshot"]),
    });
    let lifecycle = infra.lifecycle;
    lifecycle.set_not_serving().await;
    let running = server::spawn(
        listener,
        routes.routes(),
        guard,
        lifecycle.clone(),
        ShutdownConfig {
            drain_delay: config.drain_delay,
            grace: config.shutdown_grace,
        },
        config.handle_signals,
    )
    .map_err(|source| StartError::Bind {
        addr: config.listen,
        source,
    })?;
    tracing::info!(server = SERVER_NAME, addr = %running.addr, metrics = %metrics_addr, database = %url, "listening on {}", running.addr);

    let (ready_tx, ready_rx) = watch::channel(false);
    let db_config = DbConfig {
        url,
        pool_size: config.db_pool_size,
        acquire_timeout: config.db_acquire_timeout,
    };
    tokio::spawn(open_database(
        db_config,
        state,
        lifecycle,
        ready_tx,
        Janitor {
            keep: config.keep_snapshots,
            stale_after: config.stale_load_after,
            wake: loaded_rx,
        },
    ));
    Ok(Portfolio {
        addr: running.addr,
        metrics_addr,
        server: running,
        ready: ready_rx,
    })
}

/// Opens the database (migrating it), retrying with backoff while it is unreachable, then
/// reports SERVING and starts the janitor.
async fn open_database(
    config: DbConfig,
    state: Arc<AppState>,
    lifecycle: Lifecycle,
    ready: watch::Sender<bool>,
    janitor: Janitor,
) {
    let mut backoff = Duration::from_millis(250);
    let db = loop {
        let attempt = config.clone();
        match tokio::task::spawn_blocking(move || Database::open(&attempt, &store::MIGRATIONS))
            .await
        {
            Ok(Ok(db)) => break db,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "database not ready");
            }
            Err(e) => {
                tracing::error!(error = %e, "database start-up task failed");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    };
    tracing::info!(database = %db.url(), "database migrated; serving");
    let _ = state.db.set(db.clone());
    lifecycle.set_serving().await;
    let _ = ready.send(true);
    janitor.run(db).await;
}

/// Deletes snapshots past retention and abandoned loads, and publishes the snapshot gauges.
struct Janitor {
    keep: u32,
    stale_after: Duration,
    wake: tokio::sync::mpsc::Receiver<()>,
}

impl Janitor {
    async fn run(mut self, db: Database) {
        let mut tick = tokio::time::interval(Duration::from_secs(15));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                woke = self.wake.recv() => if woke.is_none() { return },
            }
            self.publish(&db).await;
            self.prune(&db).await;
        }
    }

    async fn publish(&self, db: &Database) {
        match db
            .run(|c| -> error::Result<_> { Ok(store::read::current_snapshot(c)?) })
            .await
        {
            Ok(Some(current)) => {
                let age = (time::now_micros() - current.as_of) as f64 / 1e6;
                metrics::gauge!("portfolio_snapshot_age_seconds").set(age);
                metrics::gauge!("portfolio_snapshot_accounts").set(current.account_count as f64);
                metrics::gauge!("portfolio_snapshot_holdings").set(current.holding_count as f64);
                metrics::gauge!("portfolio_snapshot_instruments")
                    .set(current.instrument_count as f64);
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "cannot read the current snapshot for metrics"),
        }
    }

    async fn prune(&self, db: &Database) {
        let stale_before =
            time::now_micros() - i64::try_from(self.stale_after.as_micros()).unwrap_or(i64::MAX);
        let keep = self.keep;
        let ids = match db
            .run(move |c| store::ingest::prunable(c, keep, stale_before))
            .await
        {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list snapshots to prune");
                return;
            }
        };
        for id in ids {
            match db.run(move |c| store::ingest::discard(c, id)).await {
                Ok(()) => tracing::info!(snapshot_id = id, "pruned snapshot"),
                Err(e) => tracing::warn!(snapshot_id = id, error = %e, "cannot prune snapshot"),
            }
        }
    }
}

/// Installs logging as configured (the binary calls it; tests use `TEST_LOG`).
pub fn init_tracing(config: &Config) {
    telemetry::init_tracing(config.log_format);
}
