//! portfolio-svc: the three screens of the app (accounts, account detail, holdings) over the
//! daily snapshot that the loader streams in.
//!
//! [`start`] binds, serves health and reflection at once (NOT_SERVING), migrates the database
//! in the background, then reports SERVING; [`Portfolio`] is the running server.

pub mod cache;
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
    auth::{SCOPE_ACCOUNTS_READ, SCOPE_INGEST_WRITE, SCOPE_LEDGER_WRITE},
    portfolio::v1::{
        portfolio_ingest_server::PortfolioIngestServer,
        portfolio_ledger_server::PortfolioLedgerServer,
        portfolio_service_server::PortfolioServiceServer,
    },
    time,
};
use invest_runtime::{
    auth::RequireScope,
    db::{Database, DatabaseUrl},
    launch::{Launch, LaunchError, Running, ServerArgs},
    staged, telemetry,
};

use crate::{
    grpc::{AppState, IngestApi, LedgerApi, PortfolioApi},
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
    /// Past snapshots kept besides the current one (listings that started on them keep
    /// paging consistently).
    #[arg(long, env = "PORTFOLIO_KEEP_SNAPSHOTS", default_value_t = 2)]
    pub keep_snapshots: u32,
    /// A loading snapshot without a new batch for this long is considered abandoned.
    #[arg(long, env = "PORTFOLIO_STALE_LOAD_AFTER", default_value = "15m", value_parser = humantime::parse_duration)]
    pub stale_load_after: Duration,
    /// Memory for the current snapshot kept to answer reads without the database, in bytes
    /// (suffixes KiB, MiB, GiB; 0 turns it off). Accounts, holdings and customers' account
    /// lists are kept as they are read, as many as fit (see ARCHITECTURE.md).
    #[arg(long, env = "PORTFOLIO_READ_CACHE_BYTES", default_value = "128MiB", value_parser = parse_bytes)]
    pub read_cache_bytes: u64,
    /// On PostgreSQL, the freshness bound: a replica answers from memory only while it has
    /// proof that it applied every change committed this long ago; otherwise from the
    /// database. A deposit or a new snapshot committed on any replica is seen by every replica
    /// within it.
    #[arg(long, env = "PORTFOLIO_READ_STALENESS", default_value = "1s", value_parser = humantime::parse_duration)]
    pub read_staleness: Duration,
    /// On PostgreSQL, where the connection that listens for changes goes (`LISTEN` needs a
    /// session: give PostgreSQL's own address when `--database-url` is a pooler in
    /// transaction mode). Default: `--database-url`.
    #[arg(long, env = "PORTFOLIO_LISTEN_DATABASE_URL")]
    pub listen_database_url: Option<String>,
    /// Settings shared with deposit-svc.
    #[command(flatten)]
    pub server: ServerArgs,
}

/// `4096`, `64KiB`, `128MiB`, `2GiB`.
fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?}: expected bytes such as 4096, 64KiB, 128MiB or 2GiB"))?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        other => return Err(format!("{other:?}: unknown unit; use KiB, MiB or GiB")),
    };
    number
        .checked_mul(scale)
        .ok_or_else(|| format!("{text:?}: too large"))
}

/// Why the server could not start.
pub type StartError = LaunchError;

/// A running portfolio-svc.
pub type Portfolio = Running;

/// Identifier of this server in metrics and logs.
pub const SERVER_NAME: &str = "portfolio-svc";

/// Largest message accepted on the ingest stream (a batch of accounts).
const MAX_INGEST_MESSAGE: usize = 32 * 1024 * 1024;

/// Binds, starts serving (NOT_SERVING until the database is migrated) and returns.
pub async fn start(config: Config) -> Result<Portfolio, StartError> {
    let launch = Launch {
        name: SERVER_NAME,
        listen: config.listen,
        metrics_listen: config.metrics_listen,
        database_url: &config.database_url,
        args: &config.server,
        services: &[
            <PortfolioServiceServer<PortfolioApi> as tonic::server::NamedService>::NAME,
            <PortfolioIngestServer<IngestApi> as tonic::server::NamedService>::NAME,
            <PortfolioLedgerServer<LedgerApi> as tonic::server::NamedService>::NAME,
        ],
        streaming_methods: HashSet::from(["/invest.portfolio.v1.PortfolioIngest/LoadSnapshot"]),
        migrations: store::MIGRATIONS,
    };
    let keys = launch.keys()?;
    let verified = launch.verified_tokens();
    let shared = matches!(
        DatabaseUrl::parse(&config.database_url),
        Ok(DatabaseUrl::Postgres(_))
    );
    let read_cache = Arc::new(cache::ReadCache::new(
        config.read_cache_bytes,
        shared,
        config.read_staleness,
    ));
    let db = Arc::new(OnceLock::new());
    let state = Arc::new(AppState {
        db: db.clone(),
        ingest: IngestConfig {
            flip_lock_key: store::MIGRATIONS.lock_key + 1,
        },
        tokens: domain::PageTokens::new(&keys),
        cache: read_cache.clone(),
    });
    let (loaded_tx, loaded_rx) = tokio::sync::mpsc::channel(1);
    let janitor = Janitor {
        keep: config.keep_snapshots,
        stale_after: config.stale_load_after,
        wake: loaded_rx,
        cache: read_cache,
        listen_url: config.listen_database_url.clone(),
    };
    launch
        .start(
            db,
            (keys.clone(), verified.clone()),
            |routes| {
                routes
                    .add_service(PortfolioServiceServer::with_interceptor(
                        PortfolioApi::new(state.clone()),
                        RequireScope::new(keys.clone(), verified.clone(), SCOPE_ACCOUNTS_READ),
                    ))
                    .add_service(tonic::service::interceptor::InterceptedService::new(
                        PortfolioIngestServer::new(IngestApi::new(state.clone(), loaded_tx))
                            .max_decoding_message_size(MAX_INGEST_MESSAGE),
                        RequireScope::new(keys.clone(), verified.clone(), SCOPE_INGEST_WRITE),
                    ))
                    .add_service(PortfolioLedgerServer::with_interceptor(
                        LedgerApi::new(state.clone()),
                        RequireScope::new(keys.clone(), verified.clone(), SCOPE_LEDGER_WRITE),
                    ));
            },
            Box::new(move |db| Box::pin(janitor.run(db))),
        )
        .await
}
/// Deletes snapshots past retention and abandoned loads, and publishes the snapshot gauges.
struct Janitor {
    keep: u32,
    stale_after: Duration,
    wake: tokio::sync::mpsc::Receiver<()>,
    cache: Arc<cache::ReadCache>,
    listen_url: Option<String>,
}

impl Janitor {
    async fn run(mut self, db: Database) {
        // On PostgreSQL the listener keeps the read cache fresh (and serves it only while it
        // can prove it); on SQLite this process is the only writer and refreshes it itself.
        let listened = match db.url() {
            DatabaseUrl::Postgres(url) if self.cache.budget() > 0 => {
                let url = self.listen_url.as_deref().unwrap_or(url);
                cache::spawn_listener(&self.cache, url, store::read::current_with_cash);
                true
            }
            _ => false,
        };
        // At least as often as a load may be declared abandoned.
        let period = self
            .stale_after
            .clamp(Duration::from_millis(100), Duration::from_secs(15));
        let mut tick = tokio::time::interval(period);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                woke = self.wake.recv() => if woke.is_none() { return },
            }
            if !listened {
                grpc::refresh_cache(&self.cache, &db).await;
            }
            self.publish(&db).await;
            self.prune(&db).await;
        }
    }

    async fn publish(&self, db: &Database) {
        match db
            .run(|c| -> error::Result<_> { Ok(store::read::current(c)?) })
            .await
        {
            Ok(Some(current)) => {
                let age = (time::now_micros() - current.as_of) as f64 / 1e6;
                metrics::gauge!("portfolio_snapshot_age_seconds").set(age);
                metrics::gauge!("portfolio_snapshot_accounts").set(current.account_count as f64);
                metrics::gauge!("portfolio_snapshot_holdings").set(current.holding_count as f64);
                metrics::gauge!("portfolio_snapshot_instruments")
                    .set(current.instrument_count as f64);
                metrics::gauge!("portfolio_read_cache_bytes").set(self.cache.weight() as f64);
                metrics::gauge!("portfolio_read_cache_budget_bytes")
                    .set(self.cache.budget() as f64);
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "cannot read the current snapshot for metrics"),
        }
        match db
            .run(|c| -> error::Result<i64> { Ok(store::holds::open_count(c)?) })
            .await
        {
            Ok(n) => metrics::gauge!("portfolio_holds_open").set(n as f64),
            Err(e) => tracing::warn!(error = %e, "cannot count open holds"),
        }
    }

    async fn prune(&self, db: &Database) {
        let stale_before =
            time::now_micros() - i64::try_from(self.stale_after.as_micros()).unwrap_or(i64::MAX);
        staged::prune(db, &store::SNAPSHOTS, self.keep, stale_before).await;
    }
}

/// Installs logging and, when a collector is configured, traces (the binary calls it and
/// keeps the guard; tests use `TEST_LOG`).
pub fn init_tracing(config: &Config) -> telemetry::TracingGuard {
    telemetry::init_tracing(config.server.log_format, SERVER_NAME)
}
